"""A real circusd with two watchers, and a real agent over real CURVE, in a scratch directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq
from ringmaster_handler.curve import generate, load_keypair

from ringmaster_console.circusd import CircusClient, CircusError
from ringmaster_console.config import Host
from ringmaster_console.fleet import FleetClient

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent
PYTHONPATH = os.pathsep.join(
    [str(PACKAGE / "src"), str(PACKAGE.parent / "ringmaster-handler" / "src")]
)

CIRCUS_INI = """[circus]
endpoint = ipc://{dir}/control.sock
pubsub_endpoint = ipc://{dir}/pubsub.sock
check_delay = 1
include_dir = {dir}/conf.d
"""

# As the wsgi_app role writes it (the lines that matter here): root-only, numprocesses inside.
SHOP_INI = """# Ansible managed
[watcher:shop]
cmd = {python} {burner}
numprocesses = 2
graceful_timeout = 2
copy_env = True
"""

OTHER_INI = """[watcher:other]
cmd = sleep 3600
numprocesses = 1
graceful_timeout = 1
"""

AGENT_TOML = """listen = "tcp://127.0.0.1:{port}"
secret_key = "{dir}/keys/agent.key_secret"
authorized_dir = "{dir}/authorized"

[circus]
endpoint = "ipc://{dir}/control.sock"
pubsub_endpoint = "ipc://{dir}/pubsub.sock"
include_dir = "{dir}/conf.d"
timeout = 1
action_timeout = 30

[scale]
apps = ["shop"]
max_processes = 8
fact_file = "{dir}/facts.d/ringmaster_scale.fact"
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Stack:
    def __init__(self) -> None:
        # ipc paths must be short (108 bytes): not under pytest's deep tmp_path.
        self.dir = Path(tempfile.mkdtemp(prefix="rmc-", dir="/tmp"))
        self.port = free_port()
        self.circusd: subprocess.Popen | None = None
        self.agent: subprocess.Popen | None = None
        self.ctx = zmq.Context()
        self.fds: list[int] = []
        for sub in ("conf.d", "keys", "authorized", "console", "facts.d"):
            (self.dir / sub).mkdir()
        (self.dir / "circus.ini").write_text(CIRCUS_INI.format(dir=self.dir))
        shop = self.dir / "conf.d" / "shop.ini"
        shop.write_text(SHOP_INI.format(python=sys.executable, burner=HERE / "burner.py"))
        shop.chmod(0o600)
        (self.dir / "conf.d" / "other.ini").write_text(OTHER_INI)
        generate(str(self.dir / "keys"), "agent")
        generate(str(self.dir / "console"), "console")
        generate(str(self.dir / "console"), "stranger")
        shutil.copy(self.dir / "console" / "console.key", self.dir / "authorized" / "console.key")
        self.agent_config = self.dir / "agent.toml"
        self.agent_config.write_text(AGENT_TOML.format(dir=self.dir, port=self.port))
        self.agent_public = load_keypair(
            str(self.dir / "keys" / "agent.key_secret")
        ).public.decode()
        self.circus = CircusClient(self.ctx, f"ipc://{self.dir}/control.sock", 5)

    def log(self, name: str) -> int:
        """A file descriptor for a child's output (the child keeps its own copy)."""
        fd = os.open(self.dir / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.fds.append(fd)
        return fd

    # -- circusd ---------------------------------------------------------------------------
    def start_circusd(self) -> None:
        self.circusd = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from circus.circusd import main; main()",
                str(self.dir / "circus.ini"),
            ],
            stdout=self.log("circusd.log"),
            stderr=subprocess.STDOUT,
        )
        wait_for(
            lambda: len(self.pids("shop")) == self.numprocesses("shop"), 20, "circusd's watchers"
        )

    def stop_circusd(self) -> None:
        if self.circusd and self.circusd.poll() is None:
            self.circusd.send_signal(signal.SIGTERM)
            try:
                self.circusd.wait(20)
            except subprocess.TimeoutExpired:
                self.circusd.kill()
                self.circusd.wait()
        self.circus.close()

    def pids(self, watcher: str) -> list[int]:
        try:
            return sorted(self.circus.call("list", name=watcher).get("pids", []))
        except CircusError:
            return []

    def numprocesses(self, watcher: str) -> int:
        try:
            return int(
                self.circus.call("get", name=watcher, keys=["numprocesses"])["options"][
                    "numprocesses"
                ]
            )
        except CircusError:
            return -1

    # -- the agent -------------------------------------------------------------------------
    def start_agent(self) -> None:
        env = {**os.environ, "PYTHONPATH": PYTHONPATH}
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "ringmaster_console.agent_cli", str(self.agent_config)],
            env=env,
            stdout=self.log("agent.log"),
            stderr=subprocess.STDOUT,
        )
        client = self.fleet()
        try:
            wait_for(lambda: client.status()[0]["up"], 20, "the agent to answer", every=0.2)
        finally:
            client.close()

    def stop_agent(self) -> None:
        """SIGTERM, as systemd stops it; it must be gone within 5 s."""
        if self.agent and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(5)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
                raise AssertionError("the agent did not stop on SIGTERM within 5 s") from None

    def agent_log(self) -> str:
        return (self.dir / "agent.log").read_text()

    def host(self, name: str = "local", port: int | None = None, key: str | None = None) -> Host:
        return Host(name, f"tcp://127.0.0.1:{port or self.port}", key or self.agent_public)

    def fleet(self, hosts=None, keyname: str = "console", timeout: float = 2.0) -> FleetClient:
        keypair = load_keypair(str(self.dir / "console" / f"{keyname}.key_secret"))
        return FleetClient(tuple(hosts or [self.host()]), keypair, timeout, ctx=self.ctx)

    def close(self) -> None:
        try:
            self.stop_agent()
        finally:
            self.stop_circusd()
            self.ctx.destroy(linger=0)
            for fd in self.fds:
                os.close(fd)
            shutil.rmtree(self.dir, ignore_errors=True)


