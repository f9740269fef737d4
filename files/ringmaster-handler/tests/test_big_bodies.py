"""A 200 MB upload and a 100 MB streamed response with bounded handler memory."""

import hashlib
import json
import shutil

import pytest

from harness import Handler, Mongrel2, handler_route, running

pytestmark = pytest.mark.skipif(
    not (shutil.which("mongrel2") and shutil.which("m2sh")), reason="needs mongrel2 and m2sh"
)

MB = 1024 * 1024
# Python, pyzmq and the app take ~20 MB; the bodies must not add their size on top.
MEMORY_BOUND = 64 * MB


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("big")
    route = handler_route()
    m2 = Mongrel2(root, {"/": route})
    handler = Handler(root, "apps:router", route["send"], route["recv"], "--upload-root", str(root))
    with running(m2.start(), handler.start()):
        yield m2, handler, root


def test_200mb_upload(stack):
    m2, handler, root = stack
    block = bytes(range(256)) * 256  # 64 KiB
    count = 200 * MB // len(block)
    digest = hashlib.sha256()
    for _ in range(count):
        digest.update(block)
    conn = m2.connection(timeout=60)
    conn.request(
        "POST",
        "/digest",
        body=(block for _ in range(count)),
        headers={"Content-Length": str(count * len(block))},
    )
    resp = conn.getresponse()
    result = json.loads(resp.read())
    assert resp.status == 200
    assert result["length"] == 200 * MB and result["sha256"] == digest.hexdigest()
    assert not list((root / "uploads").iterdir()), "the spooled file was not removed"
    assert peak_rss(handler.proc.pid) < MEMORY_BOUND


def test_100mb_streamed_response(stack):
    m2, handler, _ = stack
    conn = m2.connection(timeout=60)
    conn.request("GET", "/stream?n=1600&size=65536")  # 1600 x 64 KiB = 100 MiB, no length
    resp = conn.getresponse()
    assert resp.getheader("Transfer-Encoding") == "chunked"
    total = 0
    expected = hashlib.sha256()
    got = hashlib.sha256()
    for i in range(1600):
        expected.update(bytes([65 + i % 26]) * 65536)
    while block := resp.read(MB):
        got.update(block)
        total += len(block)
    assert total == 100 * MB and got.hexdigest() == expected.hexdigest()
    assert peak_rss(handler.proc.pid) < MEMORY_BOUND
    # The connection is still usable afterwards.
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"Hello, World!"
