import os

import pytest

from ringmaster_handler import uploads
from ringmaster_handler.netstrings import write_netstring
from ringmaster_handler.request import parse_message

Notice = uploads.Notice


@pytest.mark.parametrize(
    ("name", "notice"),
    [
        ("upload_start", Notice.STARTED),
        ("upload_done", Notice.DONE),
        ("upload_chunked_start", Notice.STARTED),
        ("upload_chunked_done", Notice.DONE),
        ("post_json", Notice.NONE),
        ("get_json", Notice.NONE),
    ],
)
def test_classify_captured(fixture_bytes, name, notice):
    assert uploads.classify(parse_message(fixture_bytes(name))) is notice


def test_captured_client_forgery_is_refused(fixture_bytes):
    with pytest.raises(uploads.UploadError):
        uploads.classify(parse_message(fixture_bytes("spoofed_upload_headers")))


def message(headers: dict, body: bytes = b"") -> bytes:
    import json

    raw = json.dumps({"METHOD": "POST", "PATH": "/", **headers}).encode()
    return b"s 1 / " + write_netstring(raw) + write_netstring(body)


S, D = "x-mongrel2-upload-start", "x-mongrel2-upload-done"
F = "/uploads/upload.aB3xYz"
# headers, body -> the notice, or None: refused (UploadError, a 400)
CLASSIFY = [
    ("spooled length, start", {S: F, "content-length": "30000"}, b"", Notice.STARTED),
    ("spooled length, done", {S: F, D: F, "content-length": "30000"}, b"", Notice.DONE),
    ("chunked, done", {S: F, D: F, "transfer-encoding": "chunked"}, b"", Notice.DONE),
    # A start notice carrying the client's own -done: wait for Mongrel2's done notice.
    ("start with forged done", {S: F, D: "/uploads/upload.other1",
                                "content-length": "30000"}, b"", Notice.STARTED),
    ("no headers", {"content-length": "3"}, b"abc", Notice.NONE),
    # Mongrel2 spools only exactly "chunked" (case-sensitive) without Content-Length.
    ("Chunked", {S: F, D: F, "transfer-encoding": "Chunked"}, b"", None),
    ("CHUNKED", {S: F, D: F, "transfer-encoding": "CHUNKED"}, b"", None),
    ("chunked, gzip", {S: F, D: F, "transfer-encoding": "gzip, chunked"}, b"", None),
    ("chunked twice", {S: F, D: F, "transfer-encoding": ["chunked", "chunked"]}, b"", None),
    # Content-Length wins over Transfer-Encoding in Mongrel2: 0 is never spooled.
    ("chunked with length 0", {S: F, D: F, "transfer-encoding": "chunked",
                               "content-length": "0"}, b"", None),
    ("small body carried", {S: F, D: F, "content-length": "3"}, b"abc", None),
    ("length 0", {S: F, D: F, "content-length": "0"}, b"", None),
    ("no length", {S: F, D: F}, b"", None),
    ("superscript length", {S: F, D: F, "content-length": "3\u00b2"}, b"", None),
    ("arabic-indic length", {S: F, D: F, "content-length": "\u0661"*6}, b"", None),
    ("two lengths", {S: F, D: F, "content-length": ["30000", "30000"]}, b"", None),
    ("done without start", {D: F, "content-length": "30000"}, b"", None),
    ("two starts", {S: [F, F], D: F, "content-length": "30000"}, b"", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "body", "notice"), [c[1:] for c in CLASSIFY], ids=[c[0] for c in CLASSIFY]
)
def test_classify(headers, body, notice):
    req = parse_message(message(headers, body))
    if notice is None:
        with pytest.raises(uploads.UploadError):
            uploads.classify(req)
    else:
        assert uploads.classify(req) is notice


@pytest.mark.parametrize(
    ("spooled", "store", "ok"),
    [
        ("/uploads/upload.aB3xYz", "/uploads/upload.XXXXXX", True),
        ("uploads/upload.aB3xYz", "/uploads/upload.XXXXXX", True),
        ("/uploads/upload.aB3xYz", "uploads/upload.XXXXXX", True),
        ("/uploads/upload.aB3xY", "/uploads/upload.XXXXXX", False),  # five
        ("/uploads/upload.aB3xYz1", "/uploads/upload.XXXXXX", False),  # seven
        ("/uploads/upload.aB3-Yz", "/uploads/upload.XXXXXX", False),  # not mkstemp's
        ("/uploads/upload.aB3\u00e9Yz"[:22], "/uploads/upload.XXXXXX", False),
        ("/uploads/other.aB3xYz", "/uploads/upload.XXXXXX", False),
        ("/uploads/x/upload.aB3xYz", "/uploads/upload.XXXXXX", False),
        ("/config.sqlite", "/uploads/upload.XXXXXX", False),
        ("/uploads/../config", "/uploads/upload.XXXXXX", False),
        ("/uploads/upload../../x", "/uploads/upload.XXXXXX", False),
        ("/uploads/upload.aB3xYz", "/uploads/upload.XXXX", False),  # not a template
    ],
)
def test_store_pattern(spooled, store, ok):
    assert uploads.store_pattern_matches(spooled, store) is ok