PASSWORD = "correct horse battery staple"


def console_toml(
    stack: Stack, hosts: list[Host], https: bool = True, max_processes: int = 8
) -> Path:
    """The console's configuration for ``hosts``, written 0600 as a role would."""
    from ringmaster_console.passwords import make_hash

    lines = [
        f'secret_key = "{os.urandom(24).hex()}"',
        f'password_hash = "{make_hash(PASSWORD)}"',
        f'client_secret_key = "{stack.dir}/console/console.key_secret"',
        f"https = {'true' if https else 'false'}",
        f"max_processes = {max_processes}",
        "timeout = 1.5",
    ]
    for host in hosts:
        lines += [
            "",
            "[[hosts]]",
            f'name = "{host.name}"',
            f'endpoint = "{host.endpoint}"',
            f'public_key = "{host.public_key}"',
        ]
    path = stack.dir / f"console-{len(list(stack.dir.glob('console-*.toml')))}.toml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


class Paced:
    """GETs through Mongrel2 at a steady, light rate (``rate`` a second, one keep-alive
    connection): traffic for the request numbers, no load on a shared machine."""

    def __init__(self, port: int, rate: float = 50.0, path: str = "/") -> None:
        import threading

        self.port, self.every, self.path = port, 1.0 / rate, path
        self.sent = self.ok = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self) -> Paced:
        self.thread.start()
        return self

    def run(self) -> None:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                conn.request("GET", self.path)
                response = conn.getresponse()
                response.read()
                self.ok += response.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            self.sent += 1
            self.stop_event.wait(max(0.0, self.every - (time.monotonic() - started)))
        conn.close()

    def stop(self) -> Paced:
        self.stop_event.set()
        self.thread.join(10)
        return self
