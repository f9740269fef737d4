"""Sample WSGI app served by a bare `deploy.yml`: enough to prove the whole path works.

GET /        a greeting naming the host and process that answered
POST /echo   the request body, byte for byte
GET /health  "ok", for checks that should not depend on the greeting's wording
GET /scheme  wsgi.url_scheme, the host and port the app sees (https behind Mongrel2's TLS)
GET /remote  REMOTE_ADDR and wsgi.url_scheme: the client as the app sees it (behind a TLS
             proxy, the proxy's X-Forwarded-For and -Proto when the handler trusts it)
GET or POST /sleep?seconds=N (or ?s=N)
             waits N seconds (at most 30), then greets: a slow request for
             head-of-line, fault and request-timeout tests
POST /sha256 JSON {"length", "sha256"} of the body, read from wsgi.input in chunks
POST /multipart
             parses a multipart/form-data body (standard library only) and answers
             JSON {"parts": [{"name", "filename", "length", "sha256"}, ...]}
"""

import hashlib
import json
import os
import socket
import time
from email.parser import BytesParser
from email.policy import default as default_policy
from urllib.parse import parse_qs

_CHUNK = 65536

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


def _body_chunks(environ):
    """The request body in pieces: up to CONTENT_LENGTH, or to the end of the stream without one."""
    stream = environ["wsgi.input"]
    try:
        remaining = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        remaining = -1
    while remaining != 0:
        chunk = stream.read(_CHUNK if remaining < 0 else min(_CHUNK, remaining))
        if not chunk:
            break
        if remaining > 0:
            remaining -= len(chunk)
        yield chunk


def _json(start_response, status, value):
    return _respond(start_response, status, (json.dumps(value) + "\n").encode(), "application/json")


def _sha256(environ, start_response):
    digest = hashlib.sha256()
    length = 0
    for chunk in _body_chunks(environ):
        digest.update(chunk)
        length += len(chunk)
    return _json(start_response, "200 OK", {"length": length, "sha256": digest.hexdigest()})


def _multipart(environ, start_response):
    content_type = environ.get("CONTENT_TYPE", "")
    if not content_type.startswith("multipart/form-data"):
        return _respond(start_response, "415 Unsupported Media Type", b"multipart/form-data expected\n")
    raw = b"".join(_body_chunks(environ))
    message = BytesParser(policy=default_policy).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
    )
    if not message.is_multipart():
        return _respond(start_response, "400 Bad Request", b"not a multipart body\n")
    parts = []
    for part in message.iter_parts():
        data = part.get_payload(decode=True) or b""
        parts.append(
            {
                "name": part.get_param("name", header="content-disposition"),
                "filename": part.get_filename(),
                "length": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    return _json(start_response, "200 OK", {"parts": parts})


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    method = environ["REQUEST_METHOD"]
    if path == "/echo" and method == "POST":
        return _respond(start_response, "200 OK", _read_body(environ), "application/octet-stream")
    if path == "/sleep" and method in ("GET", "POST"):
        _read_body(environ)
        try:
            query = parse_qs(environ.get("QUERY_STRING", ""))
            seconds = float(query.get("seconds", query.get("s", ["1"]))[0])
        except ValueError:
            return _respond(start_response, "400 Bad Request", b"seconds must be a number\n")
        time.sleep(min(max(seconds, 0.0), 30.0))
        body = f"Hello from ringmaster: host {_HOST}, pid {os.getpid()}, slept {seconds:g} s\n".encode()
        return _respond(start_response, "200 OK", body)
    if path == "/sha256" and method == "POST":
        return _sha256(environ, start_response)
    if path == "/multipart" and method == "POST":
        return _multipart(environ, start_response)
    if path == "/health":
        return _respond(start_response, "200 OK", b"ok\n")
    if path == "/remote":
        return _respond(start_response, "200 OK", f"{environ['REMOTE_ADDR']} {environ['wsgi.url_scheme']}\n".encode())
    if path == "/scheme":
        seen = f"{environ['wsgi.url_scheme']} {environ.get('SERVER_NAME', '')} {environ.get('SERVER_PORT', '')}\n"
        return _respond(start_response, "200 OK", seen.encode())
    if path == "/" and method in ("GET", "HEAD"):
        body = f"Hello from ringmaster: host {_HOST}, pid {os.getpid()}\n".encode()
        return _respond(start_response, "200 OK", body)
    return _respond(start_response, "404 Not Found", b"not found\n")
