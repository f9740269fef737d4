# Copyright (c) 2025, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""molecule/shared/loadcount.py against real HTTP servers on loopback: every request accounted for."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

LOADCOUNT = Path(__file__).resolve().parents[2] / "molecule" / "shared" / "loadcount.py"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "ok"

    def log_message(self, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b"hello from host web1, pid 7\n"
        if self.mode == "post-fails" and self.command == "POST":
            self.send_response(502)
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.mode == "trickle":
            # Each byte arrives well within the timeout, the whole reply does not.
            for byte in body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)
        else:
            if self.mode == "slow":
                time.sleep(0.3)
            self.wfile.write(body)

    do_GET = do_POST = _answer


@contextlib.contextmanager
def server(mode, context=None):
    """The test server answering in ``mode``; over TLS with ``context``."""
    handler = type("H", (Handler,), {"mode": mode})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    if context is not None:
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def run(port, tmp_path, *extra):
    argv = [sys.executable, str(LOADCOUNT), "--port", str(port), "--clients", "2"]
    argv += ["--stop-file", str(tmp_path / "stop"), *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.mark.parametrize(
    ("mode", "extra", "rc", "expect"),
    [
        pytest.param("ok", ["--duration", "1"], 0, {"lost": 0, "failed": 0, "crashed": 0}, id="all-answered"),
        pytest.param(
            "trickle", ["--duration", "1.5", "--timeout", "1"], 0, {"ok": 0, "crashed": 0}, id="trickle-is-lost"
        ),
        pytest.param(
            "post-fails",
            ["--duration", "1", "--post-share", "0.5"],
            0,
            {"lost": 0, "crashed": 0},
            id="mixed-methods",
        ),
        pytest.param(
            # A tally group that does not take part: the thread dies on None.decode().
            "ok",
            ["--duration", "1", "--tally", "(nomatch)?host"],
            1,
            {"crashed": 2},
            id="crash-counted",
        ),
    ],
)
def test_every_request_is_accounted_for(tmp_path, mode, extra, rc, expect):
    with server(mode) as port:
        code, result, _ = run(port, tmp_path, *extra)
    assert code == rc, result
    for key, value in expect.items():
        assert result[key] == value, result
    assert result["sent"] > 0
    if not result["crashed"]:
        assert result["ok"] + result["failed"] + result["lost"] == result["sent"], result
    if mode == "trickle":
        assert result["lost"] == result["sent"], result
    if mode == "post-fails":
        assert result["sent_POST"] > 0 and result["sent_GET"] > 0, result
        assert result["failed"] == result["status_502_POST"] == result["sent_POST"], result
    assert result["stopped_by"] == "duration"


def test_stop_file_is_reported(tmp_path):
    with server("ok") as port:
        threading.Timer(0.5, (tmp_path / "stop").touch).start()
        code, result, _ = run(port, tmp_path, "--duration", "30")
    assert code == 0
    assert result["stopped_by"] == "stop-file"
    assert result["seconds"] < 10


def test_refused_connections_fail_not_hang(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, result, _ = run(port, tmp_path, "--duration", "0.5")
    assert code == 0
    assert result["failed"] == result["sent"] > 0


def test_requests_in_flight_at_an_instant(tmp_path):
    instant = tmp_path / "instant"
    with server("slow") as port:
        # Each reply takes 0.3 s and each client always has one under way: both are in flight
        # at any instant of the run (the time is read only when the load ends).
        instant.write_text(f"{time.time() + 0.5}\n")
        code, result, _ = run(port, tmp_path, "--duration", "1", "--instant-file", str(instant))
    assert code == 0, result
    at = result["at_instant"]
    assert at["sent"] == at["sent_GET"] == at["ok_GET"] == 2, result
    assert result["began"] < at["instant"] < result["ended"], result


def test_no_instant_no_counts(tmp_path):
    with server("ok") as port:
        code, result, _ = run(port, tmp_path, "--duration", "0.3", "--instant-file", str(tmp_path / "none"))
    assert code == 0
    assert result["at_instant"] == {}
    assert result["ended"] - result["began"] >= 0.3


@pytest.mark.parametrize(
    ("until", "stopped_by"),
    [
        pytest.param("1", "tallied", id="one-value-seen"),
        pytest.param("2", "duration", id="never-two-values"),
    ],
)
def test_until_tallied_stops_once_enough_values_answered(tmp_path, until, stopped_by):
    with server("ok") as port:
        rc, result, _ = run(port, tmp_path, "--duration", "3", "--tally", "(host \\S+),", "--until-tallied", until)
    assert rc == 0
    assert result["stopped_by"] == stopped_by
    assert result["tally"] == {"host web1": result["ok"]}
    if stopped_by == "tallied":
        assert result["seconds"] < 1.0  # the first answer was enough, long before --duration


def test_until_tallied_waits_at_least_the_floor(tmp_path):
    with server("ok") as port:
        rc, result, _ = run(
            port, tmp_path, "--duration", "5", "--tally", "(host \\S+),", "--until-tallied", "1", "--at-least", "1.5"
        )
    assert rc == 0
    assert result["stopped_by"] == "tallied"
    assert 1.5 <= result["seconds"] < 4.0


@contextlib.contextmanager
def tls_server(tmp_path):
    """The "ok" server over TLS, with a certificate for localhost from a throwaway CA."""
    subprocess.run(
        ["bash", str(Path(__file__).resolve().parents[2] / "tools" / "lab-ca.sh"), str(tmp_path), "site", "localhost"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "site.crt", tmp_path / "site.key")
    with server("ok", context) as port:
        yield port


def test_tls_counts_each_handshakes_certificate(tmp_path):
    with tls_server(tmp_path) as port:
        tls = ["--cacert", str(tmp_path / "ca.crt"), "--server-name", "localhost", "--duration", "1"]
        rc, kept, _ = run(port, tmp_path, *tls)
        rc2, fresh, _ = run(port, tmp_path, *tls, "--reconnect")
        serial = subprocess.run(
            ["openssl", "x509", "-noout", "-serial", "-in", "site.crt"], cwd=tmp_path, capture_output=True, text=True
        )
    assert (rc, rc2) == (0, 0)
    assert kept["ok"] == kept["sent"] > 0 and fresh["ok"] == fresh["sent"] > 0
    # Keep-alive: one handshake per client; --reconnect: one per request.
    number = serial.stdout.strip().split("=")[1]
    assert sum(kept["serials"].values()) == 2
    assert fresh["serials"] == {number: fresh["sent"]}


def test_tls_refuses_a_chain_to_another_ca(tmp_path):
    with tls_server(tmp_path) as port:
        other = tmp_path / "other"
        other.mkdir()
        subprocess.run(
            ["bash", str(Path(__file__).resolve().parents[2] / "tools" / "lab-ca.sh"), str(other), "x", "localhost"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        rc, result, _ = run(
            port, tmp_path, "--cacert", str(other / "ca.crt"), "--server-name", "localhost", "--duration", "1"
        )
    assert rc == 0 and result["ok"] == 0 and result["failed"] == result["sent"] > 0
    assert result["error_SSLCertVerificationError"] == result["sent"]
