#!/usr/bin/env python3
"""Benchmark: Mongrel2 + ringmaster-wsgi against Gunicorn (sync, gthread) and uWSGI.

One command, stdlib only (run it with Debian's python3):

    python3 bench/run.py [--procs 1] [--rounds 3] [--duration 5] [--connections 16] [--ipc]

It builds a throwaway venv under /tmp from bench/requirements.txt plus the handler package
(cached by content hash), starts every server on free loopback ports in 20000-29999 with the
same number of Python processes, then runs wrk in interleaved rounds (keep-alive clients and
`Connection: close` clients), a loss-counting client of our own (per-request timeout: wrk does
not count hung requests), and prints req/s, p50/p99 latency, errors, the ratio to Gunicorn
sync, and RSS per process. Everything it starts is stopped at the end; nothing is written
outside /tmp.
"""

import argparse
import contextlib
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PACKAGE = REPO / "files" / "ringmaster-handler"
PORTS = (20000, 29999)
MODES = ("keep-alive", "close")


# -- environment ---------------------------------------------------------------------------


def venv_path() -> Path:
    digest = hashlib.sha256((BENCH / "requirements.txt").read_bytes()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"ringmaster-bench-venv-{digest}"


# Debian packages the benchmarks run, by the command each provides.
DEBIAN_TOOLS = {"wrk": "wrk", "mongrel2": "mongrel2-core", "m2sh": "mongrel2-core"}


def ensure_tools() -> bool:
    """Install the Debian packages behind missing commands (as root), or say how to."""
    missing = sorted({pkg for tool, pkg in DEBIAN_TOOLS.items() if not shutil.which(tool)})
    if not missing:
        return True
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(f"bench: needs the Debian packages {' '.join(missing)}: "
              f"apt-get install {' '.join(missing)}", file=sys.stderr)  # fmt: skip
        return False
    print(f"bench: installing {' '.join(missing)}", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    # nginx's package would start it on port 80, a port that is not ours: the
    # benchmarks run their own servers, so no package may start or enable one.
    with services_held():
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    units = [Path(line).name for line in subprocess.run(
        ["dpkg", "-L", *missing], capture_output=True, text=True, check=True).stdout.splitlines()
        if re.fullmatch(r"/(usr/)?lib/systemd/system/[^/]+\.service", line)]  # fmt: skip
    if units:
        subprocess.run(["systemctl", "disable", "--quiet", *units], check=False)
    return all(shutil.which(tool) for tool in DEBIAN_TOOLS)


@contextlib.contextmanager
def services_held():
    """Debian's policy-rc.d: exit 101 forbids maintainer scripts to start services."""
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\n# ringmaster bench: no service starts while packages install\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink()


def ensure_venv() -> Path:
    """The servers' venv is cached by requirements; the handler is reinstalled every run."""
    venv = venv_path()
    pip = [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        print(f"building {venv} (uWSGI compiles from source: ~2 min)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([*pip, "-r", str(BENCH / "requirements.txt")], check=True, timeout=900)
        (venv / ".complete").write_text("ok\n")
    # Build from a copy so no build/ or egg-info lands in the source tree.
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "pkg"
        ignore = shutil.ignore_patterns("tests", "build", "*.egg-info", "__pycache__")
        shutil.copytree(PACKAGE, copy, ignore=ignore)
        subprocess.run(
            [*pip, "--no-deps", "--force-reinstall", str(copy)],
            check=True,
            timeout=300,
        )
    return venv


_taken: set[int] = set()


def free_port() -> int:
    for _ in range(500):
        port = random.randint(*PORTS)
        if port in _taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port
    raise RuntimeError("no free port")


# Over https the clients name the host as a browser does (SNI "localhost", Mongrel2 serves the
# file the role writes for that name); the certificate is a throwaway one, so none verifies it.
TLS_HOST = "localhost"


def client_tls() -> ssl.SSLContext:
    """A client context like wrk's: no verification, no session reuse (every handshake is full)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def answers(port: int, tls: bool = False) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
        s = client_tls().wrap_socket(raw, server_hostname=TLS_HOST) if tls else raw
        with s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")


def wait_http(port: int, timeout: float = 30, tls: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if answers(port, tls):
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers on port {port}{' (https)' if tls else ''}")


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# -- servers -------------------------------------------------------------------------------


class Server:
    name = ""
    app = "hello:app"  # the WSGI app every server serves (bench/whole.py: "apps:app")

    def __init__(self, venv: Path, procs: int, workdir: Path):
        self.venv, self.procs, self.workdir = venv, procs, workdir
        self.port = free_port()
        self.procs_started: list[subprocess.Popen] = []

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def spawn(self, argv, **kw) -> subprocess.Popen:
        log = open(self.workdir / f"{self.name}-{len(self.procs_started)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(argv, cwd=kw.pop("cwd", BENCH), stdout=log, stderr=log, **kw)
        self.procs_started.append(proc)
        return proc

    def start(self) -> None:
        raise NotImplementedError

    def worker_pids(self) -> list[int]:
        raise NotImplementedError

    def stop(self) -> None:
        for proc in reversed(self.procs_started):
            stop(proc)


class Ringmaster(Server):
    name = "mongrel2+ringmaster"
    # Handler <-> Mongrel2 over ipc:// (only possible when they share a host) instead of
    # tcp:// loopback (the deploy's direct mode, handlers anywhere): --ipc.
    ipc = False

    def start(self) -> None:
        root = self.workdir / "m2"
        for sub in ("logs", "run", "uploads"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        ident = "bench-front"
        if self.ipc:
            # Relative to Mongrel2's chroot (root) for Mongrel2, absolute for the handler.
            send, recv = "ipc://run/send", "ipc://run/recv"
            ours = f"ipc://{ident}@{root}/run/send", f"ipc://{root}/run/recv"
        else:
            send, recv = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
            ours = send.replace("://", f"://{ident}@", 1), recv
        (root / "mongrel2.conf").write_text(
            f"""
main = Server(uuid="bench-server", access_log="/logs/access.log", error_log="/logs/error.log",
    chroot="{root}", default_host="localhost", name="main", pid_file="/run/mongrel2.pid",
    port={self.port}, bind_addr="127.0.0.1",
    hosts=[Host(name="localhost", routes={{
        '/': Handler(send_spec='{send}', send_ident='{ident}',
                     recv_spec='{recv}', recv_ident='{ident}')}})])
settings = {{"server.daemonize": 0, "upload.temp_store": "uploads/upload.XXXXXX"}}
servers = [main]
"""
        )
        env = {**os.environ, "LOGNAME": os.environ.get("LOGNAME", "bench")}
        subprocess.run(
            ["m2sh", "load", "-config", "mongrel2.conf", "-db", "config.sqlite"],
            cwd=root, env=env, check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        self.mongrel2 = self.spawn(["mongrel2", "config.sqlite", "bench-server"], cwd=root)
        for _ in range(self.procs):
            self.spawn(
                [self.bin("ringmaster-wsgi"), "--log-level", "warning", self.app, *ours]
            )  # fmt: skip

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.procs_started[1:]]

    def extra_rss(self) -> str:
        return f"mongrel2 {rss_mb(self.mongrel2.pid):.1f} MB"


class GunicornSync(Server):
    name = "gunicorn sync"
    worker_class: tuple[str, ...] = ("-k", "sync")

    def start(self) -> None:
        self.master = self.spawn(
            [self.bin("gunicorn"), "-w", str(self.procs), *self.worker_class,
             "-b", f"127.0.0.1:{self.port}", "--log-level", "warning", self.app]
        )  # fmt: skip

    def worker_pids(self) -> list[int]:
        return children(self.master.pid)

    def extra_rss(self) -> str:
        return f"master {rss_mb(self.master.pid):.1f} MB"


class GunicornGthread(GunicornSync):
    name = "gunicorn gthread"
    worker_class = ("-k", "gthread", "--threads", "4")


class UWSGI(Server):
    """uWSGI workers speaking HTTP themselves (C parser, one connection per worker)."""

    name = "uwsgi http11-socket"

    def args(self) -> list[str]:
        return ["--http11-socket", f"127.0.0.1:{self.port}"]

    def start(self) -> None:
        self.master = self.spawn(
            [self.bin("uwsgi"), *self.args(), "--module", self.app,
             "--processes", str(self.procs), "--master", "--disable-logging", "--die-on-term",
             "--need-app"]
        )  # fmt: skip

    def worker_pids(self) -> list[int]:
        return [p for p in children(self.master.pid) if p not in self.router_pids()]

    def router_pids(self) -> list[int]:
        return []

    def extra_rss(self) -> str:
        return f"master {rss_mb(self.master.pid):.1f} MB"


class UWSGIRouter(UWSGI):
    """uWSGI's own C HTTP router in front of its workers: the same shape as Mongrel2 + handlers."""

    name = "uwsgi http router"

    def args(self) -> list[str]:
        self.upstream = free_port()
        return ["--http", f"127.0.0.1:{self.port}", "--http-keepalive", "--socket",
                f"127.0.0.1:{self.upstream}"]  # fmt: skip

    def router_pids(self) -> list[int]:
        # The router is the child that is not a worker: uWSGI names it "uWSGI http 1".
        found = []
        for pid in children(self.master.pid):
            with contextlib.suppress(OSError):
                if "http" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    found.append(pid)
        return found[-1:] if len(children(self.master.pid)) > self.procs else []

    def extra_rss(self) -> str:
        routers = self.router_pids()
        router = f", router {rss_mb(routers[0]):.1f} MB" if routers else ""
        return f"master {rss_mb(self.master.pid):.1f} MB{router}"


SERVERS = [Ringmaster, GunicornSync, GunicornGthread, UWSGI, UWSGIRouter]


# -- load ----------------------------------------------------------------------------------


def run_wrk(port: int, mode: str, duration: float, connections: int, scheme: str = "http") -> dict:
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "2s",
    ]
    if mode == "close":
        argv += ["-H", "Connection: close"]
    host = TLS_HOST if scheme == "https" else "127.0.0.1"
    proc = subprocess.run(
        [*argv, f"{scheme}://{host}:{port}/"], check=False, capture_output=True, text=True,
        timeout=duration + 30,
    )  # fmt: skip
    return parse_wrk(proc.stdout, proc.stderr)


def parse_wrk(out: str, err: str = "") -> dict:
    """req/s, p50/p99 in ms and errors (socket errors and non-2xx/3xx) from wrk --latency."""
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"unexpected wrk output: {out}{err}")
    result = {"rps": float(m.group(1))}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        result[f"p{pct}"] = float(m.group(1)) * scale
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    result["errors"] = errors
    return result


def loss_client(port: int, mode: str, connections: int, per_conn: int, timeout: float, tls: bool = False) -> dict:
    """Our own client: every request it sends is accounted for (ok, error, or lost).

    tls: over https, a full handshake per connection (within the request's timeout: a handshake
    that never finishes is a lost request).
    """
    ctx = client_tls() if tls else None
    counts = {"sent": 0, "ok": 0, "error": 0, "lost": 0}
    latencies: list[float] = []
    lock = threading.Lock()
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n" + (b"Connection: close\r\n\r\n" if mode == "close" else b"\r\n")

    def one_response(sock: socket.socket, buf: bytearray) -> bool:
        """Read one response; return whether the server keeps the connection."""
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed before a response")
            buf += data
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 200") and not lines[0].startswith("HTTP/1.0 200"):
            raise ValueError(lines[0])
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        length = int(headers.get("content-length", "-1"))
        body = bytearray(rest)
        if length >= 0:
            while len(body) < length:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed inside a body")
                body += data
            del buf[:]
            buf += body[length:]
        else:
            while data := sock.recv(65536):
                body += data
            return False
        return headers.get("connection", "").lower() != "close" and mode != "close"

    def worker():
        sock, buf = None, bytearray()
        for _ in range(per_conn):
            with lock:
                counts["sent"] += 1
            outcome = "ok"
            began = time.monotonic()
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
                    if ctx is not None:
                        sock = ctx.wrap_socket(sock, server_hostname=TLS_HOST)
                    buf = bytearray()
                sock.sendall(request)
                if not one_response(sock, buf):
                    sock.close()
                    sock = None
            except TimeoutError:
                outcome = "lost"
            except (OSError, ValueError):
                outcome = "error"
            if outcome != "ok" and sock is not None:
                sock.close()
                sock = None
            with lock:
                counts[outcome] += 1
                if outcome == "ok":
                    latencies.append(time.monotonic() - began)
        if sock is not None:
            sock.close()

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(per_conn * timeout + 30)
    latencies.sort()
    if latencies:
        counts["p99"] = latencies[int(len(latencies) * 0.99)] * 1000
        counts["max"] = latencies[-1] * 1000
    return counts


# -- main ----------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--procs", type=int, default=1, help="Python processes per server (default 1)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--loss-requests", type=int, default=200, help="per connection")
    p.add_argument("--only", nargs="*", help="subset of servers (by name prefix)")
    p.add_argument(
        "--ipc",
        action="store_true",
        help="handler <-> Mongrel2 over ipc:// (same host only) instead of tcp:// loopback",
    )
    args = p.parse_args()
    Ringmaster.ipc = args.ipc
    if not ensure_tools():
        return 2

    venv = ensure_venv()
    workdir = Path(tempfile.mkdtemp(prefix="ringmaster-bench-"))
    kinds = [k for k in SERVERS if not args.only or any(k.name.startswith(o) for o in args.only)]
    servers = [k(venv, args.procs, workdir) for k in kinds]
    results: dict[tuple[str, str], list[dict]] = {}
    losses: dict[tuple[str, str], dict] = {}
    rss: dict[str, str] = {}
    started = time.monotonic()
    try:
        for s in servers:
            s.start()
        for s in servers:
            wait_http(s.port)
            run_wrk(s.port, "keep-alive", 1, args.connections)  # warm-up
        for r in range(args.rounds):
            order = servers[r % len(servers) :] + servers[: r % len(servers)]
            for s in order:
                for mode in MODES:
                    res = run_wrk(s.port, mode, args.duration, args.connections)
                    results.setdefault((s.name, mode), []).append(res)
                    print(f"round {r + 1} {s.name:22} {mode:10} {res['rps']:9.0f} req/s "
                          f"p50 {res['p50']:.2f} ms p99 {res['p99']:.2f} ms", flush=True)  # fmt: skip
        for s in servers:
            workers = s.worker_pids()
            rss[s.name] = f"{statistics.mean(rss_mb(w) for w in workers):.1f} MB x{len(workers)} ({s.extra_rss()})"
            for mode in MODES:
                losses[(s.name, mode)] = loss_client(s.port, mode, args.connections, args.loss_requests, 2.0)
    finally:
        for s in servers:
            s.stop()
    report(results, losses, rss, args)
    print(f"\ntotal {time.monotonic() - started:.0f}s; logs in {workdir}")
    return 0


def report(results, losses, rss, args) -> None:
    def med(name, mode, key):
        return statistics.median(r[key] for r in results[(name, mode)])

    print(
        f"\n{args.procs} Python process(es) per server, wrk -t1 -c{args.connections}, "
        f"{args.rounds} rounds x {args.duration:g}s, medians; ringmaster <-> Mongrel2 over "
        f"{'ipc' if args.ipc else 'tcp'}\n"
    )
    header = (
        f"{'server':22} {'clients':10} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'vs sync':>7} {'lost/sent':>10} {'own p99/max ms':>15}  RSS per worker"
    )
    print(header)
    print("-" * len(header))
    legend = (
        "lost/sent and own p99/max come from our own client (2 s per-request timeout, 16\n"
        "threads): its latency includes waiting on a server that serves one keep-alive\n"
        "connection at a time, which wrk does not show.\n"
    )
    names = list(dict.fromkeys(name for name, _ in results))
    for name in names:
        for mode in MODES:
            rps = med(name, mode, "rps")
            base = ("gunicorn sync", mode)
            ratio = rps / med(*base, "rps") if base in results else float("nan")
            errs = sum(r["errors"] for r in results[(name, mode)])
            loss = losses.get((name, mode), {})
            print(
                f"{name:22} {mode:10} {rps:9.0f} {med(name, mode, 'p50'):7.2f} "
                f"{med(name, mode, 'p99'):7.2f} {errs:6d} {ratio:6.2f}x "
                f"{loss.get('lost', 0):>4}/{loss.get('sent', 0):<5} "
                f"{loss.get('p99', float('nan')):7.1f}/{loss.get('max', float('nan')):<7.1f}  "
                f"{rss.get(name, '') if mode == 'keep-alive' else ''}"
            )
            if loss.get("error"):
                print(f"{'':22} {'':10} (own client: {loss['error']} errors)")
    print("\n" + legend)
    rm, gs = "mongrel2+ringmaster", "gunicorn sync"
    uwsgis = [n for n in names if n.startswith("uwsgi")]
    if rm in names and gs in names:
        print("\ntargets:")
        checks = [
            ("keep-alive >= 3.5x gunicorn sync",
             med(rm, "keep-alive", "rps") >= 3.5 * med(gs, "keep-alive", "rps")),
            ("Connection: close >= 1.5x gunicorn sync",
             med(rm, "close", "rps") >= 1.5 * med(gs, "close", "rps")),
            ("p99 no worse than gunicorn sync (both modes)",
             all(med(rm, m, "p99") <= med(gs, m, "p99") for m in MODES)),
        ]  # fmt: skip
        for uw in uwsgis:
            for m in MODES:
                checks.append(
                    (f"ahead of {uw} ({m})", med(rm, m, "rps") > med(uw, m, "rps"))
                )  # fmt: skip
        worker_rss = float(rss.get(rm, "nan").split()[0])
        checks.append(("<= 25 MB RSS per handler process", worker_rss <= 25))
        checks.append(("no lost requests", all(losses[(rm, m)]["lost"] == 0 for m in MODES)))
        for text, ok in checks:
            print(f"  [{'PASS' if ok else 'FAIL'}] {text}")


if __name__ == "__main__":
    sys.exit(main())
