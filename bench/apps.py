"""The WSGI app every stack in bench/whole.py serves (the same code everywhere).

/         hello world (13 bytes)
/fast     about 1 ms of Python CPU (thread CPU time, so the same work on a loaded machine)
/slow     300 ms waiting on I/O (a sleep: the process is idle meanwhile)
/big      a 1 MB response
/upload   reads the whole request body, answers its length
"""

import time

HELLO = b"Hello, World!"
BIG = b"x" * (1 << 20)
FAST_CPU = 0.001
SLOW_WAIT = 0.3


def _reply(start_response, body: bytes) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _fast() -> bytes:
    end = time.thread_time() + FAST_CPU
    n = 0
    while time.thread_time() < end:
        n += sum(range(100))
    return b"fast %d" % n


def _upload(environ) -> bytes:
    stream = environ["wsgi.input"]
    left = int(environ.get("CONTENT_LENGTH") or 0)
    total = 0
    while left > 0:
        chunk = stream.read(min(left, 1 << 16))
        if not chunk:
            break
        total += len(chunk)
        left -= len(chunk)
    return b"%d" % total


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/fast":
        return _reply(start_response, _fast())
    if path == "/slow":
        time.sleep(SLOW_WAIT)
        return _reply(start_response, b"slow")
    if path == "/big":
        return _reply(start_response, BIG)
    if path == "/upload":
        return _reply(start_response, _upload(environ))
    return _reply(start_response, HELLO)
