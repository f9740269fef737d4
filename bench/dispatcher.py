#!/usr/bin/env python3
"""Benchmark: ringmaster dispatcher mode vs direct mode vs Gunicorn sync, one run.

One command, stdlib only (run it with Debian's python3):

    python3 bench/dispatcher.py [--procs 1] [--rounds 3] [--duration 5] [--connections 16]
                                [--dispatcher-tcp] [--handlers-ipc] [--prefetch N] [--curve]

Same hello-world app, same number of Python handler/worker processes everywhere:

- direct:     Mongrel2 -> ringmaster-wsgi (PULL straight from Mongrel2's PUSH)
- dispatcher: Mongrel2 -> ringmaster-dispatcher -> ringmaster-wsgi --dispatcher
              (Mongrel2 <-> dispatcher over ipc://, as recommended: both share a host;
              --dispatcher-tcp for tcp:// loopback; dispatcher <-> handler over tcp://,
              --handlers-ipc for ipc://)
- dispatcher curve (with --curve): the same with CURVE on the dispatcher <-> handler link
- gunicorn sync

wrk (keep-alive clients) runs in interleaved rounds; medians of req/s and p50/p99 are
printed with the ratio to Gunicorn sync. Then our own loss-counting client (per-request
timeout; wrk does not count hung requests) measures lost requests in steady state and while
handlers are replaced (start one, SIGTERM an old one, twice) in both ringmaster modes.
Reuses bench/run.py's venv (bench/requirements.txt) and helpers; everything it starts is
stopped at the end; nothing is written outside /tmp.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # bench/run.py: venv, ports, wrk and loss-client helpers


class Mongrel2Front(run.Server):
    """Mongrel2 with one handler route; subclasses add what serves the route."""

    ipc = False  # Mongrel2's handler sockets on ipc:// (inside its chroot) instead of tcp://
    # Mongrel2's settings table and extra handler flags (bench/whole.py sets them from
    # bench/deploy.json, what the roles deploy).
    settings: dict = {"server.daemonize": 0}  # noqa: RUF012
    handler_args: tuple[str, ...] = ()
    # Mongrel2's own TLS (use_ssl): the subclass puts certs/ in the root and the TLS settings
    # (certdir, ssl_ciphers) in ``settings`` first (bench/whole.py, from bench/deploy.json).
    use_ssl = False
    backend_port = 0  # Mongrel2 listens here, not on ``port``, behind a TLS proxy (bench/whole.py)

    def start_mongrel2(self) -> tuple[str, str]:
        """Start Mongrel2; return the send and recv endpoints, as a local peer connects them."""
        root = self.workdir / self.name.replace(" ", "-")
        for sub in ("logs", "run", "uploads"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        ident = "bench-front"
        if self.ipc:
            # Relative to the chroot (root) or, unprivileged, to the working directory (root).
            send, recv = "ipc://run/send", "ipc://run/recv"
            ours = f"ipc://{root}/run/send", f"ipc://{root}/run/recv"
        else:
            send, recv = (f"tcp://127.0.0.1:{run.free_port()}" for _ in range(2))
            ours = send, recv
        (root / "mongrel2.conf").write_text(
            f"""
main = Server(uuid="bench-server", access_log="/logs/access.log", error_log="/logs/error.log",
    chroot="{root}", default_host="localhost", name="main", pid_file="/run/mongrel2.pid",
    port={self.backend_port or self.port}, bind_addr="127.0.0.1", use_ssl={int(self.use_ssl)},
    hosts=[Host(name="localhost", routes={{
        '/': Handler(send_spec='{send}', send_ident='{ident}',
                     recv_spec='{recv}', recv_ident='{ident}')}})])
