"""WSGI apps the integration tests serve."""

import hashlib
import json
import time
from wsgiref.validate import validator


def hello(environ, start_response):
    body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def rogue(environ, start_response):
    """An app that must never get a request: it leaves a mark in its working directory."""
    with open("ROGUE-CALLED", "a") as mark:
        mark.write("called\n")
    body = b"ROGUE"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [body]


def _json(start_response, data, status="200 OK"):
    body = json.dumps(data, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json")])
    return [body]


def _chunks(n, size):
    for i in range(n):
        yield bytes([65 + i % 26]) * size


def _stream_gen(n, size, delay):
    for chunk in _chunks(n, size):
        if delay:
            time.sleep(delay)
        yield chunk


def router(environ, start_response):
    """One app with many behaviours, selected by PATH_INFO."""
    path = environ["PATH_INFO"]
    qs = dict(p.partition("=")[::2] for p in environ["QUERY_STRING"].split("&") if p)
    if path.endswith("/environ"):
        return _json(
            start_response,
            {k: v for k, v in environ.items() if type(v) in (str, bool, int, tuple, list)},
        )
    if path == "/echo":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("X-Method", environ["REQUEST_METHOD"])],
        )
        return [body]
    if path == "/digest":
        # Reads the upload in pieces, as a careful app would.
        h = hashlib.sha256()
        total = 0
        stream = environ["wsgi.input"]
        while True:
            block = stream.read(1 << 16)
            if not block:
                break
            h.update(block)
            total += len(block)
        return _json(
            start_response,
            {
                "sha256": h.hexdigest(),
                "length": total,
                "cl": environ.get("CONTENT_LENGTH"),
                "te": environ.get("HTTP_TRANSFER_ENCODING"),
            },
        )
    if path == "/stream":
        n, size = int(qs.get("n", 10)), int(qs.get("size", 1000))
        delay = float(qs.get("delay", 0))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _stream_gen(n, size, delay)
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written-")
        return [b"returned"]
    if path == "/boom":
        raise RuntimeError("boom (expected by the test)")
    if path == "/boom-late":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b"partial"
            raise RuntimeError("late boom (expected by the test)")

        return gen()
    if path == "/sleep":
        if "mark" in qs:  # tells a test the request is being served now
            with open(qs["mark"], "w"):
                pass
        time.sleep(float(qs.get("s", 1)))
        return hello(environ, start_response)
    if path == "/status":
        code = qs.get("code", "204")
        start_response(f"{code} Whatever", [])
        return []
    if path.startswith("/boom-path"):
        # An exception whose message carries client text (the path may hold a newline).
        raise RuntimeError(f"no such thing: {path}")
    if path == "/bad-header":
        start_response("200 OK", [("X-Bad", "a\r\nInjected: 1")])
        return [b"never sent"]
    if path == "/close-raises":
        return RaisingClose(start_response)
    if path == "/big":
        # The whole body as one bytes object, returned at once.
        body = b"x" * (int(qs.get("mb", 64)) << 20)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]
    if path == "/close-counter":
        return ClosingBody(start_response)
    return hello(environ, start_response)


CLOSED = []


class ClosingBody:
    """An iterable with close(), to check the handler calls it."""

    def __init__(self, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

    def __iter__(self):
        yield b"closing body"

    def close(self):
        CLOSED.append(time.time())


class RaisingClose:
    """An iterable whose close() raises after the whole body went out."""

    def __init__(self, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])

    def __iter__(self):
        yield b"body"

    def close(self):
        raise RuntimeError("close failed (expected by the test)")


validated_router = validator(router)
