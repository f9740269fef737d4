"""Start a real Mongrel2 and real handler processes on loopback for integration tests."""

import contextlib
import http.client
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
TESTS = Path(__file__).resolve().parent
PORT_RANGE = (20000, 29999)
_used_ports: set[int] = set()


def port_range() -> tuple[int, int]:
    """PORT_RANGE, or this pytest-xdist worker's share of it: two workers never pick the same
    port between one's check and its server's bind."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return PORT_RANGE
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    span = (PORT_RANGE[1] - PORT_RANGE[0] + 1) // count
    low = PORT_RANGE[0] + int(worker[2:]) * span
    return low, low + span - 1


def free_port() -> int:
    """A currently free loopback TCP port in the range this project may use."""
    low, high = port_range()
    for _ in range(200):
        port = random.randint(low, high)
        if port in _used_ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _used_ports.add(port)
        return port
    raise RuntimeError("no free port found")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


class Mongrel2:
    """One mongrel2 server in its own directory (its chroot when we are root)."""

    def __init__(
        self,
        root: Path,
        routes: dict[str, dict],
        settings: dict | None = None,
        use_ssl: bool = False,
    ):
        self.root = root
        self.use_ssl = use_ssl
        self.port = free_port()
        self.uuid = str(uuid.uuid4())
        self.routes = routes
        self.settings = {
            "upload.temp_store": "uploads/upload.XXXXXX",
            "limits.content_length": 20000,
            "server.daemonize": 0,
            **(settings or {}),
        }
        self.proc: subprocess.Popen | None = None

    def config_text(self) -> str:
        routes = []
        for path, h in self.routes.items():
            if "dir" in h:
                # A static directory, relative to the chroot (here: the working directory).
                routes.append(
                    f"'{path}': Dir(base='{h['dir']}', index_file='index.html', "
                    f"default_ctype='application/octet-stream')"
                )
                continue
            extra = f", protocol='{h['protocol']}'" if h.get("protocol") else ""
            routes.append(
                f"'{path}': Handler(send_spec='{h['send']}', send_ident='{h['ident']}', "
                f"recv_spec='{h['recv']}', recv_ident='{h['ident']}'{extra})"
            )
        settings = ", ".join(f'"{k}": {v!r}' for k, v in self.settings.items())
        settings = settings.replace("'", '"')
        return f"""
main = Server(
    uuid="{self.uuid}",
    access_log="/logs/access.log",
    error_log="/logs/error.log",
    chroot="{self.root}",
    default_host="localhost",
    name="main",
    pid_file="/run/mongrel2.pid",
    port={self.port},
    bind_addr="127.0.0.1",
    use_ssl={int(self.use_ssl)},
    hosts=[Host(name="localhost", routes={{ {", ".join(routes)} }})]
)
settings = {{ {settings} }}
servers = [main]
"""

    def start(self) -> "Mongrel2":
        for sub in ("logs", "run", "uploads"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "mongrel2.conf").write_text(self.config_text())
        env = {**os.environ, "LOGNAME": os.environ.get("LOGNAME", "ringmaster-tests")}
        subprocess.run(
            ["m2sh", "load", "-config", "mongrel2.conf", "-db", "config.sqlite"],
            cwd=self.root,
            env=env,
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.log = open(self.root / "mongrel2.out", "wb")  # noqa: SIM115
        # Not root: mongrel2 cannot chroot and runs in "test mode" from its working directory;
        # the relative upload.temp_store keeps the spooled paths the same either way.
        self.proc = subprocess.Popen(
            ["mongrel2", "config.sqlite", self.uuid],
            cwd=self.root,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._listening, 10, "mongrel2 to listen")
        return self

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"mongrel2 exited: {(self.root / 'mongrel2.out').read_text()}")
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 8)
            self.log.close()

    def connection(self, timeout: float = 10) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)


def handler_route(protocol: str | None = None) -> dict:
    return {
        "send": f"tcp://127.0.0.1:{free_port()}",
        "recv": f"tcp://127.0.0.1:{free_port()}",
        "ident": str(uuid.uuid4()),
        "protocol": protocol,
    }


class Handler:
    """A ringmaster-wsgi subprocess."""

    def __init__(self, workdir: Path, app: str, send: str, recv: str, *args: str, env=None):
        self.workdir = workdir
        self.argv = [
            sys.executable,
            "-m",
            "ringmaster_handler",
            "--log-level",
            "debug" if os.environ.get("RINGMASTER_TEST_DEBUG") else "info",
            *args,
            app,
            send,
            recv,
        ]
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)]),
            **(env or {}),
        }
        self.stderr_path = workdir / f"handler-{uuid.uuid4().hex[:8]}.err"
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> "Handler":
        self.stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv, cwd=self.workdir, env=self.env, stdout=subprocess.DEVNULL, stderr=self.stderr
        )
        if wait:
            wait_for(self._serving, 15, "the handler to serve")
        return self

    def _serving(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"handler exited {self.proc.returncode}: {self.log_text()}")
        return " serving " in self.log_text()

    def log_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> int | None:
        rc = None
        if self.proc is not None:
            rc = stop_process(self.proc, 8)
            self.stderr.close()
        return rc


@contextlib.contextmanager
def running(*things):
    try:
        yield things
    finally:
        for thing in reversed(things):
            with contextlib.suppress(Exception):
                thing.stop()