settings = {json.dumps(self.settings)}
servers = [main]
"""
        )
        env = {**os.environ, "LOGNAME": os.environ.get("LOGNAME", "bench")}
        subprocess.run(
            ["m2sh", "load", "-config", "mongrel2.conf", "-db", "config.sqlite"],
            cwd=root, env=env, check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        self.mongrel2 = self.spawn(["mongrel2", "config.sqlite", "bench-server"], cwd=root)
        self.handlers: list[subprocess.Popen] = []
        return ours

    def add_handler(self) -> subprocess.Popen:
        proc = self.spawn(self.handler_argv())
        self.handlers.append(proc)
        return proc

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.handlers if p.poll() is None]

    def extra_rss(self) -> str:
        return f"mongrel2 {run.rss_mb(self.mongrel2.pid):.1f} MB"


class Direct(Mongrel2Front):
    name = "direct"

    def start(self) -> None:
        send, recv = self.start_mongrel2()
        self.specs = [send.replace("://", "://bench-front@", 1), recv]
        for _ in range(self.procs):
            self.add_handler()

    def handler_argv(self) -> list[str]:
        return [self.bin("ringmaster-wsgi"), "--log-level", "warning", *self.handler_args,
                self.app, *self.specs]  # fmt: skip


class Dispatched(Mongrel2Front):
    name = "dispatcher"
    extra_args: tuple[str, ...] = ()
    # Handlers reach the dispatcher over ipc:// (only when they share its host) instead of
    # tcp:// loopback: --handlers-ipc.
    handlers_ipc = False
    curve = False  # CURVE on the dispatcher <-> handler link, keys made as the role makes them

    def start(self) -> None:
        send, recv = self.start_mongrel2()
        if self.handlers_ipc:
            self.bind = f"ipc://{self.workdir}/{self.name.replace(' ', '-')}-{self.port}"
        else:
            self.bind = f"tcp://127.0.0.1:{run.free_port()}"
        server_args: list[str] = []
        self.client_args: list[str] = []
        if self.curve:
            # (one directory per stack: two stacks in one workdir, as bench/observe_cost.py
            # runs them, would otherwise rewrite each other's keys, which both sides reread)
            keys = self.workdir / f"curve-{self.name.replace(' ', '-')}"
            (keys / "authorized").mkdir(parents=True, exist_ok=True)
            for name in ("dispatcher", "handler"):
                subprocess.run(
                    [self.bin("python"), "-m", "ringmaster_handler.curve", str(keys), name],
                    check=True, capture_output=True, timeout=30,
                )  # fmt: skip
            shutil.copy(keys / "handler.key", keys / "authorized" / "handler.key")
            public = next(
                line.split('"')[1]
                for line in (keys / "dispatcher.key").read_text().splitlines()
                if line.strip().startswith("public-key")
            )
            (keys / "servers").write_text(f"{self.bind} {public}\n")
            server_args = ["--curve-secret-key", str(keys / "dispatcher.key_secret"),
                           "--curve-authorized-keys", str(keys / "authorized")]  # fmt: skip
            self.client_args = ["--curve-secret-key", str(keys / "handler.key_secret"),
                                "--curve-server-keys", str(keys / "servers")]  # fmt: skip
        self.dispatcher = self.spawn(
            [self.bin("ringmaster-dispatcher"), "--log-level", "warning", *self.extra_args,
             *server_args, send, recv, self.bind]
        )  # fmt: skip
        for _ in range(self.procs):
            self.add_handler()

    def handler_argv(self) -> list[str]:
        return [self.bin("ringmaster-wsgi"), "--log-level", "warning", "--dispatcher",
                *self.handler_args, *self.client_args, self.app, self.bind]  # fmt: skip

    def extra_rss(self) -> str:
        return f"{super().extra_rss()}, dispatcher {run.rss_mb(self.dispatcher.pid):.1f} MB"


class DispatchedCurve(Dispatched):
    """The dispatcher with CURVE on its handler link, in the same interleaved rounds as the
    plain one: on a shared machine only a side-by-side run says what CURVE costs."""

    name = "dispatcher curve"
    curve = True


def churn_loss(server: Mongrel2Front, connections: int, per_conn: int) -> dict:
    """Lost requests while handlers are replaced: start a new one, SIGTERM the oldest, until
    the client is done (at least twice; ``per_conn`` is sized for about 3 seconds)."""
    result: dict = {}
    t = threading.Thread(
        target=lambda: result.update(run.loss_client(server.port, "keep-alive", connections, per_conn, 2.0))
    )
    t.start()
    replaced = 0
    while (t.is_alive() and replaced < 6) or replaced < 2:
        time.sleep(0.4)
        server.add_handler()
        time.sleep(0.3)  # Python start-up
        oldest = next(p for p in server.handlers if p.poll() is None)
        oldest.send_signal(signal.SIGTERM)
        replaced += 1
    t.join()
    result["replaced"] = replaced
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--procs", type=int, default=1, help="Python processes per server (default 1)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--loss-requests", type=int, default=300, help="per connection")
    p.add_argument("--prefetch", type=int, help="ringmaster-dispatcher --prefetch")
    p.add_argument(
        "--dispatcher-tcp",
        dest="dispatcher_ipc",
        action="store_false",
        help=(
            "connect the dispatcher to Mongrel2 over tcp:// loopback instead of ipc:// (the "
            "dispatcher always runs on Mongrel2's host, and ipc:// is the recommended deploy, so "
            "it is the default here; handlers reach the dispatcher over tcp:// either way)"
        ),
    )
    p.add_argument(
        "--dispatcher-ipc",
        dest="dispatcher_ipc",
        action="store_true",
        default=True,
        help="ipc:// between Mongrel2 and the dispatcher (the default)",
    )
    p.add_argument(
        "--handlers-ipc",
        action="store_true",
        help="handlers reach the dispatcher over ipc:// instead of tcp:// loopback (co-located)",
    )
    p.add_argument(
        "--curve",
        action="store_true",
        help=(
            "also run the dispatcher with ZeroMQ CURVE (encryption and authentication) on its "
            "handler link, in the same interleaved rounds as the plain one"
        ),
    )
    args = p.parse_args()
    if not run.ensure_tools():
        return 2
    Dispatched.ipc = args.dispatcher_ipc
    Dispatched.handlers_ipc = args.handlers_ipc
    if args.prefetch is not None:
        Dispatched.extra_args = ("--prefetch", str(args.prefetch))

    venv = run.ensure_venv()
    workdir = Path(tempfile.mkdtemp(prefix="ringmaster-bench-dispatcher-"))
    kinds = (Dispatched, *([DispatchedCurve] if args.curve else []), Direct, run.GunicornSync)
    servers = [k(venv, args.procs, workdir) for k in kinds]
    results: dict[str, list[dict]] = {}
    steady: dict[str, dict] = {}
    churn: dict[str, dict] = {}
    rss: dict[str, str] = {}
    started = time.monotonic()
    try:
        for s in servers:
            s.start()
        for s in servers:
            run.wait_http(s.port)
            run.run_wrk(s.port, "keep-alive", 1, args.connections)  # warm-up
        for r in range(args.rounds):
            order = servers[r % len(servers) :] + servers[: r % len(servers)]
            for s in order:
                res = run.run_wrk(s.port, "keep-alive", args.duration, args.connections)
                results.setdefault(s.name, []).append(res)
                print(f"round {r + 1} {s.name:16} {res['rps']:9.0f} req/s "
                      f"p50 {res['p50']:.2f} ms p99 {res['p99']:.2f} ms", flush=True)  # fmt: skip
        for s in servers:
            workers = s.worker_pids()
            rss[s.name] = f"{statistics.mean(run.rss_mb(w) for w in workers):.1f} MB x{len(workers)} ({s.extra_rss()})"
            began = time.monotonic()
            steady[s.name] = run.loss_client(s.port, "keep-alive", args.connections, args.loss_requests, 2.0)
            rate = steady[s.name]["sent"] / (time.monotonic() - began)
            if isinstance(s, Mongrel2Front):
                per_conn = max(args.loss_requests, int(rate * 3 / args.connections))
                churn[s.name] = churn_loss(s, args.connections, per_conn)
                print(f"churn {s.name:16} lost {churn[s.name]['lost']}/{churn[s.name]['sent']} "
                      f"({churn[s.name]['replaced']} handlers replaced)", flush=True)  # fmt: skip
    finally:
        for s in servers:
            s.stop()
    report(results, steady, churn, rss, args)
    print(f"\ntotal {time.monotonic() - started:.0f}s; logs in {workdir}")
    return 0


def report(results, steady, churn, rss, args) -> None:
    def med(name, key):
        return statistics.median(r[key] for r in results[name])

    print(
        f"\n{args.procs} Python process(es) per server, wrk -t1 -c{args.connections} "
        f"(keep-alive), {args.rounds} rounds x {args.duration}s, medians; dispatcher <-> Mongrel2 "
        f"over {'ipc' if args.dispatcher_ipc else 'tcp'}, handlers over "
        f"{'ipc' if args.handlers_ipc else 'tcp'}\n"
    )
    header = (
        f"{'server':16} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'vs sync':>7} "
        f"{'lost/sent':>11} {'churn lost/sent':>16}  RSS per process"
    )
    print(header)
    print("-" * len(header))
    base = med("gunicorn sync", "rps")
    for name in results:
        loss, ch = steady.get(name, {}), churn.get(name)
        errs = sum(r["errors"] for r in results[name]) + loss.get("error", 0)
        churn_text = f"{ch['lost']}/{ch['sent']}" if ch else "n/a"
        print(
            f"{name:16} {med(name, 'rps'):9.0f} {med(name, 'p50'):7.2f} {med(name, 'p99'):7.2f} "
            f"{errs:6d} {med(name, 'rps') / base:6.2f}x "
            f"{loss.get('lost', 0):>5}/{loss.get('sent', 0):<5} {churn_text:>16}  {rss.get(name, '')}"
        )
    d, direct = med("dispatcher", "rps"), med("direct", "rps")
    print(f"\ndispatcher / direct: {d / direct:.2f}")
    if "dispatcher curve" in results:
        c = med("dispatcher curve", "rps")
        print(f"dispatcher curve / dispatcher: {c / d:.2f} (what CURVE on the handler link costs)")
    print("(churn: handlers replaced during a ~3 s loss-client run: start one, SIGTERM one)")
    print("\ntargets:")
    checks = [
        ("dispatcher >= 3x gunicorn sync (keep-alive)", d >= 3 * base),
        ("dispatcher: no lost requests, steady and while handlers are replaced",
         steady["dispatcher"]["lost"] == 0 and churn["dispatcher"]["lost"] == 0),
        ("dispatcher: no errors", steady["dispatcher"].get("error", 0) == 0
         and churn["dispatcher"].get("error", 0) == 0),
    ]  # fmt: skip
    for text, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}")


if __name__ == "__main__":
    sys.exit(main())
