"""A handler's last reply and its disconnect, read in the worst order, with real sockets.

A handler that is recycled sends its last reply and closes its connection at once. libzmq
queues the reply on the dispatcher's ROUTER and reports the disconnect on the monitor socket;
the dispatcher reads the two sockets at different moments (the monitor at housekeeping). If
it forgot the handler on the event before reading the reply, the request would be retried
(run twice) and the reply dropped as a stranger's. Here the monitor is read first on purpose.
"""

import socket
import time

import pytest
import zmq

from harness import free_port
from ringmaster_handler.credit import HEAD_LEN, hello_frame, reply_prefix_of
from ringmaster_handler.dispatcher import Dispatcher

REQUEST = b'm2 7 / 59:{"PATH":"/","host":"x","METHOD":"GET","VERSION":"HTTP/1.1"},0:,'
REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _wait(sock: zmq.Socket, what: str) -> None:
    if not sock.poll(5000, zmq.POLLIN):
        pytest.fail(f"nothing arrived: {what}")


@pytest.fixture
def wired():
    """A dispatcher with its sockets open, a fake Mongrel2 (PUSH + XSUB) and one handler."""
    ctx = zmq.Context(io_threads=1)
    send_url, recv_url, bind_url = (f"tcp://127.0.0.1:{free_port()}" for _ in range(3))
    push = ctx.socket(zmq.PUSH)
    push.bind(send_url)
    sub = ctx.socket(zmq.XSUB)
    sub.bind(recv_url)
    wake_r, wake_w = socket.socketpair()
    # (The subscription is sent once the dispatcher is connected, as Mongrel2's arrives.)
    d = Dispatcher(send_url, recv_url, [bind_url], prefetch=0, subscribe_timeout=0.3)
    d._open_sockets(ctx, wake_r)
    sub.send(b"\x01m2")
    _wait(d.m2_out, "the subscription")
    d.m2_out.recv()
    handler = ctx.socket(zmq.DEALER)
    handler.setsockopt(zmq.LINGER, 1000)
    handler.connect(bind_url)
    handler.send(hello_frame({"pid": 1, "host": "test"}))
    _wait(d.router, "the handler's hello")
    d._read_workers()
    assert len(d.workers) == 1
    yield d, push, sub, handler
    d._close_sockets()
    for sock in (push, sub, handler):
        sock.close(0)
    wake_r.close()
    wake_w.close()
    ctx.term()


def test_the_last_reply_is_read_before_the_handler_is_forgotten(wired):
    d, push, sub, handler = wired
    push.send(REQUEST)
    _wait(d.m2_in, "the request")
    d._read_requests()
    _wait(handler, "the request at the handler")
    frame = handler.recv()
    assert frame[:1] == b"Q"
    handler.send(b"D" + frame[1:HEAD_LEN] + reply_prefix_of(REQUEST) + REPLY)
    handler.close()  # (lingers until the reply is out, then the connection closes)
    _wait(d.monitor, "the disconnect event")
    time.sleep(0.05)  # (both are queued now: the reply came before the close)

    d._read_monitor()  # as housekeeping does, before the ROUTER was read again
    d._flush()

    assert d.workers == {}
    assert d.stats["retries"] == 0, "the request was retried: its reply was not read first"
    assert d.stats["failed"] == 0
    assert len(d.queue) == 0
    _wait(sub, "the reply at Mongrel2")
    assert sub.recv() == reply_prefix_of(REQUEST) + REPLY


def test_a_new_handler_on_the_same_socket_is_not_the_one_forgotten(wired):
    """The drain before a disconnect may read the hello of a new handler whose connection got
    the old one's file descriptor (a recycled handler's successor): the old handler goes, the
    new one stays."""
    d, _push, _sub, handler = wired
    (old,) = d.workers.values()
    handler.close()
    _wait(d.monitor, "the disconnect event")
    newcomer = handler.context.socket(zmq.DEALER)
    newcomer.setsockopt(zmq.LINGER, 0)
    newcomer.connect(d.router.getsockopt(zmq.LAST_ENDPOINT).decode())
    newcomer.send(hello_frame({"pid": 2, "host": "test"}))
    _wait(d.router, "the newcomer's hello")
    time.sleep(0.05)
    try:
        d._read_monitor()  # housekeeping: the old one's event, the newcomer's hello unread
        (new,) = d.workers.values()
        assert new is not old and new.fd == old.fd, "the precondition: the same descriptor"
        assert new.name == "test:2"
    finally:
        newcomer.close()
