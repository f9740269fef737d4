#!/usr/bin/env python3
"""Fleet size (issue 15, workload 7): how the dispatcher and the handler scale with the fleet.

    python3 bench/fleet.py [--sizes 10,100,1000] [--fronts 1,5,20] [--duration 5]
                           [--inflight 64] [--per-process 250]

No HTTP and no Mongrel2: a load generator plays Mongrel2 over real ZeroMQ (binds the PUSH
and SUB sockets a dispatcher connects to, sends tnetstring GET requests with --inflight
client connections in flight, reads the replies the dispatcher publishes), so what is
measured is dispatch alone:

- handlers: one ringmaster-dispatcher (flags from bench/deploy.json) with 10, 100 and 1,000
  connected light test handlers (many per process, --per-process DEALER sockets polled by one
  loop speaking the credit protocol; each answers at once): dispatch latency (request sent ->
  reply back), the dispatcher's CPU per request and its RSS;
- fronts: two real ringmaster-wsgi --dispatcher handlers (bench/hello.py) connected to 1, 5
  and 20 dispatchers, the load spread over every front: latency, CPU per request of the
  handlers and of the dispatchers, handler RSS.

CURVE is off in this workload (labelled): with CURVE a dispatcher registers at most
--max-handlers-per-key (64) handlers per key. Runs in bench/run.py's venv (pyzmq and the
handler package); everything it starts is stopped at the end, on Ctrl-C too.
"""

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # bench/run.py: venv, ports, process helpers
from whole import cpu_ticks

TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")

# Plays Mongrel2 towards the dispatchers; prints "go" after the warm-up, then one JSON line.
GENERATOR = r"""
import json, sys, time, zmq
from ringmaster_handler import tnetstrings
fronts, inflight, duration, warm = json.loads(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
ctx = zmq.Context()
poller, pushes, subs = zmq.Poller(), [], []
for send, recv in fronts:
    p = ctx.socket(zmq.PUSH); p.setsockopt(zmq.LINGER, 0); p.bind(send)
    s = ctx.socket(zmq.SUB); s.setsockopt(zmq.SUBSCRIBE, b""); s.bind(recv)
    pushes.append(p); subs.append(s); poller.register(s, zmq.POLLIN)
head = tnetstrings.dumps({b"PATH": b"/", b"METHOD": b"GET", b"VERSION": b"HTTP/1.1",
                          b"URI": b"/", b"host": b"bench"}) + b"0:,"
time.sleep(1.0)  # the dispatchers' subscriptions
sent = {}
def send(conn):
    sent[conn] = time.perf_counter()
    pushes[conn % len(pushes)].send(b"bench-m2 %d / %s" % (conn, head))
for conn in range(inflight):
    send(conn)
lat, began, measuring, end = [], time.perf_counter(), False, None
while True:
    now = time.perf_counter()
    if not measuring and now - began >= warm:
        measuring, lat, t0 = True, [], now
        print("go", flush=True)
    if measuring and now - t0 >= duration:
        break
    for s, _ in poller.poll(1000):
        while True:
            try:
                m = s.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            sp = m.index(b" "); colon = m.index(b":", sp); comma = m.index(b",", colon)
            conn = int(m[colon + 1:comma])
            if len(m) - comma <= 2 or conn not in sent:
                continue  # a close or control message
            t = time.perf_counter()
            lat.append(t - sent.pop(conn))
            send(conn)
wall = time.perf_counter() - t0
lat.sort()
pct = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))] * 1000 if lat else float("nan")
print(json.dumps({"requests": len(lat), "rps": len(lat) / wall, "p50": pct(0.5), "p99": pct(0.99),
                  "outstanding": len(sent)}), flush=True)
"""

# Light test handlers: many DEALER sockets in one process, each a handler to the dispatcher.
LIGHT = r"""
import json, os, sys, zmq
from ringmaster_handler import credit
binds, n, name = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3]
ctx = zmq.Context()
poller, hellos = zmq.Poller(), {}
for i in range(n):
    for b in binds:
        d = ctx.socket(zmq.DEALER); d.setsockopt(zmq.LINGER, 0); d.connect(b)
        hellos[d] = credit.hello_frame({"name": f"{name}-{i}", "pid": os.getpid()})
        d.send(hellos[d]); poller.register(d, zmq.POLLIN)
REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
while True:
    for s, _ in poller.poll(1000):
        while True:
            try:
                f = s.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            k = f[0]
            if k == credit.K_REQUEST:
                s.send(b"D" + f[1:9] + credit.reply_prefix_of(f[9:]) + REPLY)
            elif k in (credit.K_CANCEL, credit.K_STREAM_REQUEST, credit.K_ABORT):
                s.send(b"F" + f[1:9])
            elif k == credit.K_WHO:
                s.send(hellos[s])
"""


def ticks(pids: list[int]) -> int:
    return sum(cpu_ticks(pid) for pid in pids)


