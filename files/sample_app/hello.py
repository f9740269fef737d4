"""Sample WSGI app served by a bare `deploy.yml`: enough to prove the whole path works.

GET /        a greeting naming the host and process that answered
POST /echo   the request body, byte for byte
GET /health  "ok", for checks that should not depend on the greeting's wording
GET or POST /sleep?seconds=N
             waits N seconds (at most 30), then greets: a slow request for
             head-of-line and fault tests
"""

import os
import socket
import time
from urllib.parse import parse_qs

_HOST = socket.gethostname()


def _respond(start_response, status, body, content_type="text/plain; charset=utf-8"):
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def _read_body(environ):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return environ["wsgi.input"].read(length) if length > 0 else b""


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    method = environ["REQUEST_METHOD"]
    if path == "/echo" and method == "POST":
        return _respond(start_response, "200 OK", _read_body(environ), "application/octet-stream")
    if path == "/sleep" and method in ("GET", "POST"):
        _read_body(environ)
        try:
            seconds = float(parse_qs(environ.get("QUERY_STRING", "")).get("seconds", ["1"])[0])
        except ValueError:
            return _respond(start_response, "400 Bad Request", b"seconds must be a number\n")
        time.sleep(min(max(seconds, 0.0), 30.0))
        body = f"Hello from ringmaster: host {_HOST}, pid {os.getpid()}, slept {seconds:g} s\n".encode()
        return _respond(start_response, "200 OK", body)
    if path == "/health":
        return _respond(start_response, "200 OK", b"ok\n")
    if path == "/" and method in ("GET", "HEAD"):
        body = f"Hello from ringmaster: host {_HOST}, pid {os.getpid()}\n".encode()
        return _respond(start_response, "200 OK", body)
    return _respond(start_response, "404 Not Found", b"not found\n")
