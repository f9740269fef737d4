"""ringmaster-redirect: plain HTTP to https for the configured hosts only, every request answered.

Table-driven over the pure ``answer``, then once through a real Mongrel2 on loopback (with
streamed uploads on, as the mongrel2 role sets them) and a real ringmaster-redirect process.
"""

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ringmaster_handler.redirect import Rules, answer, location

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RULES = Rules(("example.com", "www.example.com", "*.apps.example.com"), 8443, "example.com")
NO_FALLBACK = Rules(("example.com",), 443, None)


def msg(headers: dict, body: bytes = b"", sender: bytes = b"m2-ident", conn: bytes = b"7") -> bytes:
    raw = json.dumps(
        {"METHOD": "GET", "VERSION": "HTTP/1.1", "PATH": "/", **headers}, separators=(",", ":")
    ).encode()
    return b"%s %s / %d:%s,%d:%s," % (sender, conn, len(raw), raw, len(body), body)


def split(reply: bytes) -> tuple[bytes, int, dict, bytes]:
    """(prefix, status, headers, body) of one reply message."""
    prefix, _, http_bytes = reply.partition(b", ")
    head, _, body = http_bytes.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return prefix + b", ", int(lines[0].split()[1]), fields, body


@pytest.mark.parametrize(
    ("headers", "rules", "expected"),
    [
        pytest.param({"host": "example.com"}, RULES, "https://example.com:8443/", id="exact"),
        pytest.param(
            {"host": "WWW.Example.COM:80", "PATH": "/a/b", "QUERY": "x=1&y=%20z"},
            RULES,
            "https://www.example.com:8443/a/b?x=1&y=%20z",
            id="case-port-path-query",
        ),
        pytest.param(
            {"host": "shop.apps.example.com"},
            RULES,
            "https://shop.apps.example.com:8443/",
            id="wildcard",
        ),
        pytest.param(
            {"host": "a.b.apps.example.com"},
            RULES,
            "https://example.com:8443/",
            id="wildcard-one-label",
        ),
        pytest.param(
            {"host": "apps.example.com"}, RULES, "https://example.com:8443/", id="wildcard-not-apex"
        ),
        pytest.param(
            {"host": "evil.test"}, RULES, "https://example.com:8443/", id="unknown-host-fallback"
        ),
        pytest.param({"host": "evil.test"}, NO_FALLBACK, None, id="unknown-host-no-fallback"),
        pytest.param(
            {"host": "example.com."},
            NO_FALLBACK,
            "https://example.com/",
            id="final-dot-443-left-out",
        ),
        pytest.param({}, RULES, "https://example.com:8443/", id="http10-no-host"),
        pytest.param({"host": ["example.com", "evil.test"]}, NO_FALLBACK, None, id="repeated-host"),
        pytest.param({"host": "evil.test/x@example.com"}, NO_FALLBACK, None, id="host-with-slash"),
        pytest.param({"host": "example.com:80x"}, NO_FALLBACK, None, id="bad-port"),
        pytest.param({"host": "[::1]:80"}, NO_FALLBACK, None, id="address"),
        pytest.param(
            {"host": "example.com", "PATH": "//evil.test/x"},
            NO_FALLBACK,
            "https://example.com//evil.test/x",
            id="path-keeps-our-host",
        ),
        pytest.param(
            {"host": "example.com", "PATH": "*"}, NO_FALLBACK, "https://example.com/", id="asterisk"
        ),
        pytest.param(
            {"host": "example.com", "PATH": "http://evil.test/"},
            NO_FALLBACK,
            "https://example.com/",
            id="absolute-form",
        ),
        pytest.param(
            {"host": "example.com", "PATH": "/a b\r\nSet-Cookie: x=1", "QUERY": "q=\r\n#frag\xff"},
            NO_FALLBACK,
            "https://example.com/a%20b%0D%0ASet-Cookie:%20x=1?q=%0D%0A%23frag%FF",
            id="no-header-injection",
        ),
        pytest.param(
            {"host": "example.com", "PATH": "/%C3%B6?"},
            NO_FALLBACK,
            "https://example.com/%C3%B6%3F",
            id="encoded-kept",
        ),
    ],
)
def test_location(headers, rules, expected):
    assert location({"METHOD": "GET", "PATH": "/", **headers}, rules) == expected


@pytest.mark.parametrize(
    ("headers", "status", "keep_alive", "body_empty"),
    [
        pytest.param({"host": "example.com"}, 301, True, False, id="get-301-keep-alive"),
        pytest.param({"host": "example.com", "METHOD": "HEAD"}, 301, True, True, id="head-no-body"),
        pytest.param({"host": "example.com", "METHOD": "POST"}, 308, True, False, id="post-308"),
        pytest.param({"host": "example.com", "connection": "close"}, 301, False, False, id="close"),
        pytest.param(
            {"host": "example.com", "VERSION": "HTTP/1.0"}, 301, False, False, id="http10"
        ),
        pytest.param({"host": "evil.test"}, 421, True, False, id="not-ours-421"),
        pytest.param({"host": "example.com", "VERSION": 5}, 301, False, False, id="odd-version"),
    ],
)
def test_answer(headers, status, keep_alive, body_empty):
    result = answer(msg(headers), NO_FALLBACK)
    assert not result.later
    prefix, code, fields, body = split(result.now[0])
    assert prefix == b"m2-ident 1:7, "
    assert code == status
    assert ("Location" in fields) == (status != 421)
    assert fields["Connection"] == ("keep-alive" if keep_alive else "close")
    assert (body == b"") == body_empty
    assert int(fields["Content-Length"]) > 0
    # Mongrel2 closes a handler's connection only when told: an empty payload after the prefix.
    assert result.now[1:] == (() if keep_alive else (prefix,))


