"""The dispatcher's side of credit protocol v2, played by a test: a real ZeroMQ ROUTER.

The real ringmaster-dispatcher is changed in parallel; this peer speaks the protocol as
credit.py documents it, so handler processes can be tested against it. Mongrel2 messages
are built here too (``m2_request``); an end-to-end test through real Mongrel2 with
``upload.stream=1`` only needs a ``DispatcherProc`` instead of this peer.
"""

import json
import time
from dataclasses import dataclass, field

import zmq

from harness import free_port
from ringmaster_handler.credit import (
    CONSUMED_LEN,
    HEAD_LEN,
    MAX_FRAME,
    UPLOAD_WINDOW,
    parse_hello,
    rid_bytes,
)
from ringmaster_handler.netstrings import write_netstring
from ringmaster_handler.request import parse_message

SENDER = b"0c7e6d0e-0000-4000-8000-00000000m2"


def m2_request(conn_id: int, path: str, method: str = "GET", headers: dict | None = None,
               body: bytes = b"", version: str = "HTTP/1.1") -> bytes:  # fmt: skip
    """A Mongrel2 request message with JSON headers, as Mongrel2 1.12 writes it."""
    path, _, query = path.partition("?")
    h = {"PATH": path, "QUERY": query, "METHOD": method, "VERSION": version, "URI": path,
         "host": "localhost", "PATTERN": "/", "REMOTE_ADDR": "127.0.0.1",
         **(headers or {})}  # fmt: skip
    raw = json.dumps(h).encode()
    return b"%s %d %s %s%s" % (SENDER, conn_id, path.encode(), write_netstring(raw),
                               write_netstring(body))  # fmt: skip


def prefix_of(conn_id: int) -> bytes:
    return b"%s %d:%d, " % (SENDER, len(str(conn_id)), conn_id)


@dataclass
class Answer:
    """What the handler sent for one request."""

    payloads: list[bytes] = field(default_factory=list)  # M and D payloads, in order
    end: bytes = b""  # b"D" or b"F" once finished
    frame_sizes: list[int] = field(default_factory=list)

    def http(self, conn_id: int) -> tuple[int, dict, bytes, bool]:
        """(status, headers, body, closed) of the HTTP reply the payloads make."""
        prefix = prefix_of(conn_id)
        assert all(p.startswith(prefix) for p in self.payloads), "a reply with another prefix"
        parts = [p[len(prefix) :] for p in self.payloads]
        closed = b"" in parts
        data = b"".join(parts)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v for k, v in (ln.split(": ", 1) for ln in lines[1:])}
        return int(lines[0].split()[1]), headers, body, closed


class V2Peer:
    """One dispatcher endpoint: bind, wait for a handler's hello, send frames, sort replies."""

    def __init__(self) -> None:
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        # As the dispatcher does: a handler sending a larger frame is disconnected.
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
        self.url = f"tcp://127.0.0.1:{free_port()}"
        self.sock.bind(self.url)
        self.worker: bytes | None = None
        self.hellos: list[dict] = []
        self.answers: dict[bytes, Answer] = {}
        self.finished: list[bytes] = []  # rids in the order their D/F came
        self.credits: dict[bytes, int] = {}
        self.sent: dict[bytes, int] = {}  # upload bytes sent per rid
        self._next = 1

    def close(self) -> None:
        self.sock.close()

    stop = close  # (for harness.running)

    def rid(self) -> bytes:
        self._next += 1
        return rid_bytes(self._next)

    # -- receiving ---------------------------------------------------------------------------

    def pump(self, timeout: float = 0.0) -> int:
        """Sort everything that arrives within ``timeout`` seconds; return frames taken."""
        n = 0
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            if not self.sock.poll(left * 1000 if n == 0 else 0):
                return n
            ident, frame = self.sock.recv_multipart()
            n += 1
            self._sort(ident, frame)

    def _sort(self, ident: bytes, frame: bytes) -> None:
        kind, rid = frame[:1], frame[1:HEAD_LEN]
        if kind == b"H":
            self.worker = ident
            self.hellos.append(parse_hello(frame))
        elif kind == b"K":
            (n,) = CONSUMED_LEN.unpack(frame[HEAD_LEN:])
            self.credits[rid] = self.credits.get(rid, 0) + n
        elif kind in (b"M", b"D", b"F"):
            answer = self.answers.setdefault(rid, Answer())
            answer.frame_sizes.append(len(frame))
            if kind != b"F":
                answer.payloads.append(frame[HEAD_LEN:])
            if kind != b"M":
                answer.end = kind
                self.finished.append(rid)

    def wait(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out waiting for {what}")
            self.pump(min(left, 0.1))
        return predicate()

    def wait_hello(self, timeout: float = 15) -> dict:
        self.wait(lambda: self.hellos, timeout, "a hello")
        return self.hellos[-1]

    def answer(self, rid: bytes, timeout: float = 15) -> Answer:
        self.wait(lambda: rid in self.answers and self.answers[rid].end, timeout, "an answer")
        return self.answers[rid]

    # -- sending ------------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        assert self.worker is not None, "no handler said hello"
        self.sock.send_multipart([self.worker, frame])

    def request(self, msg: bytes) -> bytes:
        rid = self.rid()
        self.send(b"Q" + rid + msg)
        return rid

    def stream(self, msg: bytes) -> bytes:
        """S: the first message of a request whose body follows (its netstring: first bytes)."""
        rid = self.rid()
        self.sent[rid] = len(parse_message(msg).body)
        self.send(b"S" + rid + msg)
        return rid

    def upload(self, rid: bytes, data: bytes, piece: int = 65536, timeout: float = 15) -> None:
        """U frames, never more than UPLOAD_WINDOW bytes beyond the handler's credits."""
        deadline = time.monotonic() + timeout
        for start in range(0, len(data), piece):
            part = data[start : start + piece]
            while self.sent[rid] + len(part) - self.credits.get(rid, 0) > UPLOAD_WINDOW:
                if time.monotonic() > deadline:
                    raise TimeoutError("the handler gave no credit")
                self.pump(0.05)
            self.send(b"U" + rid + part)
            self.sent[rid] += len(part)
            self.pump()

    def end(self, rid: bytes) -> None:
        self.send(b"E" + rid)
