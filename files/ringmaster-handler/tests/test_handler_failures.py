"""Every request gets an answer, whatever raises while it is served; log lines stay lines.

Real Mongrel2 and handler processes; a test-controlled front (real ZeroMQ sockets) for
messages Mongrel2 would never send.
"""

import os
import re
import shutil
import socket

import pytest
import zmq

from harness import Handler, Mongrel2, free_port, handler_route, running, wait_for
from ringmaster_handler.netstrings import write_netstring

pytestmark = pytest.mark.skipif(
    not (shutil.which("mongrel2") and shutil.which("m2sh")), reason="needs mongrel2 and m2sh"
)


def spec_with_ident(route):
    return route["send"].replace("tcp://", f"tcp://{route['ident']}@")


def raw_exchange(port, data: bytes, timeout=5.0) -> bytes:
    """Send raw bytes; read until the server closes (a TimeoutError if it never answers)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while block := s.recv(65536):
            chunks.append(block)
        return b"".join(chunks)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("fail")
    route = handler_route()
    m2 = Mongrel2(root, {"/": route})
    handler = Handler(root, "apps:router", spec_with_ident(route), route["recv"],
                      "--upload-root", str(root))  # fmt: skip
    with running(m2.start(), handler.start()):
        yield m2, handler, root


def test_bad_response_headers_give_500(stack):
    m2, handler, _ = stack
    reply = raw_exchange(
        m2.port, b"GET /bad-header HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 500 ")
    assert b"Injected" not in reply and b"never sent" not in reply
    assert "CR, LF or NUL" in handler.log_text()


def test_close_raising_after_the_body_still_answers(stack):
    m2, _, _ = stack
    reply = raw_exchange(m2.port, b"GET /close-raises HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b"\r\n\r\nbody")
    conn = m2.connection()
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"Hello, World!"


def test_a_path_with_a_newline_makes_one_log_line(stack):
    m2, handler, _ = stack
    forged = "2030-01-01 00:00:00,000 [1] INFO ringmaster_handler.loop: forged"
    path = "/boom-path%0a" + forged.replace(" ", "%20").replace("[", "%5B").replace("]", "%5D")
    reply = raw_exchange(m2.port, f"GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 500 ")
    wait_for(lambda: "no such thing" in handler.log_text(), 5, "the failure to be logged")
    lines = handler.log_text().splitlines()
    assert not [ln for ln in lines if ln.startswith("2030-01-01")], "a forged log line"
    # Every line is a record (timestamp first) or an indented traceback line.
    record = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[\d+\] [A-Z]+ ")
    assert all(record.match(ln) or ln.startswith("  | ") for ln in lines), lines
    records = [ln for ln in lines if record.match(ln) and "app failed on" in ln]
    assert sum("/boom-path" in ln for ln in records) == 1
    assert "\\n2030-01-01" in handler.log_text()  # the newline, escaped


def test_an_upload_notice_that_raises_gets_500(tmp_path):
    route = handler_route()
    m2 = Mongrel2(tmp_path, {"/": route})
    handler = Handler(tmp_path, "faulty_apps:app", spec_with_ident(route), route["recv"],
                      "--upload-root", str(tmp_path))  # fmt: skip
    with running(m2.start(), handler.start()):
        body = os.urandom(30000)
        head = b"POST /digest HTTP/1.1\r\nHost: x\r\nContent-Length: 30000\r\n\r\n"
        reply = raw_exchange(m2.port, head + body, timeout=10)
        assert reply.startswith(b"HTTP/1.1 500 ")
        assert b"Connection: close" in reply


def test_an_unparsable_message_is_answered_400(tmp_path):
    """Through a front the test controls: Mongrel2 itself never sends these."""
    push_port, sub_port = free_port(), free_port()
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    sub = ctx.socket(zmq.XSUB)  # (see test_integration.test_garbage_then_a_correct_answer)
    try:
        push.bind(f"tcp://127.0.0.1:{push_port}")
        sub.bind(f"tcp://127.0.0.1:{sub_port}")
        handler = Handler(tmp_path, "apps:router", f"tcp://evil-front@127.0.0.1:{push_port}",
                          f"tcp://127.0.0.1:{sub_port}", "--subscribe-timeout", "0.5")  # fmt: skip
        handler.start(wait=False)

        def subscribed():
            sub.send(b"\x01evil-front")
            return handler._serving()

        with running(handler):
            wait_for(subscribed, 15, "the handler to serve", interval=0.05)
            push.send(b'evil-front 43 / 10:{"METHOD":,0:,')  # headers are not JSON
            assert sub.poll(10000), "no answer to a malformed request"
            assert sub.recv().startswith(b"evil-front 2:43, HTTP/1.1 400 Bad Request\r\n")
            assert sub.poll(5000) and sub.recv() == b"evil-front 2:43, "  # then closed
            headers = b'{"METHOD":"GET","PATH":"/","VERSION":"HTTP/1.1"}'
            push.send(b"evil-front 44 / " + write_netstring(headers) + b"0:,")
            assert sub.poll(10000)
            assert sub.recv().startswith(b"evil-front 2:44, HTTP/1.1 200 OK\r\n")
    finally:
        push.close(0)
        sub.close(0)
        ctx.term()
