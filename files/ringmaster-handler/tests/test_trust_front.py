"""The front trust boundary through real components: real Mongrel2, a real dispatcher
process, test peers speaking the credit protocol on real DEALER sockets (CURVE where the
claim is about keys), real ringmaster-wsgi handlers where the claim is about them."""

import contextlib
import os
import shutil
import signal
import socket
import time

import pytest
import zmq

from dispatch_harness import DispatcherProc, Peer, front
from harness import Mongrel2, free_port, wait_for
from ringmaster_handler import curve
from ringmaster_handler.credit import HEAD_LEN, MAX_FRAME, reply_prefix_of
from ringmaster_handler.dispatcher import (
    BACKLOG_PAUSE_BYTES,
    BATCH_BYTES,
    REPLY_PIPE,
    Dispatcher,
)

needs_mongrel2 = pytest.mark.skipif(
    not (shutil.which("mongrel2") and shutil.which("m2sh")), reason="needs mongrel2 and m2sh"
)


class RawClient:
    """A keep-alive client connection that sends a request and reads what comes back."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def send(self, method: str, path: str, body: bytes = b"") -> None:
        self.sock.sendall(
            b"%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (method.encode(), path.encode(), len(body), body)
        )

    def read_all(self, timeout: float = 5.0) -> bytes:
        self.sock.settimeout(timeout)
        data = b""
        with contextlib.suppress(OSError):
            while chunk := self.sock.recv(65536):
                data += chunk
        return data

    def read_some(self, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            return b""

    def close(self) -> None:
        self.sock.close()


def take_request(peer: Peer) -> tuple[bytes, bytes]:
    frame = peer.recv()
    assert frame[:1] == b"Q", frame[:40]
    return frame[1:HEAD_LEN], frame[HEAD_LEN:]


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


# -- 1. a handler can only answer the requests it holds --------------------------------------


@needs_mongrel2
def test_a_handler_cannot_answer_another_clients_request(tmp_path):
    with front(tmp_path) as (m2, disp, bind):
        rogue, honest = Peer(bind, name="rogue"), Peer(bind, name="honest")
        victim, attacker = RawClient(m2.port), RawClient(m2.port)
        try:
            disp.wait_connected(2)
            victim.send("POST", "/victim", b"v")
            attacker.send("POST", "/attacker", b"a")
            got = {}
            for peer in (rogue, honest):
                if peer.poll(5):
                    rid, msg = take_request(peer)
                    got[b"/victim" in msg] = (peer, rid, msg)
            v_peer, v_rid, v_msg = got[True]
            a_peer, a_rid, _ = got[False]
            # Whoever holds the attacker's request writes the victim's address (and several).
            victim_prefix = reply_prefix_of(v_msg)
            sender, _, rest = victim_prefix.partition(b" ")
            conn = rest.split(b":")[1].split(b",")[0]
            forged_multi = b"%s %d:%s %s, " % (
                sender,
                len(conn) + 5,
                conn,
                b"9999",
            ) + ok(b"x")
            a_peer.send(b"M" + a_rid + victim_prefix + ok(b"FORGED"))
            a_peer.send(b"D" + a_rid + forged_multi)
            time.sleep(0.3)
            v_peer.send(b"D" + v_rid + victim_prefix + ok(b"genuine"))
            assert attacker.read_all().startswith(b"HTTP/1.1 502 ")
            answer = victim.read_some(5)
            assert answer.endswith(b"genuine") and b"FORGED" not in answer
            assert "dropped a reply from handler" in disp.log_text()
        finally:
            for thing in (rogue, honest, victim, attacker):
                thing.close()


# -- 4. per-request deadline, for real -------------------------------------------------------


@needs_mongrel2
def test_a_request_over_the_deadline_gets_504_and_its_handler_no_more_work(tmp_path):
    from test_dispatcher import Stack

    with Stack(tmp_path, workers=2, dispatcher_args=("--request-timeout", "1")) as stack:
        began = time.monotonic()
        status, _ = stack.get("/sleep?s=4")
        took = time.monotonic() - began
        assert status == 504 and 0.9 < took < 2.0, (status, took)
        log = stack.dispatcher.log_text()
        assert "made no progress for 1s in handler" in log and "(apps:router)" in log
        assert "'/sleep'" in log  # the path, escaped
        for _ in range(4):  # the other handler serves everything meanwhile
            assert stack.get("/echo", "POST", b"x", timeout=2) == (200, b"x")


# -- 6. frame size and reply backlog ---------------------------------------------------------


@needs_mongrel2
def test_a_frame_above_max_frame_disconnects_its_handler(tmp_path):
    with front(tmp_path) as (m2, disp, bind):
        big, good = Peer(bind, name="big"), None
        client = RawClient(m2.port)
        try:
            disp.wait_connected(1)
            client.send("POST", "/x", b"1")
            rid, msg = take_request(big)
            big.send(b"D" + rid + reply_prefix_of(msg) + b"x" * MAX_FRAME)
            assert client.read_all().startswith(b"HTTP/1.1 502 ")
            wait_for(lambda: " left (disconnected) holding 1" in disp.log_text(), 5, "a drop")
            good = Peer(bind, name="good")
            disp.wait_connected(1)
            client2 = RawClient(m2.port)
            client2.send("POST", "/y", b"2")
            rid, msg = take_request(good)
            good.send(b"D" + rid + reply_prefix_of(msg) + ok(b"fine"))
            assert client2.read_some(5).endswith(b"fine")
            client2.close()
        finally:
            big.close()
            client.close()
            if good is not None:
                good.close()


def vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


@needs_mongrel2
def test_a_frame_over_the_limit_drops_the_handler(tmp_path):
    with front(tmp_path) as (m2, disp, bind):
        peer = Peer(bind)
        client = RawClient(m2.port)
        try:
            disp.wait_connected(1)
            before = vm_hwm_kib(disp.proc.pid)
            # In one frame: libzmq drops the connection at the frame's size header.
            client.send("POST", "/big")
            rid, msg = take_request(peer)
            peer.send(b"D" + rid + reply_prefix_of(msg) + b"y" * (64 << 20))
            wait_for(lambda: " left (disconnected)" in disp.log_text(), 10, "the drop")
            assert client.read_all().startswith(b"HTTP/1.1 502 ")
            assert vm_hwm_kib(disp.proc.pid) - before < 16 * 1024
        finally:
            peer.close()
            client.close()


@needs_mongrel2
def test_replies_for_a_stalled_mongrel2_stay_bounded_in_bytes(tmp_path):
    """A handler that streams far more than Mongrel2 takes cannot grow the dispatcher.

    Mongrel2 is stopped (SIGSTOP), so nothing drains; the handler sends 512 MiB in frames of
    MAX_FRAME. What the dispatcher may hold is REPLY_PIPE frames in libzmq plus its own
    byte-counted backlog plus one read batch; the rest waits in the handler's process.
    """
    with front(tmp_path) as (m2, disp, bind):
        peer = Peer(bind)
        client = RawClient(m2.port)
        try:
            disp.wait_connected(1)
            client.send("GET", "/big")
            rid, msg = take_request(peer)
            prefix = reply_prefix_of(msg)
            size, piece = 512 << 20, MAX_FRAME - HEAD_LEN - len(prefix)
            before = vm_hwm_kib(disp.proc.pid)
            os.kill(m2.proc.pid, signal.SIGSTOP)
            try:
                peer.send(
                    b"M" + rid + prefix + b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size
                )
                block = b"z" * piece
                for sent in range(0, size, piece):
                    peer.send(b"M" + rid + prefix + block[: min(piece, size - sent)])
                # Long enough for the dispatcher to take in everything it is going to.
                time.sleep(4)
                grew = vm_hwm_kib(disp.proc.pid) - before
            finally:
                os.kill(m2.proc.pid, signal.SIGCONT)
            # REPLY_PIPE * MAX_FRAME + BACKLOG_PAUSE_BYTES + BATCH_BYTES is 164 MiB; the
            # allocator keeps freed 1 MiB blocks, and VmHWM is a peak. Unbounded, it was 610 MiB.
            assert REPLY_PIPE * MAX_FRAME + BACKLOG_PAUSE_BYTES + BATCH_BYTES <= 164 << 20
            print(f"dispatcher peak RSS grew {grew} KiB with Mongrel2 stopped")
            assert grew < 256 * 1024, grew
            assert disp.proc.poll() is None
        finally:
            peer.close()
            client.close()


def test_the_backlog_is_bounded_in_bytes_as_well_as_in_count():
    ctx = zmq.Context()
    d = Dispatcher("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", [])
    d.m2_out, d.router = ctx.socket(zmq.XPUB), ctx.socket(zmq.ROUTER)
    d._poller = zmq.Poller()
    d._poller.register(d.router, zmq.POLLIN)

    def mongrel2_not_taking(payload, flags, copy):
        raise zmq.Again()

    d._psend = mongrel2_not_taking
    below = (BACKLOG_PAUSE_BYTES >> 20) - 1
    try:
        for _ in range(below):
            d._to_m2(b"r" * (1 << 20))
        d._flush()
        assert dict(d._poller.sockets)[d.router] == zmq.POLLIN  # under the bound: reading on
        d._to_m2(b"r" * (2 << 20))
        d._flush()
        assert d.backlog_bytes == (below + 2) << 20 and len(d.backlog) == below + 1
        assert d.router not in dict(d._poller.sockets)  # stopped reading handlers
    finally:
        d.m2_out.close(0)
        d.router.close(0)
        ctx.term()


# -- 7. handlers per key ---------------------------------------------------------------------


@needs_mongrel2
def test_one_key_gets_at_most_64_handlers(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("dispatcher", "worker"):
        curve.generate(str(keys), name)
    (keys / "authorized").mkdir()
    shutil.copy(keys / "worker.key", keys / "authorized" / "worker.key")
    server = curve.load_keypair(str(keys / "dispatcher.key_secret"))
    mine = curve.load_keypair(str(keys / "worker.key_secret"))
    args = (
        "--curve-secret-key", str(keys / "dispatcher.key_secret"),
        "--curve-authorized-keys", str(keys / "authorized"),
    )  # fmt: skip
    with front(tmp_path, *args) as (m2, disp, bind):
        peers = []
        clients = []
        try:
            for n in range(65):
                peers.append(
                    Peer(bind, curve=(mine.public, mine.secret, server.public), name=f"p{n}")
                )
                if n < 64:
                    disp.wait_connected(n + 1)
            wait_for(lambda: "already has 64 handlers connected" in disp.log_text(), 5, "a refusal")
            assert disp.connected() == 64
            for n in range(65):
                c = RawClient(m2.port)
                c.send("POST", f"/{n}", b"x")
                clients.append(c)
            busy = [p for p in peers if p.poll(5 if p is peers[0] else 0.5)]
            assert len(busy) == 64 and peers[64] not in busy
        finally:
            for thing in peers + clients:
                thing.close()


# -- 9. an internal error still answers ------------------------------------------------------


class Fragile(Dispatcher):
    """A dispatcher with a bug on one path (fault injection into our own code)."""

    def on_request(self, msg):
        if b" /crash " in msg:
            raise RuntimeError("a bug")
        super().on_request(msg)


def test_an_exception_on_a_request_still_answers_its_client(caplog):
    ctx = zmq.Context()
    d = Fragile("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", [])
    url = f"inproc://m2-{id(d)}"
    push, d.m2_in = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    d.m2_in.bind(url)
    push.connect(url)
    try:
        headers = b'{"PATH":"/crash","METHOD":"POST"}'
        push.send(b"sender 17 /crash %d:%s,0:," % (len(headers), headers))
        d.m2_in.poll(2000)
        d._read_requests()
        assert d.backlog[0].startswith(b"sender 2:17, HTTP/1.1 500 ")
        assert d.backlog[1] == b"sender 2:17, "
        assert "internal error on a request" in caplog.text
    finally:
        push.close(0)
        d.m2_in.close(0)
        ctx.term()


# -- Mongrel2 specs as ipc:// paths -------------------------------------------------------------


@needs_mongrel2
def test_the_dispatcher_takes_ipc_specs(tmp_path):
    route = {"send": "ipc://run/app-send", "recv": "ipc://run/app-recv", "ident": "ipc-front"}
    m2 = Mongrel2(tmp_path, {"/": {**route, "protocol": None}})
    # Mongrel2 (test mode: its chroot is its working directory) resolves them inside it.
    absolute = {k: f"ipc://{tmp_path}/{v[6:]}" if k != "ident" else v for k, v in route.items()}
    bind = f"tcp://127.0.0.1:{free_port()}"
    disp = DispatcherProc(tmp_path, absolute, bind)
    peer = None
    try:
        m2.start()
        disp.start()
        peer = Peer(bind)
        disp.wait_connected(1)
        client = RawClient(m2.port)
        client.send("POST", "/ipc", b"x")
        rid, msg = take_request(peer)
        peer.send(b"D" + rid + reply_prefix_of(msg) + ok(b"over ipc"))
        assert client.read_some(5).endswith(b"over ipc")
        client.close()
    finally:
        if peer is not None:
            peer.close()
        disp.stop()
        m2.stop()