class Fleet(run.Server):
    name = "fleet"

    def __init__(self, venv, workdir, deploy_args, fronts: int):
        super().__init__(venv, 0, workdir)
        self.fronts = [(f"tcp://127.0.0.1:{run.free_port()}", f"tcp://127.0.0.1:{run.free_port()}",
                        f"tcp://127.0.0.1:{run.free_port()}") for _ in range(fronts)]  # fmt: skip
        dispatcher = [self.bin("ringmaster-dispatcher"), "--log-level", "warning", *deploy_args]
        self.dispatchers = [self.spawn([*dispatcher, *spec]) for spec in self.fronts]
        self.handlers: list[subprocess.Popen] = []

    def binds(self) -> str:
        return ",".join(bind for _, _, bind in self.fronts)

    def light(self, count: int, per_process: int) -> None:
        for i in range(math.ceil(count / per_process)):
            n = min(per_process, count - i * per_process)
            self.handlers.append(self.spawn([self.bin("python"), "-c", LIGHT, self.binds(), str(n), f"light{i}"]))

    def real(self, count: int) -> None:
        for _ in range(count):
            argv = [self.bin("ringmaster-wsgi"), "--log-level", "warning", "--dispatcher"]
            self.handlers.append(self.spawn([*argv, "hello:app", self.binds()]))

    def measure(self, inflight: int, duration: float, warm: float) -> dict:
        specs = json.dumps([[send, recv] for send, recv, _ in self.fronts])
        gen = subprocess.Popen(
            [self.bin("python"), "-c", GENERATOR, specs, str(inflight), str(duration), str(warm)],
            stdout=subprocess.PIPE, text=True, cwd=run.BENCH,
        )  # fmt: skip
        self.procs_started.append(gen)
        d_pids = [p.pid for p in self.dispatchers]
        h_pids = [p.pid for p in self.handlers]
        first = gen.stdout.readline()
        if first.strip() != "go":
            return {"error": first}
        d0, h0 = ticks(d_pids), ticks(h_pids)
        out, _ = gen.communicate(timeout=duration + 60)
        d1, h1 = ticks(d_pids), ticks(h_pids)
        res = json.loads(out.strip().splitlines()[-1])
        n = max(1, res["requests"])
        res["dispatcher_us"] = (d1 - d0) * TICK_US / n
        res["handlers_us"] = (h1 - h0) * TICK_US / n
        res["dispatcher_rss"] = sum(run.rss_mb(p) for p in d_pids)
        res["handlers_rss"] = sum(run.rss_mb(p) for p in h_pids)
        return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="10,100,1000", help="light handlers on one dispatcher")
    p.add_argument("--fronts", default="1,5,20", help="dispatchers each real handler serves")
    p.add_argument("--duration", type=float, default=5)
    p.add_argument("--inflight", type=int, default=64, help="requests in flight (connections)")
    p.add_argument("--per-process", type=int, default=250, help="light handlers per process")
    args = p.parse_args()
    venv = run.ensure_venv()
    deploy = json.loads((run.BENCH / "deploy.json").read_text())
    deploy_args = deploy["dispatcher"]["args"]
    workdir = Path(tempfile.mkdtemp(prefix="ringmaster-bench-fleet-"))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rows = []
    fleet = None
    try:
        for size in (int(x) for x in args.sizes.split(",") if x):
            fleet = Fleet(venv, workdir, deploy_args, 1)
            fleet.light(size, args.per_process)
            time.sleep(1 + size / 500)  # connections and hellos
            rows.append((f"{size} light handlers, 1 front", fleet.measure(args.inflight, args.duration, 1.0)))
            print(rows[-1][0], rows[-1][1], flush=True)
            fleet.stop()
        for fronts in (int(x) for x in args.fronts.split(",") if x):
            fleet = Fleet(venv, workdir, deploy_args, fronts)
            fleet.real(2)
            time.sleep(1.5)
            rows.append((f"2 handlers, {fronts} front(s)", fleet.measure(args.inflight, args.duration, 1.0)))
            print(rows[-1][0], rows[-1][1], flush=True)
            fleet.stop()
        fleet = None
    except KeyboardInterrupt:
        print("interrupted: stopping everything", file=sys.stderr)
    finally:
        if fleet is not None:
            fleet.stop()
    print(f"\nfleet size (no HTTP: a generator plays Mongrel2; CURVE off), {args.inflight} in flight, "
          f"{args.duration:g}s each")  # fmt: skip
    header = (f"{'setting':30} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'disp us/req':>11} "
              f"{'hdlr us/req':>11} {'disp RSS MB':>11} {'hdlr RSS MB':>11} {'left':>5}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for label, r in rows:
        if "error" in r:
            print(f"{label:30} failed: {r['error']!r}")
            continue
        print(f"{label:30} {r['rps']:8.0f} {r['p50']:7.2f} {r['p99']:7.2f} {r['dispatcher_us']:11.1f} "
              f"{r['handlers_us']:11.1f} {r['dispatcher_rss']:11.1f} {r['handlers_rss']:11.1f} "
              f"{r['outstanding']:5d}")  # fmt: skip
    print("(left: requests still unanswered when the generator stopped, at most --inflight)")
    print(f"logs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
