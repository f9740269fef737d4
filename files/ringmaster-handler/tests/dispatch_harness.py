"""ringmaster-dispatcher and dispatcher-mode handler subprocesses for integration tests."""

import contextlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

from harness import SRC, TESTS, Handler, Mongrel2, free_port, handler_route, stop_process, wait_for


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)])}


def _level() -> str:
    return "debug" if os.environ.get("RINGMASTER_TEST_DEBUG") else "info"


class DispatcherProc:
    """A ringmaster-dispatcher subprocess for one Mongrel2 route."""

    def __init__(self, workdir: Path, route: dict, bind: str, *args: str):
        self.workdir = workdir
        self.bind = bind
        self.argv = [
            sys.executable,
            "-m",
            "ringmaster_handler.dispatcher_cli",
            "--log-level",
            _level(),
            *args,
            route["send"],
            route["recv"],
            bind,
        ]
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> "DispatcherProc":
        self.stderr_path = self.workdir / f"dispatcher-{uuid.uuid4().hex[:8]}.err"
        self.stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv, cwd=self.workdir, env=_env(), stdout=subprocess.DEVNULL, stderr=self.stderr
        )
        if wait:
            wait_for(self._ready, 15, "the dispatcher to start")
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"dispatcher exited {self.proc.returncode}: {self.log_text()}")
        return "dispatching " in self.log_text()

    def log_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def connected(self) -> int:
        """Handlers the dispatcher currently knows, from its log."""
        text = self.log_text()
        return text.count(" joined (") - text.count(" left (")

    def wait_connected(self, n: int, timeout: float = 15) -> None:
        wait_for(lambda: self.connected() == n, timeout, f"{n} handlers to join")

    def stop(self, timeout: float = 15) -> int | None:
        rc = None
        if self.proc is not None:
            rc = stop_process(self.proc, timeout)
            self.stderr.close()
            self.proc = None
        return rc


class Worker(Handler):
    """ringmaster-wsgi --dispatcher."""

    def __init__(self, workdir: Path, app: str, dispatchers: str, *args: str):
        super().__init__(workdir, app, dispatchers, "", *args)
        self.argv = [
            sys.executable,
            "-m",
            "ringmaster_handler",
            "--log-level",
            _level(),
            "--dispatcher",
            *args,
            app,
            dispatchers,
        ]

    def _serving(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"handler exited {self.proc.returncode}: {self.log_text()}")
        return "connected to dispatcher" in self.log_text()


class Peer:
    """A test handler: a real DEALER speaking the credit protocol by hand (CURVE optional)."""

    def __init__(self, bind: str, version: int = 2, curve: tuple | None = None, name="peer"):
        import zmq

        from ringmaster_handler.credit import hello_frame

        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 10_000)
        if curve is not None:
            public, secret, server = curve
            self.sock.curve_publickey, self.sock.curve_secretkey = public, secret
            self.sock.curve_serverkey = server
        self.sock.connect(bind)
        self.sock.send(
            hello_frame({"pid": os.getpid(), "host": name, "app": "tests:peer", "v": version})
        )

    def recv(self, timeout: float = 10.0) -> bytes:
        self.sock.setsockopt(__import__("zmq").RCVTIMEO, int(timeout * 1000))
        return self.sock.recv()

    def poll(self, timeout: float) -> bool:
        return bool(self.sock.poll(timeout * 1000))

    def send(self, frame: bytes) -> None:
        self.sock.send(frame)

    def close(self) -> None:
        self.sock.close(0)

    stop = close


def m2_sleeping_connections(root: Path) -> int:
    """Connection tasks asleep in a Mongrel2 (test mode, chroot = cwd = root), from its
    control port: a streamed upload waiting for credits is one ("HTTP", state "sleep")."""
    import zmq

    from ringmaster_handler.tnetstrings import parse

    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    try:
        sock.connect(f"ipc://{root}/run/control")
        sock.send(b"28:6:status,15:4:what,5:tasks,}]")
        value, _ = parse(sock.recv())
        return sum(1 for row in value[b"rows"] if row[2] == b"HTTP" and row[3] == b"sleep")
    finally:
        sock.close(0)


@contextlib.contextmanager
def front(root: Path, *dispatcher_args: str, settings: dict | None = None):
    """A real Mongrel2 and a real dispatcher in front of it: (mongrel2, dispatcher, bind)."""
    route = handler_route()
    m2 = Mongrel2(root, {"/": route}, settings)
    bind = f"tcp://127.0.0.1:{free_port()}"
    disp = DispatcherProc(root, route, bind, *dispatcher_args)
    try:
        m2.start()
        disp.start()
        yield m2, disp, bind
    finally:
        disp.stop()
        m2.stop()
