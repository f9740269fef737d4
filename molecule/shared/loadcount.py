#!/usr/bin/env python3
"""Bounded HTTP load that accounts for every request it sends.

wrk does not count requests that never get an answer; this client gives each
request its own timeout, so a request is either answered (2xx), failed (any
other status, a reset, a refused connection) or lost (no answer in time).
It stops on its own after --duration seconds or when --stop-file appears, and
prints one JSON object with the counts and the hosts that answered.
"""

import argparse
import http.client
import json
import os
import re
import threading
import time
from collections import Counter

HOST_RE = re.compile(rb"host (\S+), pid")


def client(args, deadline, totals, lock):
    conn = None
    local = Counter()
    hosts = Counter()
    tally = Counter()
    body_out = b"x" * args.body_size if args.method == "POST" else None
    slowest = 0.0
    while time.monotonic() < deadline and not os.path.exists(args.stop_file):
        local["sent"] += 1
        started = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)
            conn.request(args.method, args.path, body=body_out)
            resp = conn.getresponse()
            body = resp.read()
            # Answered requests only: lost ones are counted as lost.
            slowest = max(slowest, time.monotonic() - started)
            if 200 <= resp.status < 300:
                local["ok"] += 1
                match = HOST_RE.search(body)
                if match:
                    hosts[match.group(1).decode()] += 1
                if args.tally:
                    found = args.tally.search(body)
                    tally[" ".join(g.decode() for g in found.groups()) if found else "(no match)"] += 1
            else:
                local["failed"] += 1
                local[f"status_{resp.status}"] += 1
            if resp.will_close:
                conn.close()
                conn = None
        except TimeoutError:
            local["lost"] += 1
            conn.close()
            conn = None
        except (OSError, http.client.HTTPException) as exc:
            local["failed"] += 1
            local[f"error_{type(exc).__name__}"] += 1
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.05)
        if args.pause:
            time.sleep(args.pause)
    if conn is not None:
        conn.close()
    with lock:
        totals.update(local)
        totals["hosts"].update(hosts)
        totals["tally"].update(tally)
        totals["slowest_answer"] = max(totals.get("slowest_answer", 0.0), slowest)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6767)
    parser.add_argument("--path", default="/")
    parser.add_argument("--method", choices=["GET", "POST"], default="GET")
    parser.add_argument("--body-size", type=int, default=64, help="bytes in each POST body")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=60.0, help="hard upper bound, seconds")
    parser.add_argument("--timeout", type=float, default=5.0, help="per request, seconds")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between a client's requests")
    parser.add_argument("--stop-file", default="/tmp/loadcount.stop")
    parser.add_argument(
        "--tally",
        type=lambda text: re.compile(text.encode()),
        help="count 2xx answers by this regex's groups (e.g. the app version and host)",
    )
    args = parser.parse_args(argv)

    totals = Counter()
    totals["hosts"] = Counter()
    totals["tally"] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + args.duration
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(args, deadline, totals, lock)) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    hosts = dict(totals.pop("hosts"))
    tally = dict(totals.pop("tally"))
    result = {"seconds": round(time.monotonic() - started, 1), "hosts": hosts}
    if args.tally:
        result["tally"] = tally
    result.update({key: totals.get(key, 0) for key in ("sent", "ok", "failed", "lost")})
    result.update({key: value for key, value in totals.items() if key not in result})
    result["slowest_answer"] = round(result.get("slowest_answer", 0.0), 3)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
