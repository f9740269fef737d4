"""Pipelined requests on one keep-alive connection are answered in order.

Mongrel2 hands every pipelined request of a connection over at once; with several handlers
they used to come back in whatever order the handlers finished. Real Mongrel2, a real
dispatcher, three real ``ringmaster-wsgi --dispatcher`` handlers running ``ordered_app``
(below, with random small delays), many connections at once.
"""

import random
import shutil
import socket
import threading
import time

import pytest


def ordered_app(environ, start_response):
    """Answers ``<method> <path> <body>`` after a random delay of up to 5 ms."""
    time.sleep(random.random() * 0.005)
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    out = b"%s %s %s" % (environ["REQUEST_METHOD"].encode(), environ["PATH_INFO"].encode(), body)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


def read_responses(sock: socket.socket, n: int) -> list[bytes]:
    """The bodies of ``n`` Content-Length-delimited responses, in the order they came."""
    buf, bodies = b"", []
    while len(bodies) < n:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {len(bodies)} responses")
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(buf) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed in a body")
            buf += chunk
        bodies.append(buf[:length])
        buf = buf[length:]
    return bodies


def burst(port: int, conn: int, rounds: int, size: int, errors: list, seen: list) -> None:
    rng = random.Random(conn)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            for r in range(rounds):
                wanted, raw = [], b""
                for n in range(size):
                    path = f"/c{conn}/r{r}/n{n:02d}"
                    if rng.random() < 0.5:
                        raw += f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                        wanted.append(f"GET {path} ".encode())
                    else:
                        body = f"body-{conn}-{r}-{n}".encode()
                        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}"
                        raw += head.encode() + b"\r\n\r\n"
                        raw += body
                        wanted.append(f"POST {path} ".encode() + body)
                sock.sendall(raw)  # every request of the burst at once
                got = read_responses(sock, size)
                seen.append(got == wanted)
                if got != wanted:
                    errors.append((conn, r, [g.split(b" ")[1][-3:] for g in got]))
    except Exception as exc:  # reported by the test
        errors.append((conn, repr(exc)))


@pytest.mark.skipif(
    not (shutil.which("mongrel2") and shutil.which("m2sh")), reason="needs mongrel2 and m2sh"
)
def test_pipelined_bursts_come_back_in_order_under_load(tmp_path):
    from test_dispatcher import Stack

    with Stack(tmp_path, workers=3, app="test_trust_pipelining:ordered_app") as stack:
        errors: list = []
        seen: list = []
        threads = [
            threading.Thread(target=burst, args=(stack.m2.port, conn, 4, 20, errors, seen))
            for conn in range(12)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert len(seen) == 48 and all(seen)
        log = stack.dispatcher.log_text()
        assert "Traceback" not in log and "forged" not in log


def run_bursts(port: int, connections: int = 12, rounds: int = 4, size: int = 20):
    errors: list = []
    seen: list = []
    threads = [
        threading.Thread(target=burst, args=(port, conn, rounds, size, errors, seen))
        for conn in range(connections)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors, seen


@pytest.mark.skipif(
    not (shutil.which("mongrel2") and shutil.which("m2sh")), reason="needs mongrel2 and m2sh"
)
@pytest.mark.parametrize(("processes", "in_order"), [(1, True), (2, False)])
def test_direct_mode_keeps_order_only_with_one_handler_process(tmp_path, processes, in_order):
    """Direct mode: Mongrel2 deals a connection's pipelined requests round-robin to every
    handler process, and nothing in them tells their order. One process per front answers
    them in order; with two, bursts come back shuffled (why the roles refuse direct mode with
    more than one handler process per front unless wsgi_app_direct_unordered says so)."""
    from harness import Handler, Mongrel2, handler_route, running

    route = handler_route()
    m2 = Mongrel2(tmp_path, {"/": route})
    send = route["send"].replace("tcp://", f"tcp://{route['ident']}@")
    handlers = [
        Handler(tmp_path, "test_trust_pipelining:ordered_app", send, route["recv"])
        for _ in range(processes)
    ]
    with running(m2.start(), *(h.start() for h in handlers)):
        errors, seen = run_bursts(m2.port)
    if in_order:
        assert errors == []
        assert len(seen) == 48 and all(seen)
    else:
        assert not all(seen) or errors, "two direct-mode handlers kept every burst in order"
