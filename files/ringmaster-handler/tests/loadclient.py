"""A keep-alive HTTP load that accounts for every request it sends.

wrk does not count requests that never get an answer. Here each request has its own timeout
and ends as ok (2xx), error (another status, a reset, a closed connection) or lost (no
answer in time). The load is bounded both in time and in request count.
"""

import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Result:
    sent: int = 0
    ok: int = 0
    error: int = 0
    lost: int = 0
    statuses: dict = field(default_factory=dict)
    latencies: list = field(default_factory=list)

    def add(self, other: "Result") -> None:
        self.sent += other.sent
        self.ok += other.ok
        self.error += other.error
        self.lost += other.lost
        for k, v in other.statuses.items():
            self.statuses[k] = self.statuses.get(k, 0) + v
        self.latencies += other.latencies

    def __str__(self) -> str:
        return (
            f"sent {self.sent} ok {self.ok} error {self.error} lost {self.lost} "
            f"statuses {self.statuses}"
        )


def read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytes, bool]:
    """(status, body, keep-alive) of one response; extra bytes stay in ``buf``."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed before a response")
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    body = bytearray(rest)
    while len(body) < length:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed inside a body")
        body += data
    del buf[:]
    buf += body[length:]
    return status, bytes(body[:length]), headers.get("connection", "").lower() != "close"


def client(
    port: int,
    path: str,
    deadline: float,
    max_requests: int,
    timeout: float,
    result: Result,
    method: str = "GET",
) -> None:
    request = f"{method} {path} HTTP/1.1\r\nHost: load\r\nContent-Length: 0\r\n\r\n".encode()
    sock, buf = None, bytearray()
    while result.sent < max_requests and time.monotonic() < deadline:
        result.sent += 1
        began = time.monotonic()
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
                buf = bytearray()
            sock.settimeout(timeout)
            sock.sendall(request)
            status, _, keep = read_response(sock, buf)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                result.ok += 1
                result.latencies.append(time.monotonic() - began)
            else:
                result.error += 1
            if not keep:
                sock.close()
                sock = None
        except TimeoutError:
            result.lost += 1
            sock.close()
            sock = None
        except (OSError, ValueError, IndexError):
            result.error += 1
            if sock is not None:
                sock.close()
            sock = None
            time.sleep(0.01)
    if sock is not None:
        sock.close()


class Load:
    """``clients`` keep-alive connections in threads; start(), then join() for the totals."""

    def __init__(
        self,
        port: int,
        clients: int = 16,
        duration: float = 3.0,
        max_requests: int = 100_000,
        timeout: float = 3.0,
        path: str = "/",
        method: str = "GET",
    ) -> None:
        self.results = [Result() for _ in range(clients)]
        deadline = time.monotonic() + duration
        per_client = max(1, max_requests // clients)
        self.threads = [
            threading.Thread(
                target=client,
                args=(port, path, deadline, per_client, timeout, r, method),
                daemon=True,
            )
            for r in self.results
        ]
        self.bound = duration + timeout + 5

    def start(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def join(self) -> Result:
        end = time.monotonic() + self.bound
        for t in self.threads:
            t.join(max(0.1, end - time.monotonic()))
        total = Result()
        for r in self.results:
            total.add(r)
        if any(t.is_alive() for t in self.threads):
            raise RuntimeError(f"load clients did not finish: {total}")
        return total
