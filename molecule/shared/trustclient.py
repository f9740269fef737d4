#!/usr/bin/env python3
"""Requests for verify_limits.yml, standard library only; prints one JSON object.

trustclient multipart BYTES    multipart/form-data POST to /multipart (one file part, one field)
trustclient chunked BYTES      Transfer-Encoding: chunked POST to /sha256
trustclient sized BYTES        POST to /sha256 with Content-Length (e.g. above the body limit)
trustclient get PATH           GET PATH
Each answer: status, seconds, and the body (parsed as JSON when it is JSON), plus what was sent.
"""

import hashlib
import http.client
import json
import os
import sys
import time

HOST = os.environ.get("TRUST_HOST", "127.0.0.1")
PORT = int(os.environ.get("TRUST_PORT", "6767"))
CHUNK = 65536


def _pattern(size):
    block = hashlib.sha256(str(size).encode()).digest() * (CHUNK // 32)
    sent = 0
    while sent < size:
        piece = block[: min(CHUNK, size - sent)]
        sent += len(piece)
        yield piece


def _answer(conn, started, sent):
    try:
        response = conn.getresponse()
        body = response.read()
        status = response.status
    except (ConnectionError, http.client.HTTPException) as exc:
        return {"status": 0, "error": repr(exc), "seconds": round(time.monotonic() - started, 2), **sent}
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = body[:200].decode("latin-1")
    return {"status": status, "seconds": round(time.monotonic() - started, 2), "body": parsed, **sent}


def main(argv):
    kind, arg = argv[1], argv[2]
    conn = http.client.HTTPConnection(HOST, PORT, timeout=120)
    started = time.monotonic()
    if kind == "get":
        conn.request("GET", arg)
        return _answer(conn, started, {})
    size = int(arg)
    digest = hashlib.sha256()
    if kind == "multipart":
        data = b"".join(_pattern(size))
        digest.update(data)
        boundary = "ringmaster-verify-boundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="upload"; filename="blob.bin"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}\r\n".encode()
            + b'Content-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
            + f"--{boundary}--\r\n".encode()
        )
        conn.request("POST", "/multipart", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    elif kind == "chunked":
        conn.putrequest("POST", "/sha256")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.putheader("Content-Type", "application/octet-stream")
        conn.endheaders()
        try:
            for piece in _pattern(size):
                digest.update(piece)
                conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            conn.send(b"0\r\n\r\n")
        except OSError:
            pass  # the front may answer 413 and close before the whole body is sent: read it, as curl does
    elif kind == "sized":
        conn.putrequest("POST", "/sha256")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        try:
            for piece in _pattern(size):
                digest.update(piece)
                conn.send(piece)
        except OSError:
            pass  # the front may answer 413 and close before the whole body is sent
    else:
        raise SystemExit(f"unknown request kind {kind!r}")
    return _answer(conn, started, {"sent_sha256": digest.hexdigest(), "sent_length": size})


if __name__ == "__main__":
    print(json.dumps(main(sys.argv)))
