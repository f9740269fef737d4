"""Sample WSGI app served by a bare `deploy.yml`: enough to prove the whole path works.

GET /        a greeting naming the host and process that answered
POST /echo   the request body, byte for byte
GET /health  "ok", for checks that should not depend on the greeting's wording
"""

import os
import socket

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
    if path == "/health":
        return _respond(start_response, "200 OK", b"ok\n")
    if path == "/" and method in ("GET", "HEAD"):
        body = f"Hello from ringmaster: host {_HOST}, pid {os.getpid()}\n".encode()
        return _respond(start_response, "200 OK", body)
    return _respond(start_response, "404 Not Found", b"not found\n")
