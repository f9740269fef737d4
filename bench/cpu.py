#!/usr/bin/env python3
"""CPU time per request, by process and thread: dispatcher mode vs direct mode.

    python3 bench/cpu.py [--modes dispatcher,direct,relay,pyrelay] [--rounds 6] [--duration 4]
                         [--connections 16] [--dispatcher-tcp] [--prefetch N]

Wall-clock req/s on a shared machine swings with whatever else runs; the CPU each process
spends per request varies much less (still +-10% per cell under load: use several rounds).

For each mode this starts Mongrel2 and the handler(s) as bench/dispatcher.py does, runs wrk
(keep-alive), and divides the CPU time every thread spent (/proc/<pid>/task/<tid>/schedstat,
nanoseconds; user/system split from .../stat) and its context switches by the requests wrk
completed. wrk's own CPU comes from its rusage; "machine" is all non-idle CPU in /proc/stat
(includes interrupts and anything else running). Rounds alternate between the modes; the
median of each cell is printed. Uses bench/run.py's venv, or $BENCH_VENV (any venv with pyzmq
and the handler package; PYTHONPATH=.../src then runs the working tree's code).
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dispatcher as bench  # bench/dispatcher.py: the servers
import run  # bench/run.py: venv, ports

TICK = os.sysconf("SC_CLK_TCK")


def thread_times(pid: int) -> dict[str, list[float]]:
    """{thread name: [cpu ns, user ticks, system ticks, context switches]}, summed by name."""
    out: dict[str, list[float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            ns = int((task / "schedstat").read_text().split()[0])
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            user, system = int(fields[11]), int(fields[12])
            switches = 0
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")):
                    switches += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if comm.startswith("ZMQbg/IO"):
            comm = "zmq io"
        elif comm.startswith("ZMQbg/Reaper"):
            comm = "zmq reaper"
        else:
            comm = "main"
        acc = out.setdefault(comm, [0.0, 0.0, 0.0, 0.0])
        for i, v in enumerate((ns, user, system, switches)):
            acc[i] += v
    return out


def machine_busy() -> float:
    """Non-idle CPU seconds of the whole machine."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICK


# The floor of one more libzmq process hop: the same path (Mongrel2 -> relay -> handler ->
# relay -> Mongrel2) forwarded by libzmq's zmq_proxy in C (two threads, GIL released), with a
# direct-mode handler behind it: no scheduling, no credits, no Python per message.
RELAY = """
import sys, threading, zmq
m2_send, m2_recv, h_send, h_recv = sys.argv[1:5]
ctx = zmq.Context(io_threads=1)
pull = ctx.socket(zmq.PULL); pull.connect(m2_send)
push = ctx.socket(zmq.PUSH); push.bind(h_send)
xsub = ctx.socket(zmq.XSUB); xsub.bind(h_recv)
xpub = ctx.socket(zmq.XPUB); xpub.setsockopt(zmq.XPUB_VERBOSE, 1); xpub.connect(m2_recv)
threading.Thread(target=zmq.proxy, args=(xsub, xpub), daemon=True).start()
zmq.proxy(pull, push)
"""


class Relayed(bench.Mongrel2Front):
    name = "c relay"
    ipc = True

    def start(self) -> None:
        send, recv = self.start_mongrel2()
        h_send, h_recv = (f"tcp://127.0.0.1:{run.free_port()}" for _ in range(2))
        self.dispatcher = self.spawn([self.bin("python"), "-c", RELAY, send, recv, h_send, h_recv])
        self.specs = [h_send.replace("://", "://bench-front@", 1), h_recv]
        time.sleep(0.5)
        for _ in range(self.procs):
            self.add_handler()

    def handler_argv(self) -> list[str]:
        return [self.bin("ringmaster-wsgi"), "--log-level", "warning", "hello:app", *self.specs]


# The dispatcher's message path in Python with no scheduling at all: the same pyzmq calls
# (poll, recv until EAGAIN, ROUTER send of routing id + frame, XPUB send) and the credit
# protocol, every request to the one handler at once (unbounded prefetch, no books).
PYRELAY = """
import sys, zmq
m2_send, m2_recv, bind = sys.argv[1:4]
ctx = zmq.Context(io_threads=1)
out = ctx.socket(zmq.XPUB); out.setsockopt(zmq.XPUB_VERBOSE, 1); out.connect(m2_recv); out.recv()
router = ctx.socket(zmq.ROUTER); router.bind(bind)
ident = router.recv(); router.recv()  # the handler's hello
pull = ctx.socket(zmq.PULL); pull.connect(m2_send)
poller = zmq.Poller(); poller.register(router, zmq.POLLIN); poller.register(pull, zmq.POLLIN)
NB = int(zmq.NOBLOCK); MORE = int(zmq.SNDMORE) | NB
rsend = zmq.backend.Socket.send
rid = bytes(8)
while True:
    for sock, _ in poller.poll(1000):
        if sock is pull:
            while True:
                try:
                    m = pull.recv(NB)
                except zmq.Again:
                    break
                if not m.endswith(b'21:{"type":"disconnect"},'):
                    rsend(router, ident, MORE); rsend(router, b"Q" + rid + m, NB)
        else:
            while True:
                try:
                    router.recv(NB)
                except zmq.Again:
                    break
                f = router.recv()
                if f[:1] in (b"D", b"M"):
                    rsend(out, f[9:], NB)
"""


