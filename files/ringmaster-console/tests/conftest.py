import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent
# The console imports the handler package's CURVE key files and ZAP gate.
sys.path[:0] = [str(PACKAGE / "src"), str(PACKAGE.parent / "ringmaster-handler" / "src"), str(HERE)]
# Last: the handler's test harness (a real Mongrel2 and dispatcher) for test_requests.py.
sys.path.append(str(PACKAGE.parent / "ringmaster-handler" / "tests"))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def stack():
    """One real circusd and agent for the integration and browser tests."""
    from stack import Stack

    s = Stack()
    try:
        s.start_circusd()
        s.start_agent()
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def front(tmp_path_factory):
    """A real Mongrel2, dispatcher (named shop, with its /metrics page) and two handlers."""
    import shutil

    from test_dispatcher import Stack as Front

    from stack import free_port

    if not (shutil.which("mongrel2") and shutil.which("m2sh")):
        pytest.fail("Mongrel2 is needed: bash tools/bootstrap.sh installs it")
    port = free_port()
    with Front(
        tmp_path_factory.mktemp("front"),
        workers=2,
        dispatcher_args=("--name", "shop", "--metrics-port", str(port)),
    ) as stack:
        yield stack, f"http://127.0.0.1:{port}/metrics"
        # Mongrel2 takes its harness's full 8 s to stop on SIGTERM; the test is over.
        for worker in stack.workers:
            worker.stop()
        stack.dispatcher.stop()
        stack.m2.proc.kill()


@pytest.fixture(scope="module")
def front_agent(stack, front):
    """A second agent, on the 'front', that also reads the dispatcher's page."""
    import os
    import subprocess

    from stack import PYTHONPATH, free_port, wait_for

    _, url = front
    port = free_port()
    config = stack.dir / f"agent-front-{port}.toml"
    text = stack.agent_config.read_text().replace(str(stack.port), str(port))
    # The same circusd as the worker's agent: scaling is left to that one.
    text = text.replace('apps = ["shop"]', "apps = []")
    config.write_text(f'{text}\n[metrics]\nshop = "{url}"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "ringmaster_console.agent_cli", str(config)],
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        stderr=stack.log(f"agent-front-{port}.log"),
    )
    try:
        wait_for(
            lambda: "listening" in (stack.dir / f"agent-front-{port}.log").read_text(), 10, "listen"
        )
        yield port
    finally:
        proc.terminate()
        proc.wait(5)
