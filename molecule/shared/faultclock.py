#!/usr/bin/env python3
"""Inject a fault and time the recovery, in one process on the host itself.

Sends a signal to the given PIDs (or runs a shell command: the fault), then
polls until a URL answers 200 or a command exits 0, and prints {"seconds": ..., "at": ...}: from the signal
to the first success, and when the fault hit (seconds since the epoch, the clock every container on the machine
shares, so loadcount.py can count the requests in flight then). Polling from Ansible would measure the
connection's latency instead.
"""

import argparse
import json
import os
import signal
import subprocess
import time
import urllib.request


def recovered(args) -> bool:
    if args.until_http:
        try:
            with urllib.request.urlopen(args.until_http, timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False
    return subprocess.run(args.until_cmd, shell=True, capture_output=True, check=False).returncode == 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--signal", default="KILL", help="signal name without SIG (default KILL)")
    parser.add_argument("--pid", type=int, action="append", default=[], help="may be repeated")
    parser.add_argument("--run", metavar="SHELL", help="a command that is the fault, run after the signals")
    until = parser.add_mutually_exclusive_group(required=True)
    until.add_argument("--until-http", metavar="URL")
    until.add_argument("--until-cmd", metavar="SHELL")
    parser.add_argument("--settle", type=float, default=0.0, help="seconds to wait before polling")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    sig = getattr(signal, f"SIG{args.signal}")
    started = time.monotonic()
    at = round(time.time(), 3)
    for pid in args.pid:
        os.kill(pid, sig)
    if args.run and subprocess.run(args.run, shell=True, check=False).returncode != 0:
        print(json.dumps({"seconds": None, "at": at, "error": f"the fault command failed: {args.run}"}))
        return 1
    time.sleep(args.settle)
    while time.monotonic() - started < args.timeout:
        if recovered(args):
            print(json.dumps({"seconds": round(time.monotonic() - started, 3), "at": at}))
            return 0
        time.sleep(0.05)
    print(json.dumps({"seconds": None, "at": at, "error": f"not recovered within {args.timeout} s"}))
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
