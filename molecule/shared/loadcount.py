#!/usr/bin/env python3
"""Bounded HTTP load that accounts for every request it sends.

wrk does not count requests that never get an answer; this client gives each
request its own timeout, so a request is either answered (2xx), failed (any
other status, a reset, a refused connection) or lost (no answer in time).
It stops on its own after --duration seconds, when --stop-file appears, or (with
--until-tallied) once enough different --tally values answered and --at-least passed, and prints one JSON
object with the counts, the hosts that answered and what stopped it ("stopped_by":
"stop-file", "duration" or "tallied", so a check can tell that the load outlasted what
it measured).

A request counts as lost when its whole exchange, not a single read, takes longer than
--timeout: a reply that trickles in is not an answer. Every request a thread sent is counted
even when the thread dies; a thread that died of an unexpected exception makes the exit
status 1 ("crashed" in the JSON).

With --cacert, it speaks TLS and verifies the server's chain to that CA and the name
(--server-name, also sent by SNI and as Host; --host stays the address it connects to); "serials"
counts the certificates by serial number, once per TLS connection, so a check can see a
certificate change under way. --reconnect opens a new connection (a new handshake) for every
request.

"began" and "ended" (seconds since the epoch: one clock for every container on a machine) say
when the load ran, so a check can tell that it covered an operation. With --instant-file, a file
that holds such a time (a fault's, written when the load is asked to stop), "at_instant" counts
the requests that were in flight at that instant by method and outcome ("ok_GET",
"status_502_POST", "lost_GET", "error_GET", ...): proof that a fault met requests under way.
"""

import argparse
import http.client
import json
import os
import random
import re
import socket
import ssl
import threading
import time
import traceback
from collections import Counter

HOST_RE = re.compile(rb"host (\S+), pid")


class Lost(Exception):
    """The exchange took longer than the per-request timeout."""


def exchange(conn, method, path, body, timeout):
    """One request and its whole answer within ``timeout`` seconds: (status, body, will_close)."""
    deadline = time.monotonic() + timeout

    def remaining():
        left = deadline - time.monotonic()
        if left <= 0:
            raise Lost
        if conn.sock is not None:
            conn.sock.settimeout(left)
        return left

    conn.timeout = timeout
    conn.request(method, path, body=body)
    remaining()
    resp = conn.getresponse()
    chunks = []
    while True:
        remaining()
        chunk = resp.read(65536)
        if not chunk:
            break
        chunks.append(chunk)
    remaining()
    return resp.status, b"".join(chunks), resp.will_close


class TLSConnection(http.client.HTTPSConnection):
    """HTTPS to ``address`` that verifies and names (SNI, Host) the server as ``name``."""

    def __init__(self, address, port, name, context, timeout):
        super().__init__(name, port, timeout=timeout, context=context)
        self.address = address
        self.serial = None

    def connect(self):
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        self.serial = self.sock.getpeercert().get("serialNumber")


def connect(args):
    if not args.cacert:
        return http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)
    context = ssl.create_default_context(cafile=args.cacert)
    return TLSConnection(args.host, args.port, args.server_name or args.host, context, args.timeout)


def client(args, deadline, floor, totals, lock, spans, seen, enough):
    """One keep-alive connection's requests; ``spans`` gets (start, end, method, outcome) of each."""
    conn = None
    local = Counter()
    hosts = Counter()
    tally = Counter()
    serials = Counter()
    post_body = b"x" * args.body_size
    slowest = 0.0
    rng = random.Random()
    try:
        while (
            time.monotonic() < deadline
            and not (enough.is_set() and time.monotonic() >= floor)
            and not os.path.exists(args.stop_file)
        ):
            method = "POST" if args.method == "POST" or rng.random() < args.post_share else "GET"
            local["sent"] += 1
            local[f"sent_{method}"] += 1
            started = time.monotonic()
            began = time.time()
            outcome = "error"
            try:
                if conn is None:
                    conn = connect(args)
                fresh = conn.sock is None
                status, body, will_close = exchange(
                    conn, method, args.path, post_body if method == "POST" else None, args.timeout
                )
                if fresh and getattr(conn, "serial", None):
                    serials[conn.serial] += 1
                # Answered requests only: lost ones are counted as lost.
                slowest = max(slowest, time.monotonic() - started)
                outcome = "ok" if 200 <= status < 300 else f"status_{status}"
                if 200 <= status < 300:
                    local["ok"] += 1
                    match = HOST_RE.search(body)
                    if match:
                        hosts[match.group(1).decode()] += 1
                    if args.tally:
                        found = args.tally.search(body)
                        key = " ".join(g.decode() for g in found.groups()) if found else "(no match)"
                        tally[key] += 1
                        seen.add(key)
                        if args.until_tallied and len(seen) >= args.until_tallied:
                            enough.set()
                else:
                    local["failed"] += 1
                    local[f"status_{status}"] += 1
                    local[f"status_{status}_{method}"] += 1
                if will_close or args.reconnect:
                    conn.close()
                    conn = None
            except (Lost, TimeoutError):
                outcome = "lost"
                local["lost"] += 1
                local[f"lost_{method}"] += 1
                conn.close()
                conn = None
            except (OSError, http.client.HTTPException) as exc:
                local["failed"] += 1
                local[f"error_{type(exc).__name__}"] += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
            finally:
                spans.append((began, time.time(), method, outcome))
            if args.pause:
                time.sleep(args.pause)
    except BaseException:
        # Counted, not hidden: the totals keep what this thread sent and the run fails.
        local["crashed"] += 1
        traceback.print_exc()
    finally:
        if conn is not None:
            conn.close()
        with lock:
            totals.update(local)
            totals["hosts"].update(hosts)
            totals["tally"].update(tally)
            totals["serials"].update(serials)
            totals["slowest_answer"] = max(totals.get("slowest_answer", 0.0), slowest)


