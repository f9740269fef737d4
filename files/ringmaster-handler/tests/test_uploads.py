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
        ("spoofed_upload_headers", Notice.NONE),  # a client's forged headers, no body announced
        ("post_json", Notice.NONE),
        ("get_json", Notice.NONE),
    ],
)
def test_classify_captured(fixture_bytes, name, notice):
    assert uploads.classify(parse_message(fixture_bytes(name))) is notice


def message(headers: dict, body: bytes = b"") -> bytes:
    import json

    raw = json.dumps({"METHOD": "POST", "PATH": "/", **headers}).encode()
    return b"s 1 / " + write_netstring(raw) + write_netstring(body)


@pytest.mark.parametrize(
    ("headers", "body", "notice"),
    [
        # A small forged request that really carries its body is not a notice.
        ({"x-mongrel2-upload-start": "/f", "x-mongrel2-upload-done": "/f",
          "content-length": "3"}, b"abc", Notice.NONE),
        ({"x-mongrel2-upload-start": "/f", "x-mongrel2-upload-done": "/f",
          "content-length": "0"}, b"", Notice.NONE),
        ({"x-mongrel2-upload-done": "/f", "content-length": "30000"}, b"", Notice.DONE),
    ],
)  # fmt: skip
def test_classify_forgeries(headers, body, notice):
    assert uploads.classify(parse_message(message(headers, body))) is notice


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


@pytest.mark.parametrize("spooled", ["/uploads/upload.abc123", "uploads/upload.abc123"])
def test_open_spooled_maps_through_the_chroot(root, spooled):
    (root / "uploads" / "upload.abc123").write_bytes(b"x" * 30000)
    stream, path, size = uploads.open_spooled(done_request(spooled, 30000), str(root))
    with stream:
        assert stream.read() == b"x" * 30000
    assert (path, size) == (str(root / "uploads" / "upload.abc123"), 30000)
    uploads.remove_spooled(path)
    assert not os.path.exists(path)


def test_chunked_upload_needs_no_length(root):
    (root / "uploads" / "upload.c").write_bytes(b"hello world")
    stream, _, size = uploads.open_spooled(done_request("/uploads/upload.c", None), str(root))
    stream.close()
    assert size == 11


@pytest.mark.parametrize(
    ("spooled", "length", "start", "setup"),
    [
        ("/uploads/a", 5, "/uploads/b", "a"),  # start and done differ
        ("/../etc/passwd", 5, None, None),  # escapes the root
        ("/uploads/../../x", 5, None, None),
        ("/uploads/missing", 5, None, None),
        ("/uploads/a", 4, None, "a"),  # size differs from Content-Length
        ("/uploads/link", 5, None, "link"),  # symlink
        ("/uploads", 5, None, None),  # a directory
        ("/", 5, None, None),  # the root itself
    ],
)
def test_open_spooled_refuses(root, spooled, length, start, setup):
    if setup == "a":
        (root / "uploads" / "a").write_bytes(b"12345")
    elif setup == "link":
        (root / "target").write_bytes(b"12345")
        os.symlink(root / "target", root / "uploads" / "link")
    with pytest.raises(uploads.UploadError):
        uploads.open_spooled(done_request(spooled, length, start), str(root))
