"""The apps' request numbers on the console: a real Mongrel2, a real dispatcher with its
/metrics page and real handlers (the handler package's test harness), read by a real agent
over CURVE, rated by the console's JSON feed."""

import os
import shutil
import subprocess
import sys
import time

import pytest
from loadclient import Load
from test_dispatcher import Stack as Front

from ringmaster_console.web import app_from_file
from stack import PASSWORD, PYTHONPATH, console_toml, free_port, wait_for

if not (shutil.which("mongrel2") and shutil.which("m2sh")):
    pytest.fail("Mongrel2 is needed: bash tools/bootstrap.sh installs it")

BASE = "https://console.test"


@pytest.fixture
def front(tmp_path):
    port = free_port()
    with Front(
        tmp_path, workers=2, dispatcher_args=("--name", "shop", "--metrics-port", str(port))
    ) as stack:
        yield stack, f"http://127.0.0.1:{port}/metrics"


@pytest.fixture
def agent(stack, front):
    """A second agent, on the 'front', that also reads the dispatcher's page."""
    _, url = front
    port = free_port()
    config = stack.dir / "agent-front.toml"
    text = stack.agent_config.read_text().replace(str(stack.port), str(port))
    config.write_text(f'{text}\n[metrics]\nshop = "{url}"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "ringmaster_console.agent_cli", str(config)],
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        stderr=stack.log("agent-front.log"),
    )
    try:
        wait_for(lambda: "listening" in (stack.dir / "agent-front.log").read_text(), 10, "listen")
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def test_request_numbers_on_the_console(stack, front, agent):
    m2, _ = front
    config = console_toml(stack, [stack.host("front", port=agent)])
    app = app_from_file(str(config))
    client = app.test_client()
    page = client.get("/login", base_url=BASE).get_data(as_text=True)
    token = page.split('name="csrf-token" content="')[1].split('"')[0]
    client.post(
        "/login",
        data={"password": PASSWORD, "csrf_token": token},
        base_url=BASE,
        headers={"Referer": f"{BASE}/login"},
    )

    def shop():
        host = client.get("/api/status", base_url=BASE).get_json()["hosts"][0]
        assert host["up"], host
        return host["apps"]["shop"]

    first = shop()
    assert first["per_second"] is None  # nothing to rate against yet
    # The page is as of the recorder's last batch: a second old at most when idle.
    wait_for(lambda: shop()["handlers_connected"] == 2, 5, "both handlers on the page")
    assert shop()["queue_depth"] == 0
    load = Load(m2.m2.port, clients=4, duration=3.0, timeout=5).start()
    time.sleep(1.0)
    shop()
    time.sleep(1.0)
    during = shop()
    result = load.join()
    assert result.ok > 50
    assert during["per_second"]["2xx"] > 10, during
    assert during["per_second"]["5xx"] == 0
    assert during["p50_ms"] is not None and during["p50_ms"] <= during["p99_ms"]
    assert m2.get("/status?code=503")[0] == 503
    time.sleep(0.3)  # the recorder's page follows within 50 ms
    after = shop()
    assert after["totals"]["503"] == 1
    assert after["requests"] == result.sent + 1
    app.extensions["ringmaster_fleet"].close()