def in_flight(spans, instant_file):
    """Requests under way at the time the file holds, by outcome and method (empty without one)."""
    try:
        with open(instant_file) as fh:
            instant = float(fh.read().strip())
    except (OSError, ValueError):
        return {}
    counts = Counter()
    for began, ended, method, outcome in spans:
        if began <= instant <= ended:
            counts["sent"] += 1
            counts[f"sent_{method}"] += 1
            counts[f"{outcome}_{method}"] += 1
    return {"instant": instant, **counts}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6767)
    parser.add_argument("--path", default="/")
    parser.add_argument("--method", choices=["GET", "POST"], default="GET")
    parser.add_argument("--body-size", type=int, default=64, help="bytes in each POST body")
    parser.add_argument(
        "--post-share",
        type=float,
        default=0.0,
        help="with --method GET: this share of requests are POSTs instead (0 to 1)",
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=60.0, help="hard upper bound, seconds")
    parser.add_argument("--timeout", type=float, default=5.0, help="per request, seconds")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between a client's requests")
    parser.add_argument("--stop-file", default="/tmp/loadcount.stop")
    parser.add_argument("--cacert", help="speak TLS, verifying the server's chain to this CA file")
    parser.add_argument("--server-name", help="with --cacert: the name to verify, send by SNI and as Host")
    parser.add_argument("--reconnect", action="store_true", help="a new connection for every request")
    parser.add_argument(
        "--instant-file",
        help="a file holding a time (seconds since the epoch): count the requests in flight then",
    )
    parser.add_argument(
        "--tally",
        type=lambda text: re.compile(text.encode()),
        help="count 2xx answers by this regex's groups (e.g. the app version and host)",
    )
    parser.add_argument(
        "--until-tallied",
        type=int,
        default=0,
        help="stop once this many different --tally values answered (--duration stays the bound): "
        "a sample that must see every host need not guess how long that takes under load",
    )
    parser.add_argument(
        "--at-least",
        type=float,
        default=0.0,
        help="with --until-tallied: never stop for it before this many seconds",
    )
    args = parser.parse_args(argv)

    totals = Counter()
    totals["hosts"] = Counter()
    totals["tally"] = Counter()
    totals["serials"] = Counter()
    lock = threading.Lock()
    spans = []  # list.append is atomic: the threads share it
    seen = set()  # tally values so far, all threads (set.add is atomic too)
    enough = threading.Event()
    started = time.monotonic()
    deadline = started + args.duration
    floor = started + args.at_least
    began = time.time()
    threads = [
        threading.Thread(target=client, args=(args, deadline, floor, totals, lock, spans, seen, enough))
        for _ in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ended = time.time()
    hosts = dict(totals.pop("hosts"))
    tally = dict(totals.pop("tally"))
    serials = dict(totals.pop("serials"))
    stopped_by = "stop-file" if os.path.exists(args.stop_file) else "tallied" if enough.is_set() else "duration"
    result = {
        "seconds": round(time.monotonic() - started, 1),
        "began": round(began, 3),
        "ended": round(ended, 3),
        "hosts": hosts,
        "stopped_by": stopped_by,
    }
    if args.instant_file:
        result["at_instant"] = in_flight(spans, args.instant_file)
    if args.tally:
        result["tally"] = tally
    if args.cacert:
        result["serials"] = serials
    result.update({key: totals.get(key, 0) for key in ("sent", "ok", "failed", "lost", "crashed")})
    result.update({key: value for key, value in totals.items() if key not in result})
    result["slowest_answer"] = round(result.get("slowest_answer", 0.0), 3)
    print(json.dumps(result, sort_keys=True))
    # Every request is one of these; anything else means the client itself miscounted.
    accounted = result["ok"] + result["failed"] + result["lost"]
    return 1 if result["crashed"] or accounted != result["sent"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
