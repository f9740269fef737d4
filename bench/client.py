#!/usr/bin/env python3
"""bench/whole.py's own load client (stdlib asyncio): every request it sends is accounted for.

    python3 bench/client.py PORT MODE [--connections N] [--duration S] [--timeout S] ...

Modes (one JSON line on stdout at the end; SIGTERM ends a run early and still reports):
- mix:    keep-alive clients, each request drawn from --mix (path:weight,...); latency
          percentiles per path, req/s, and counts: ok, error (refused, reset, non-200), lost
          (no complete response within --timeout).
- upload: clients POSTing --body-size bytes to /upload, keep-alive: MB/s, p50/p99.
- idle:   opens --connections keep-alive connections, one GET each, then holds them open
          and sends nothing until stopped: how many were answered, and how many the server
          closed while idle.
- slow:   clients reading GET /big at --rate bytes/s each (small socket buffers), over and
          over until stopped: responses completed, errors, bytes.
"""

import argparse
import asyncio
import json
import random
import signal
import socket
import sys
import time


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * pct / 100))] * 1000


class Stats:
    def __init__(self):
        self.counts = {"sent": 0, "ok": 0, "error": 0, "lost": 0}
        self.latency: dict[str, list[float]] = {}
        self.bytes = 0
        self.errors: dict[str, int] = {}

    def error(self, kind: str, exc: BaseException | str) -> None:
        self.counts[kind] += 1
        text = exc if isinstance(exc, str) else type(exc).__name__
        self.errors[text] = self.errors.get(text, 0) + 1