@pytest.mark.parametrize(
    ("message", "replies", "later"),
    [
        pytest.param(b"garbage", 0, 0, id="no-address-nothing-to-answer"),
        pytest.param(b'm2-ident 7 / 5:{"a",0:,', 2, 0, id="malformed-400-and-close"),
        pytest.param(
            b'm2-ident 7 @* 17:{"METHOD":"JSON"},21:{"type":"disconnect"},', 0, 0, id="disconnect"
        ),
        pytest.param(
            (FIXTURES / "disconnect_tns.bin").read_bytes(), 0, 0, id="disconnect-tnetstring"
        ),
        pytest.param((FIXTURES / "get_tns.bin").read_bytes(), 1, 0, id="tnetstring-request"),
        pytest.param(
            (FIXTURES / "get_http10_no_host.bin").read_bytes(), 2, 0, id="captured-http10"
        ),
        pytest.param((FIXTURES / "upload_start.bin").read_bytes(), 2, 0, id="spooled-start-close"),
        pytest.param(
            (FIXTURES / "upload_done.bin").read_bytes(), 0, 0, id="spooled-done-already-answered"
        ),
        pytest.param(
            msg({"host": "example.com", "METHOD": "POST", "UPLOAD_STREAM": "1"}, b"abc"),
            1,
            1,
            id="streamed-cancel-later",
        ),
        pytest.param(
            b'm2-ident 7 / 22:{"UPLOAD_STREAM":"1"},3:abc,', 0, 0, id="stream-continuation"
        ),
    ],
)
def test_every_message(message, replies, later):
    result = answer(message, NO_FALLBACK)
    assert (len(result.now), len(result.later)) == (replies, later)
    if replies:
        _prefix, code, _fields, _body = split(result.now[0])
        assert code in (301, 308, 400, 421)
    if replies == 2:
        assert result.now[1].endswith(b", ")


def test_malformed_gets_400():
    _prefix, code, fields, _body = split(answer(b'm2-ident 7 / 5:{"a",0:,', NO_FALLBACK).now[0])
    assert (code, fields["Connection"]) == (400, "close")


@pytest.mark.parametrize(
    ("names", "port", "fallback"),
    [
        pytest.param((), 443, None, id="no-names"),
        pytest.param(("Example.com",), 443, None, id="upper-case"),
        pytest.param(("*.*.example.com",), 443, None, id="double-wildcard"),
        pytest.param(("example.com",), 0, None, id="port-0"),
        pytest.param(("example.com",), 443, "*.example.com", id="wildcard-fallback"),
    ],
)
def test_rules_refuse(names, port, fallback):
    with pytest.raises(ValueError):
        Rules(names, port, fallback)


def test_cli_refuses_bad_input():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    run = subprocess.run(
        [sys.executable, "-m", "ringmaster_handler.redirect_cli", "--host", "Bad_Name",
         "tcp://127.0.0.1:1", "tcp://127.0.0.1:2"],
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert run.returncode == 2 and "host names" in run.stderr


@pytest.mark.skipif(
    not (shutil.which("mongrel2") and shutil.which("m2sh")), reason="needs mongrel2"
)
def test_through_real_mongrel2(tmp_path):
    from harness import Mongrel2, handler_route, running, stop_process, wait_for

    route = handler_route()
    m2 = Mongrel2(tmp_path, {"/": route}, {"upload.stream": 1})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    log = tmp_path / "redirect.err"
    with running(m2.start()), open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ringmaster_handler.redirect_cli", "--host", "localhost",
             "--host", "*.lab.test", "--https-port", "8443", route["send"], route["recv"]],
            env=env, stderr=err, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(lambda: b"redirecting" in log.read_bytes(), 15, "ringmaster-redirect")
            conn = m2.connection()
            for host, target in [("localhost", "localhost"), ("app.lab.test", "app.lab.test")]:
                conn.request("GET", "/p/q?x=1", headers={"Host": f"{host}:{m2.port}"})
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 301
                assert resp.getheader("Location") == f"https://{target}:8443/p/q?x=1"
            # An unknown host goes to Mongrel2's default host (here localhost's route): 421, as
            # ringmaster-redirect has no fallback here; the connection stays usable.
            conn.request("GET", "/", headers={"Host": "evil.test"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 421 and resp.getheader("Location") is None
            # A large POST Mongrel2 streams: 308 at once, and the connection is closed.
            big = http.client.HTTPConnection("127.0.0.1", m2.port, timeout=10)
            big.putrequest("POST", "/up", skip_host=True)
            big.putheader("Host", "localhost")
            big.putheader("Content-Length", "1000000")
            big.endheaders()
            big.send(b"x" * 70000)
            resp = big.getresponse()
            assert resp.status == 308 and resp.getheader("Location") == "https://localhost:8443/up"
            resp.read()
            # HTTP/1.0 without Host and no fallback: 421, and the connection is closed.
            with socket.create_connection(("127.0.0.1", m2.port), timeout=5) as raw:
                raw.sendall(b"GET /x HTTP/1.0\r\n\r\n")
                got = b""
                while chunk := raw.recv(4096):
                    got += chunk
                assert got.startswith(b"HTTP/1.1 421 ") and b"Connection: close" in got
        finally:
            assert stop_process(proc) == 0