class PyRelayed(bench.Dispatched):
    name = "python relay"

    def start(self) -> None:
        send, recv = self.start_mongrel2()
        self.bind = f"tcp://127.0.0.1:{run.free_port()}"
        self.dispatcher = self.spawn([self.bin("python"), "-c", PYRELAY, send, recv, self.bind])
        time.sleep(0.5)
        for _ in range(self.procs):
            self.add_handler()


def processes(server) -> dict[str, int]:
    procs = {"mongrel2": server.mongrel2.pid}
    if isinstance(server, (bench.Dispatched, Relayed)):
        procs["dispatcher"] = server.dispatcher.pid
    for i, pid in enumerate(server.worker_pids()):
        procs[f"handler{i if i else ''}"] = pid
    return procs


def measure(server, duration: float, connections: int) -> dict:
    procs = processes(server)
    before = {name: thread_times(pid) for name, pid in procs.items()}
    busy0 = machine_busy()
    wrk = subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "2s",
         f"http://127.0.0.1:{server.port}/"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    out = wrk.stdout.read()
    _, _, usage = os.wait4(wrk.pid, 0)
    wrk.returncode = 0
    busy = machine_busy() - busy0
    after = {name: thread_times(pid) for name, pid in procs.items()}
    m = re.search(r"(\d+) requests in .*\nRequests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"unexpected wrk output: {out}")
    requests, rps = int(m.group(1)), float(m.group(2))
    cells: dict[str, tuple[float, float, float]] = {}  # name: (us/req, sys share, switches/req)
    for name in procs:
        for thread, a in after[name].items():
            b = before[name].get(thread, [0.0] * 4)
            ns, user, system, sw = (x - y for x, y in zip(a, b, strict=True))
            share = system / (user + system) if user + system else 0.0
            cells[f"{name} {thread}"] = (ns / 1000 / requests, share, sw / requests)
    wrk_cpu = usage.ru_utime + usage.ru_stime
    cells["wrk"] = (
        wrk_cpu * 1e6 / requests,
        usage.ru_stime / wrk_cpu if wrk_cpu else 0.0,
        (usage.ru_nvcsw + usage.ru_nivcsw) / requests,
    )
    cells["machine"] = (busy * 1e6 / requests, 0.0, 0.0)
    return {"rps": rps, "cells": cells}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--modes",
        default="dispatcher,direct",
        help=(
            "comma-separated: dispatcher; dispatcher-ipc (handlers over ipc://); direct; relay "
            "(the same hop through libzmq's zmq_proxy in C: the floor); pyrelay (the same hop "
            "in minimal Python, no scheduling); dispatcher-base (the handler package from "
            "$BASE_SRC, e.g. an export of main: A/B in one run)"
        ),
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--prefetch", type=int)
    p.add_argument("--dispatcher-tcp", action="store_true")
    args = p.parse_args()
    bench.Dispatched.ipc = not args.dispatcher_tcp
    if args.prefetch is not None:
        bench.Dispatched.extra_args = ("--prefetch", str(args.prefetch))

    class DispatchedIpc(bench.Dispatched):
        name = "dispatcher ipc"
        handlers_ipc = True

    class DispatchedBase(bench.Dispatched):
        """The same, running the handler package from $BASE_SRC (A/B runs of two builds)."""

        name = "dispatcher base"

        def spawn(self, argv, **kw):
            env = {**os.environ, "PYTHONPATH": os.environ["BASE_SRC"]}
            return super().spawn(argv, env=env, **kw)

    kinds = {
        "dispatcher": bench.Dispatched,
        "dispatcher-base": DispatchedBase,
        "dispatcher-ipc": DispatchedIpc,
        "direct": bench.Direct,
        "relay": Relayed,
        "pyrelay": PyRelayed,
    }
    if not run.ensure_tools():
        return 2
    venv = run.ensure_venv() if not os.environ.get("BENCH_VENV") else Path(os.environ["BENCH_VENV"])
    workdir = Path(tempfile.mkdtemp(prefix="ringmaster-bench-cpu-"))
    servers = [kinds[m](venv, 1, workdir) for m in args.modes.split(",")]
    results: dict[str, list[dict]] = {}
    try:
        for s in servers:
            s.start()
        for s in servers:
            run.wait_http(s.port)
            run.run_wrk(s.port, "keep-alive", 1, args.connections)  # warm-up
        for r in range(args.rounds):
            for s in servers[r % len(servers) :] + servers[: r % len(servers)]:
                res = measure(s, args.duration, args.connections)
                results.setdefault(s.name, []).append(res)
                c = res["cells"]
                total = sum(v[0] for k, v in c.items() if k not in ("machine", "wrk"))
                print(f"round {r + 1} {s.name:15} {res['rps']:8.0f} req/s  servers {total:6.1f} "
                      f"machine {c['machine'][0]:6.1f} us/req", flush=True)  # fmt: skip
    finally:
        for s in servers:
            s.stop()
    print("\nmedian CPU per request (us), share in the kernel, context switches per request")
    for name, rounds in results.items():
        print(f"\n{name}: {statistics.median(r['rps'] for r in rounds):.0f} req/s")
        keys = list(rounds[0]["cells"])
        for key in keys:
            vals = [r["cells"][key] for r in rounds if key in r["cells"]]
            us = statistics.median(v[0] for v in vals)
            if us < 0.05 and key != "machine":
                continue
            sys_share = statistics.median(v[1] for v in vals)
            sw = statistics.median(v[2] for v in vals)
            print(f"  {key:22} {us:7.1f} us  sys {sys_share:4.0%}  cs {sw:5.2f}")
        total = statistics.median(
            sum(v[0] for k, v in r["cells"].items() if k not in ("machine", "wrk")) for r in rounds
        )
        print(f"  {'server total':22} {total:7.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