async def read_response(reader: asyncio.StreamReader, pace: float = 0) -> tuple[int, int, bool]:
    """Read one response; return (status, body bytes, server keeps the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    keep = headers.get("connection", "").lower() != "close" and lines[0].startswith("HTTP/1.1")
    if "content-length" in headers:
        left = int(headers["content-length"])
        got = 0
        while left > 0:
            chunk = await reader.read(min(left, 5120 if pace else 1 << 16))
            if not chunk:
                raise ConnectionError("closed inside a body")
            got += len(chunk)
            left -= len(chunk)
            if pace:
                await asyncio.sleep(len(chunk) / pace)
        return status, got, keep
    if headers.get("transfer-encoding", "").lower() == "chunked":
        got = 0
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            got += size
            if size == 0:
                return status, got, keep
            del data
    body = await reader.read()
    return status, len(body), False


async def connect(port: int, rcvbuf: int = 0):
    if rcvbuf:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return await asyncio.open_connection(sock=sock, limit=rcvbuf)
    return await asyncio.open_connection("127.0.0.1", port)


def request(path: str, body_size: int = 0) -> bytes:
    if body_size:
        return (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {body_size}\r\n\r\n").encode()  # fmt: skip
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


async def client_loop(args, stats: Stats, stop: asyncio.Event, paths, weights) -> None:
    reader = writer = None
    body = b"u" * args.body_size if args.mode == "upload" else b""
    pace = args.rate if args.mode == "slow" else 0
    rcvbuf = 16384 if pace else 0
    while not stop.is_set():
        path = random.choices(paths, weights)[0]
        stats.counts["sent"] += 1
        began = time.monotonic()
        try:
            async with asyncio.timeout(args.timeout):
                if writer is None:
                    reader, writer = await connect(args.port, rcvbuf)
                writer.write(request(path, len(body)))
                if body:
                    view = memoryview(body)
                    for i in range(0, len(body), 1 << 16):
                        writer.write(view[i : i + (1 << 16)])
                        await writer.drain()
                await writer.drain()
                status, got, keep = await read_response(reader, pace)
            if status != 200:
                stats.error("error", f"HTTP {status}")
            else:
                stats.counts["ok"] += 1
                stats.latency.setdefault(path, []).append(time.monotonic() - began)
                stats.bytes += got + len(body)
        except TimeoutError:
            stats.error("lost", "timeout")
            keep = False
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            stats.error("error", exc)
            keep = False
        if not keep and writer is not None:
            writer.close()
            writer = reader = None
    if writer is not None:
        writer.close()


async def idle(args, stats: Stats, stop: asyncio.Event) -> dict:
    """Open connections, one request each, then hold them without a byte more."""
    held: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    gate = asyncio.Semaphore(200)

    async def open_one():
        async with gate:
            stats.counts["sent"] += 1
            try:
                async with asyncio.timeout(args.timeout):
                    reader, writer = await connect(args.port)
                    writer.write(request("/"))
                    status, _, keep = await read_response(reader)
                if status == 200 and keep:
                    stats.counts["ok"] += 1
                    held.append(writer)
                    readers.append(reader)
                else:
                    stats.error("error", f"HTTP {status} keep={keep}")
                    writer.close()
            except TimeoutError:
                stats.error("lost", "timeout")
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
                stats.error("error", exc)

    began = time.monotonic()
    tasks = [asyncio.create_task(open_one()) for _ in range(args.connections)]
    # A server that serves one connection at a time per worker never answers most of them:
    # give up on what is not open by the deadline (counted lost).
    _, pending = await asyncio.wait(tasks, timeout=args.open_deadline)
    for task in pending:
        task.cancel()
    stats.counts["lost"] += len(pending)
    stats.counts["sent"] = args.connections
    if pending:
        stats.errors["not open by the deadline"] = len(pending)
    opened = time.monotonic() - began
    print(json.dumps({"ready": len(held)}), flush=True)
    await stop.wait()
    closed = sum(1 for r in readers if r.at_eof() or r.exception() is not None)
    for w in held:
        w.close()
    return {"held": len(held), "closed_by_server": closed, "open_seconds": round(opened, 2)}


async def main_async(args) -> dict:
    stats = Stats()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if args.duration:
        loop.call_later(args.duration, stop.set)
    began = time.monotonic()
    extra: dict = {}
    if args.mode == "idle":
        extra = await idle(args, stats, stop)
    else:
        mix = [(p, float(w)) for p, _, w in (x.partition(":") for x in args.mix.split(","))]
        paths = [p for p, _ in mix]
        weights = [w or 1.0 for _, w in mix]
        if args.mode == "upload":
            paths, weights = ["/upload"], [1.0]
        elif args.mode == "slow":
            paths, weights = ["/big"], [1.0]
        tasks = [asyncio.create_task(client_loop(args, stats, stop, paths, weights))
                 for _ in range(args.connections)]  # fmt: skip
        await stop.wait()
        # Requests under way get their own timeout to finish (and be counted); a slow reader
        # is a background load: what it is reading when told to stop is only "unfinished".
        grace = 1.0 if args.mode == "slow" else args.timeout + 1
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        extra = {"unfinished": len(pending)}
    wall = time.monotonic() - began
    out = {**stats.counts, **extra, "seconds": round(wall, 2), "errors_by_kind": stats.errors}
    done = sum(len(v) for v in stats.latency.values())
    out["rps"] = done / wall if wall else 0.0
    out["mb_per_s"] = stats.bytes / wall / 1e6 if wall else 0.0
    every = [x for v in stats.latency.values() for x in v]
    out["p50"], out["p99"] = percentile(every, 50), percentile(every, 99)
    out["by_path"] = {
        p: {"n": len(v), "p50": percentile(v, 50), "p99": percentile(v, 99)} for p, v in stats.latency.items()
    }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("port", type=int)
    p.add_argument("mode", choices=("mix", "upload", "idle", "slow"))
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--duration", type=float, default=0, help="seconds (0: until SIGTERM)")
    p.add_argument("--timeout", type=float, default=5.0, help="per request, seconds")
    p.add_argument("--mix", default="/:1", help="path:weight,... (mix mode)")
    p.add_argument("--body-size", type=int, default=5 << 20, help="upload mode, bytes")
    p.add_argument("--open-deadline", type=float, default=30, help="idle mode, seconds")
    p.add_argument("--rate", type=float, default=50_000, help="slow mode, bytes/s per client")
    args = p.parse_args()
    print(json.dumps(asyncio.run(main_async(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
