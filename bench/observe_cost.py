"""What the access log and /metrics cost: hello-world req/s with and without them.

    python3 bench/observe_cost.py [--procs 2] [--rounds 5] [--duration 10] [--scrape-every 1]

Two ringmaster dispatcher stacks as bench/deploy.json deploys them (loopback TCP, CURVE on),
side by side: one plain, one whose dispatcher also writes the access log (JSON lines, to a file)
and serves /metrics, scraped every --scrape-every seconds during its runs (Prometheus scrapes
every 15 s by default: once a second is the harsh case). Rounds alternate which goes first;
each run is wrk keep-alive with 64 connections, then our loss-counting client (bench/run.py).
Reported: median req/s of each, the ratio (observed / plain) and whether it meets the target of
issue 14 (at least 0.97), which a run with any error or lost request does not.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # bench/run.py: tools, venv, ports, wrk and the loss client
import whole  # bench/whole.py: the ringmaster stacks as deployed

TARGET = 0.97


class Observed(whole.RingmasterDispatcher):
    name = "ringmaster dispatcher observed"


def scraper(port: int, every: float, stop: threading.Event, counts: dict) -> None:
    while not stop.wait(every):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
                answer.read()
            counts["scrapes"] += 1
        except OSError:
            counts["failed"] += 1


def recorder_usage() -> dict | None:
    """CPU seconds and RSS of the observed dispatcher's recorder (the one ringmaster-rec)."""
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "ringmaster-rec":
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except OSError:
            continue
        return {"cpu": (int(fields[11]) + int(fields[12])) / tick, "rss": rss}
    return None


def measure(stack, args, metrics_port: int | None) -> dict:
    stop = threading.Event()
    counts = {"scrapes": 0, "failed": 0}
    thread = None
    if metrics_port:
        thread = threading.Thread(target=scraper, args=(metrics_port, args.scrape_every, stop, counts), daemon=True)
        thread.start()
    try:
        res = run.run_wrk(stack.port, "keep-alive", args.duration, 64)
        own = run.loss_client(stack.port, "keep-alive", 64, args.loss_requests, 2.0)
    finally:
        stop.set()
        if thread:
            thread.join()
    res["lost"] = own.get("lost", 0)
    res["errors"] += own.get("error", 0) + counts["failed"]
    res["scrapes"] = counts["scrapes"]
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--procs", type=int, default=2, help="handler processes per stack")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=int, default=10, help="seconds of wrk per run")
    p.add_argument("--scrape-every", type=float, default=1.0, help="seconds between /metrics scrapes")
    p.add_argument("--loss-requests", type=int, default=50, help="own client, per connection")
    args = p.parse_args()
    nofile = whole.raise_fd_limit()
    if not run.ensure_tools():
        return 2
    venv = run.ensure_venv()
    workdir = Path(tempfile.mkdtemp(prefix="ringmaster-bench-observe-"))
    deploy = whole.load_deploy(argparse.Namespace(m2_setting=None, dispatcher_args=None, handler_args=None))
    metrics_port = run.free_port()
    observed_deploy = copy.deepcopy(deploy)
    observed_deploy["dispatcher"]["args"] += [
        "--name", "app", "--access-log", str(workdir / "app-access.log"), "--access-log-format", "json",
        "--metrics-port", str(metrics_port),
    ]  # fmt: skip
    plain, observed = whole.RingmasterDispatcher(venv, args.procs, workdir), Observed(venv, args.procs, workdir)
    plain.deploy, observed.deploy = deploy, observed_deploy
    results: dict[str, list[dict]] = {plain.name: [], observed.name: []}
    try:
        for stack in (plain, observed):
            stack.nofile = nofile
            stack.start()
        for stack in (plain, observed):
            run.wait_http(stack.port)
            run.run_wrk(stack.port, "keep-alive", 2, 16)  # warm-up
        for r in range(args.rounds):
            order = (plain, observed) if r % 2 == 0 else (observed, plain)
            for stack in order:
                res = measure(stack, args, metrics_port if stack is observed else None)
                results[stack.name].append(res)
                print(f"round {r + 1} {stack.name:32} {res['rps']:9.0f} req/s  p99 {res['p99']:6.2f} ms  "
                      f"errors {res['errors']}  lost {res['lost']}  scrapes {res['scrapes']}", flush=True)  # fmt: skip
        recorder = recorder_usage()
    finally:
        for stack in (observed, plain):
            stack.stop()
    log = workdir / "app-access.log"
    lines = sum(1 for _ in log.open()) if log.exists() else 0
    med = {name: statistics.median(r["rps"] for r in rounds) for name, rounds in results.items()}
    clean = all(r["errors"] == 0 and r["lost"] == 0 for rounds in results.values() for r in rounds)
    ratio = med[observed.name] / med[plain.name] if med[plain.name] else 0.0
    print(f"\nmedians of {args.rounds} rounds x {args.duration}s, {args.procs} handler processes each, "
          f"at {time.strftime('%Y-%m-%d %H:%M')}:")  # fmt: skip
    for name, value in med.items():
        print(f"  {name:32} {value:9.0f} req/s")
    print(f"  access log lines written: {lines}")
    if recorder and lines:
        print(f"  the dispatcher's recorder process: {recorder['cpu'] / lines * 1e6:.1f} CPU us per line "
              f"({recorder['cpu']:.1f} s in all), RSS {recorder['rss'] / 2**20:.1f} MiB")  # fmt: skip
    if clean:
        verdict = "PASS" if ratio >= TARGET else "FAIL"
        print(f"  observed / plain: {ratio:.3f} [{verdict}: target >= {TARGET}]")
    else:
        print("  errors or lost requests: no ratio, no PASS")
    print(f"logs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
