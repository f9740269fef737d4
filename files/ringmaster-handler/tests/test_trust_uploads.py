"""Streamed uploads (Mongrel2 ``upload.stream=1``) through a real dispatcher and real Mongrel2.

The handler is a test peer speaking protocol 2 by hand, so what reaches it (S, U, E, X) and
what it grants (K) can be checked exactly.
"""

import hashlib
import shutil
import socket
import struct
import threading
import time

import pytest

from dispatch_harness import Peer, front, m2_sleeping_connections
from harness import wait_for
from ringmaster_handler.credit import CONSUMED_LEN, HEAD_LEN, UPLOAD_WINDOW, reply_prefix_of

pytestmark = pytest.mark.skipif(
    not (shutil.which("mongrel2") and shutil.which("m2sh")), reason="needs mongrel2 and m2sh"
)

BIG = 5_000_000


def streaming_front(root, *dispatcher_args):
    return front(root, *dispatcher_args, settings={"upload.stream": 1})


class Client(threading.Thread):
    """Sends a request with a big body from a thread, reading the response as it goes."""

    def __init__(self, port: int, size: int, chunked: bool = False, stop_after: int | None = None):
        super().__init__(daemon=True)
        self.port, self.size, self.chunked, self.stop_after = port, size, chunked, stop_after
        self.data = b""
        self.sent = 0
        self.closed = False
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)

    def run(self) -> None:
        reader = threading.Thread(target=self._read, daemon=True)
        reader.start()
        head = b"POST /up HTTP/1.1\r\nHost: x\r\n"
        if self.chunked:
            head += b"Transfer-Encoding: chunked\r\n\r\n"
        else:
            head += b"Content-Length: %d\r\n\r\n" % self.size
        try:
            self.sock.sendall(head)
            block = bytes(range(256)) * 256
            limit = self.size if self.stop_after is None else self.stop_after
            while self.sent < limit:
                piece = block[: min(len(block), limit - self.sent)]
                if self.chunked:
                    self.sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    self.sock.sendall(piece)
                self.sent += len(piece)
            if self.stop_after is not None:
                # (shutdown: a plain close leaves the connection up while _read waits in recv)
                self.sock.shutdown(socket.SHUT_RDWR)
                self.sock.close()
                return
            if self.chunked:
                self.sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        reader.join(20)

    def _read(self) -> None:
        try:
            while chunk := self.sock.recv(65536):
                self.data += chunk
            self.closed = True
        except OSError:
            self.closed = True

    def body(self) -> bytes:
        block = bytes(range(256)) * 256
        return (block * (self.size // len(block) + 1))[: self.size]


def serve_upload(peer: Peer, consume_delay: float = 0.0) -> dict:
    """Take one streamed request, consume its body with K credits, answer its sha256."""
    frame = peer.recv()
    assert frame[:1] == b"S", frame[:40]
    rid = frame[1:HEAD_LEN]
    msg = frame[HEAD_LEN:]
    _head, _, rest = msg.partition(b"},")
    length, _, rest = rest.partition(b":")
    first = rest[: int(length)]
    digest = hashlib.sha256(first)
    got, held, max_held, frames = len(first), len(first), len(first), 1
    peer.send(b"K" + rid + CONSUMED_LEN.pack(len(first)))
    held = 0
    while True:
        frame = peer.recv()
        assert frame[1:HEAD_LEN] == rid
        frames += 1
        if frame[:1] == b"E":
            break
        assert frame[:1] == b"U", frame[:40]
        data = frame[HEAD_LEN:]
        digest.update(data)
        got += len(data)
        held += len(data)
        max_held = max(max_held, held)
        if consume_delay:
            time.sleep(consume_delay)
        peer.send(b"K" + rid + CONSUMED_LEN.pack(len(data)))
        held -= len(data)
    body = digest.hexdigest().encode()
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    peer.send(b"D" + rid + reply_prefix_of(msg) + reply)
    return {"got": got, "max_held": max_held, "frames": frames}


def test_a_streamed_upload_reaches_a_protocol_2_handler_with_credits(tmp_path):
    with streaming_front(tmp_path) as (m2, disp, bind):
        old = Peer(bind, version=1, name="old")
        new = Peer(bind, version=2, name="new")
        try:
            disp.wait_connected(2)
            client = Client(m2.port, BIG)
            client.start()
            result = serve_upload(new, consume_delay=0.0005)
            client.join(30)
            assert result["got"] == BIG
            assert client.data.endswith(hashlib.sha256(client.body()).hexdigest().encode())
            assert client.data.startswith(b"HTTP/1.1 200 OK")
            # What a handler holds unconsumed never exceeds the window (plus one message).
            assert result["max_held"] <= UPLOAD_WINDOW + 20000
            assert not old.poll(0.1)  # a protocol 1 handler never saw it
            # A chunked body too.
            client = Client(m2.port, 300_000, chunked=True)
            client.start()
            assert serve_upload(new)["got"] == 300_000
            client.join(30)
            assert client.data.endswith(hashlib.sha256(client.body()).hexdigest().encode())
        finally:
            old.close()
            new.close()


def test_a_body_above_max_body_size_gets_413_and_mongrel2_reads_no_more(tmp_path):
    with streaming_front(tmp_path, "--max-body-size", "1000000") as (m2, disp, bind):
        peer = Peer(bind)
        try:
            disp.wait_connected(1)
            client = Client(m2.port, BIG)
            client.start()
            client.join(20)
            assert client.data.startswith(b"HTTP/1.1 413 "), client.data[:80]
            assert b"Connection: close" in client.data and client.closed
            assert client.sent < BIG  # Mongrel2 stopped reading: the client could not finish
            assert not peer.poll(0.2)  # the handler never heard of it
            wait_for(lambda: m2_sleeping_connections(tmp_path) == 0, 5, "the upload task to end")
            # Chunked: refused when the count passes the limit; the handler is told to drop it.
            client = Client(m2.port, 3_000_000, chunked=True)
            client.start()
            frame = peer.recv()
            assert frame[:1] == b"S"
            rid = frame[1:HEAD_LEN]
            seen = []
            while not seen or seen[-1][:1] == b"U":
                seen.append(peer.recv())
                if seen[-1][:1] == b"U":
                    peer.send(b"K" + rid + CONSUMED_LEN.pack(len(seen[-1]) - HEAD_LEN))
            assert seen[-1] == b"X" + rid
            assert sum(len(f) - HEAD_LEN for f in seen[:-1]) <= 1_000_000 + UPLOAD_WINDOW
            peer.send(b"F" + rid)
            client.join(20)
            assert client.data.startswith(b"HTTP/1.1 413 ") and client.closed
            wait_for(lambda: m2_sleeping_connections(tmp_path) == 0, 5, "the upload task to end")
            assert "Traceback" not in disp.log_text()
        finally:
            peer.close()


def test_a_client_that_leaves_mid_upload_is_aborted_in_the_handler(tmp_path):
    with streaming_front(tmp_path) as (m2, disp, bind):
        peer = Peer(bind)
        try:
            disp.wait_connected(1)
            client = Client(m2.port, BIG, stop_after=600_000)
            client.start()
            frame = peer.recv()
            rid = frame[1:HEAD_LEN]
            kinds = []
            while True:
                f = peer.recv()
                kinds.append(f[:1])
                if f[:1] == b"U":
                    peer.send(b"K" + rid + CONSUMED_LEN.pack(len(f) - HEAD_LEN))
                else:
                    break
            assert f == b"X" + rid, kinds[-3:]
            peer.send(b"F" + rid)  # legitimate after X: no 502 anywhere
            time.sleep(0.2)
            assert "502" not in disp.log_text() and "Traceback" not in disp.log_text()
        finally:
            peer.close()


def test_a_handler_dying_mid_upload_means_502_and_the_upload_cancelled(tmp_path):
    with streaming_front(tmp_path) as (m2, disp, bind):
        peer = Peer(bind)
        try:
            disp.wait_connected(1)
            client = Client(m2.port, BIG)
            client.start()
            frame = peer.recv()
            assert frame[:1] == b"S"
            peer.recv()  # some of the body arrives; we never grant more
            wait_for(lambda: m2_sleeping_connections(tmp_path) == 1, 5, "the upload task")
        finally:
            peer.close()  # the handler dies
        client.join(20)
        assert client.data.startswith(b"HTTP/1.1 502 "), client.data[:80]
        assert client.closed
        # Without the cancel, Mongrel2's upload task would sleep on credits forever.
        wait_for(lambda: m2_sleeping_connections(tmp_path) == 0, 5, "the upload task to end")


def test_k_frames_carry_little_endian_counts():
    assert CONSUMED_LEN.pack(1) == struct.pack("<I", 1)
