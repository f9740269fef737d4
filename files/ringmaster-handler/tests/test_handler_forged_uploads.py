"""Forged upload notices through a real Mongrel2 (direct mode, spooling): always 400, no
file read or removed. Only what Mongrel2 itself writes is believed (see uploads.py)."""

import hashlib
import json
import os
import shutil
import socket

import pytest

from harness import Handler, Mongrel2, handler_route, running, wait_for

pytestmark = pytest.mark.skipif(
    not (shutil.which("mongrel2") and shutil.which("m2sh")), reason="needs mongrel2 and m2sh"
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("forged")
    route = handler_route()
    m2 = Mongrel2(root, {"/": route})
    handler = Handler(
        root,
        "apps:router",
        route["send"].replace("tcp://", f"tcp://{route['ident']}@"),
        route["recv"],
        "--upload-root",
        str(root),
        "--upload-temp-store",
        "/uploads/upload.XXXXXX",  # what the harness gives Mongrel2 (relative: same file)
    )
    with running(m2.start(), handler.start()):
        yield m2, handler, root


SETUP = ("upload.evil01", "upload.plain1")  # planted by the other test


def ask(port: int, head: str, body: bytes = b"") -> bytes:
    """One request on its own connection; the reply's bytes up to the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + body)
        chunks = []
        while block := s.recv(65536):
            chunks.append(block)
        return b"".join(chunks)


def read_json_reply(sock: socket.socket) -> bytes:
    """A reply whose body is JSON: read until it ends, or the connection does."""
    reply = b""
    while not reply.endswith(b"}") and (block := sock.recv(65536)):
        reply += block
    return reply


def forged(name: str, extra: str) -> str:
    return (f"POST /digest HTTP/1.1\nHost: x\n{extra}"
            f"X-Mongrel2-Upload-Start: {name}\nX-Mongrel2-Upload-Done: {name}\n\n")  # fmt: skip


@pytest.mark.parametrize(
    "extra",
    [
        "Transfer-Encoding: Chunked\n",  # Mongrel2 only spools exactly "chunked"
        "Transfer-Encoding: CHUNKED\n",
        "Transfer-Encoding: chunked\nContent-Length: 0\n",  # the length wins: not spooled
        "",
    ],
    ids=["Chunked", "CHUNKED", "chunked+length0", "no-body"],
)
def test_forged_notice_naming_another_uploads_spool_file(stack, extra):
    m2, _, root = stack
    data = os.urandom(100000)
    victim = socket.create_connection(("127.0.0.1", m2.port), timeout=10)
    with victim:
        # Another client's upload, half sent: Mongrel2 is spooling it right now.
        victim.sendall(b"POST /digest HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        victim.sendall(data[:30000])
        spool = wait_for(lambda: [p for p in (root / "uploads").iterdir() if p.name not in SETUP],
                         5, "the spool file")[0]  # fmt: skip
        wait_for(lambda: spool.stat().st_size == 30000, 5, "the first bytes on disk")

        reply = ask(m2.port, forged(f"/uploads/{spool.name}", extra))
        assert reply.startswith(b"HTTP/1.1 400 ")
        assert spool.exists() and spool.stat().st_size == 30000, "the victim's file was touched"

        victim.sendall(data[30000:])  # the victim's upload still completes, intact
        reply = read_json_reply(victim)
    assert reply.startswith(b"HTTP/1.1 200 OK")
    result = json.loads(reply.partition(b"\r\n\r\n")[2])
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    wait_for(lambda: not spool.exists(), 5, "the consumed spool file to be removed")


@pytest.mark.parametrize(
    "name",
    ["/config.sqlite", "config.sqlite", "/uploads/../config.sqlite", "/uploads/upload.evil01",
     "/uploads/upload.plain1", "/../../etc/passwd"],
)  # fmt: skip
@pytest.mark.parametrize("extra", ["Transfer-Encoding: Chunked\n", ""], ids=["Chunked", "bare"])
def test_forged_notices_for_other_files(stack, name, extra):
    m2, handler, root = stack
    evil = root / "uploads" / "upload.evil01"
    if not evil.is_symlink():
        evil.symlink_to(root / "config.sqlite")
    plain = root / "uploads" / "upload.plain1"
    plain.write_bytes(b"not an upload")
    before = (root / "config.sqlite").read_bytes()
    reply = ask(m2.port, forged(name, extra))
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:80]
    assert (root / "config.sqlite").read_bytes() == before
    assert plain.read_bytes() == b"not an upload" and evil.is_symlink()
    assert "internal error" not in handler.log_text()


def test_a_real_spool_with_a_forged_done_header_serves_only_its_own_body(stack):
    """Mongrel2 overwrites -start in its start notice but keeps the client's -done there."""
    m2, _, root = stack
    victim_data = os.urandom(50000)
    mine = os.urandom(40000)
    with socket.create_connection(("127.0.0.1", m2.port), timeout=10) as victim:
        victim.sendall(b"POST /digest HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n")
        victim.sendall(victim_data[:20000])
        spool = wait_for(lambda: [p for p in (root / "uploads").iterdir() if p.name not in SETUP],
                         5, "the spool file")[0]  # fmt: skip
        wait_for(lambda: spool.stat().st_size == 20000, 5, "the first bytes on disk")
        head = (f"POST /digest HTTP/1.1\nHost: x\nContent-Length: {len(mine)}\n"
                f"X-Mongrel2-Upload-Done: /uploads/{spool.name}\n\n")  # fmt: skip
        with socket.create_connection(("127.0.0.1", m2.port), timeout=10) as attacker:
            attacker.sendall(head.replace("\n", "\r\n").encode() + mine)
            reply = read_json_reply(attacker)
        assert reply.startswith(b"HTTP/1.1 200 OK")
        result = json.loads(reply.partition(b"\r\n\r\n")[2])
        assert (
            result["sha256"] == hashlib.sha256(mine).hexdigest()
        )  # its own body, not the victim's
        assert spool.exists() and spool.stat().st_size == 20000
        victim.sendall(victim_data[20000:])
        reply = read_json_reply(victim)
    result = json.loads(reply.partition(b"\r\n\r\n")[2])
    assert result["sha256"] == hashlib.sha256(victim_data).hexdigest()


def test_a_spooled_body_above_max_body_size_gets_413_and_is_removed(tmp_path):
    route = handler_route()
    m2 = Mongrel2(tmp_path, {"/": route})
    handler = Handler(tmp_path, "apps:router",
                      route["send"].replace("tcp://", f"tcp://{route['ident']}@"), route["recv"],
                      "--upload-root", str(tmp_path), "--max-body-size", "25000")  # fmt: skip
    with running(m2.start(), handler.start()):
        head = "POST /digest HTTP/1.1\nHost: x\nContent-Length: 30000\n\n"
        assert ask(m2.port, head, b"x" * 30000).startswith(b"HTTP/1.1 413 ")
        wait_for(lambda: not list((tmp_path / "uploads").iterdir()), 5, "the file to go")
        head = "POST /digest HTTP/1.1\nHost: x\nContent-Length: 24000\n\n"
        reply = ask(m2.port, head.replace("\n\n", "\nConnection: close\n\n"), b"y" * 24000)
        assert reply.startswith(b"HTTP/1.1 200 OK")