@pytest.fixture
def root(tmp_path):
    (tmp_path / "uploads").mkdir()
    return tmp_path


def done_request(path: str, length: int | None, start: str | None = None):
    headers = {"x-mongrel2-upload-start": start or path, "x-mongrel2-upload-done": path}
    if length is not None:
        headers["content-length"] = str(length)
    else:
        headers["transfer-encoding"] = "chunked"
    return parse_message(message(headers))


STORE = "/uploads/upload.XXXXXX"


@pytest.mark.parametrize("spooled", ["/uploads/upload.abc123", "uploads/upload.abc123"])
def test_open_spooled_maps_through_the_chroot(root, spooled):
    (root / "uploads" / "upload.abc123").write_bytes(b"x" * 30000)
    stream, path, size = uploads.open_spooled(done_request(spooled, 30000), str(root), STORE)
    with stream:
        assert stream.read() == b"x" * 30000
        assert (path, size) == (str(root / "uploads" / "upload.abc123"), 30000)
        uploads.remove_spooled(path, stream)
    assert not os.path.exists(path)


def test_chunked_upload_needs_no_length(root):
    (root / "uploads" / "upload.cccccc").write_bytes(b"hello world")
    req = done_request("/uploads/upload.cccccc", None)
    stream, _, size = uploads.open_spooled(req, str(root), STORE)
    stream.close()
    assert size == 11


def test_a_file_swapped_in_after_the_checks_is_not_removed(root):
    path = root / "uploads" / "upload.swap01"
    path.write_bytes(b"12345")
    stream, local, _ = uploads.open_spooled(done_request(str(path)[len(str(root)):], 5),
                                           str(root), STORE)  # fmt: skip
    os.unlink(path)
    path.write_bytes(b"other")  # a new file under the same name
    with stream:
        uploads.remove_spooled(local, stream)
    assert path.read_bytes() == b"other"


@pytest.mark.parametrize(
    ("spooled", "length", "start", "setup"),
    [
        ("/uploads/upload.aaaaaa", 5, "/uploads/upload.bbbbbb", "a"),  # start and done differ
        ("/../etc/passwd", 5, None, None),  # escapes the root
        ("/uploads/../../x", 5, None, None),
        ("/uploads/upload.missin", 5, None, None),
        ("/uploads/upload.aaaaaa", 4, None, "a"),  # size differs from Content-Length
        ("/uploads/upload.linkkk", 5, None, "link"),  # symlink
        ("/uploads/upload.hardln", 5, None, "hardlink"),  # a second name of another file
        ("/uploads/upload.dirdir", 5, None, "dir"),  # a directory
        ("/uploads/upload.fifooo", 5, None, "fifo"),  # must not hang in open()
        ("/uploads/upload.foreig", 5, None, "foreign"),  # not the spool directory owner's
        ("/uploads", 5, None, None),
        ("/", 5, None, None),  # the root itself
        ("/config.sqlite", 5, None, "config"),  # a real file outside the pattern
        ("/uploads/a", 5, None, "a"),  # a real file in the directory, outside the pattern
    ],
)
def test_open_spooled_refuses(root, spooled, length, start, setup):
    target = root / "uploads" / spooled.rsplit("/", 1)[-1]
    if setup in ("a", "config"):
        (root / "config.sqlite").write_bytes(b"12345")
        (root / "uploads" / "a").write_bytes(b"12345")
        (root / "uploads" / "upload.aaaaaa").write_bytes(b"12345")
    elif setup == "link":
        (root / "target").write_bytes(b"12345")
        os.symlink(root / "target", target)
    elif setup == "hardlink":
        (root / "target").write_bytes(b"12345")
        os.link(root / "target", target)
    elif setup == "dir":
        target.mkdir()
    elif setup == "fifo":
        os.mkfifo(target)
    elif setup == "foreign":
        if os.geteuid() != 0:
            pytest.skip("needs root to give a file away")
        target.write_bytes(b"12345")
        os.chown(target, os.stat(root / "uploads").st_uid + 4242, -1)
    with pytest.raises(uploads.UploadError):
        uploads.open_spooled(done_request(spooled, length, start), str(root), STORE)
    if setup in ("a", "config"):
        assert (root / "config.sqlite").read_bytes() == b"12345"
