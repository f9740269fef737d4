#!/usr/bin/env python3
"""What one libzmq message between two processes costs: CPU of both, per one-way message.

    python3 bench/hop.py [--messages 50000]      (with a python that has pyzmq)

Two processes, PUSH/PULL each way, 500-byte messages, over tcp:// loopback and ipc://, once
ping-pong (one message in flight: every message is a full wake-up chain, app thread -> libzmq
I/O thread -> kernel -> I/O thread -> app thread) and once with 16 in flight (like 16
keep-alive clients: wake-ups shared by several messages). The dispatcher adds two such
messages to every request.
"""

import argparse
import os
import resource
import socket
import tempfile
import time

import zmq


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def echo(url_in: str, url_out: str, n: int) -> None:
    ctx = zmq.Context(io_threads=1)
    pull = ctx.socket(zmq.PULL)
    pull.bind(url_in)
    push = ctx.socket(zmq.PUSH)
    push.connect(url_out)
    for _ in range(n):
        push.send(pull.recv())
    time.sleep(0.2)
    os._exit(0)


def measure(a_url: str, b_url: str, n: int, window: int) -> tuple[float, float]:
    warm = 1000
    pid = os.fork()
    if pid == 0:
        echo(b_url, a_url, n + warm)
    ctx = zmq.Context(io_threads=1)
    pull = ctx.socket(zmq.PULL)
    pull.bind(a_url)
    push = ctx.socket(zmq.PUSH)
    push.connect(b_url)
    msg = b"x" * 500
    for _ in range(warm):
        push.send(msg)
        pull.recv()
    me0 = resource.getrusage(resource.RUSAGE_SELF)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    sent = 0
    for _ in range(window):
        push.send(msg)
        sent += 1
    for _ in range(n):
        pull.recv()
        if sent < n:
            push.send(msg)
            sent += 1
    wall = time.perf_counter() - began
    me1 = resource.getrusage(resource.RUSAGE_SELF)
    os.waitpid(pid, 0)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = me1.ru_utime + me1.ru_stime - me0.ru_utime - me0.ru_stime
    kid = kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime
    kid *= n / (n + warm)  # the echo's CPU over its whole life, warm-up included
    ctx.destroy(0)
    return n / wall, (me + kid) / (2 * n) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=50000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        urls = {
            "tcp": (f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"),
            "ipc": (f"ipc://{tmp}/a", f"ipc://{tmp}/b"),
        }
        for transport, (a_url, b_url) in urls.items():
            for window in (1, 16):
                rate, cpu = measure(a_url, b_url, args.messages, window)
                print(
                    f"{transport} {window:2} in flight: {rate:7.0f} round trips/s, "
                    f"{cpu:5.1f} us CPU per one-way message (both processes)"
                )


if __name__ == "__main__":
    main()
