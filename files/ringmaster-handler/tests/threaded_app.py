"""A thread-safe WSGI app for the --threads tests: it counts the requests it runs at once."""

import hashlib
import json
import os
import threading
import time

_lock = threading.Lock()
_running = 0
_most = 0  # the most requests this process ever ran at the same time


def _json(start_response, data) -> list[bytes]:
    body = json.dumps(data, sort_keys=True).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def _drip(n: int, gap: float):
    for _ in range(n):
        time.sleep(gap)
        yield b"drip\n"


def app(environ, start_response):
    global _running, _most
    path = environ["PATH_INFO"]
    qs = dict(p.partition("=")[::2] for p in environ["QUERY_STRING"].split("&") if p)
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    if path == "/drip":  # a response that makes progress: a chunk every gap seconds
        n, gap = int(qs.get("n", 10)), float(qs.get("gap", 0.5))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _drip(n, gap)
    if path == "/slow":
        with _lock:
            _running += 1
            _most = max(_most, _running)
        try:
            if "mark" in qs:  # tells a test the request is running now
                with open(qs["mark"], "w"):
                    pass
            time.sleep(float(qs.get("s", 0.3)))
        finally:
            with _lock:
                _running -= 1
    with _lock:
        state = {"running": _running, "most": _most}
    return _json(
        start_response,
        {
            **state,
            "path": path,
            "pid": os.getpid(),
            "thread": threading.current_thread().name,
            "multithread": environ["wsgi.multithread"],
            "body": body[:64].decode("latin-1"),
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        },
    )
