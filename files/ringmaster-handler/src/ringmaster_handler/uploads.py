"""Bodies Mongrel2 spooled to disk (``upload.temp_store``), and what proves a notice is its own.

For a large or chunked body Mongrel2 sends two messages with empty bodies: one with
``x-mongrel2-upload-start: PATH`` when it starts writing the temp file, one with both
``-start`` and ``-done`` when the file is complete. PATH is the ``upload.temp_store``
pattern with mkstemp's six X replaced, inside Mongrel2's chroot.

Mongrel2 passes a client's own ``X-Mongrel2-Upload-*`` headers through on ordinary requests,
so a notice is only believed when the request is one Mongrel2 spools (src/request.c,
src/connection.c in 1.12.2): Content-Length wins over Transfer-Encoding; a Content-Length
above ``limits.content_length`` is spooled, anything smaller is read and sent inline (so an
empty body with a positive length can only be a spool notice); without Content-Length only
Transfer-Encoding exactly ``chunked`` (case-sensitive) is spooled. For those Mongrel2
overwrites ``-start`` (and ``-done`` in the done notice) with its own value. Anything else
carrying the headers is a forgery, answered 400.

Start and done notices of one upload may reach different handler processes (Mongrel2's
PUSH deals them round-robin), so nothing is remembered between them: what is checked is
what every process can check alone. The path must be one the temp-store pattern produces,
and the file a regular file directly in that directory, reached without symlinks, with a
single link, owned by the directory's owner (the Mongrel2 user) and as long as announced.
"""

import contextlib
import enum
import os
import re
import stat
from typing import BinaryIO

from ringmaster_handler.digits import parse_count
from ringmaster_handler.request import UPLOAD_DONE, UPLOAD_START, Request

# The collection's mongrel2 role sets upload.temp_store to this (mongrel2_upload_dir).
DEFAULT_TEMP_STORE = "/uploads/upload.XXXXXX"
_TEMPLATE = "XXXXXX"
# glibc's mkstemp replaces the six X with letters and digits only.
_MKSTEMP_SUFFIX = re.compile(r"[A-Za-z0-9]{6}")


class UploadError(Exception):
    """Upload headers we must not honour; the client gets a 400 and no file is touched."""


class Notice(enum.Enum):
    NONE = "none"  # no upload headers at all
    STARTED = "started"  # Mongrel2 began spooling: nothing to do yet
    DONE = "done"  # the spooled body is complete


def classify(req: Request) -> Notice:
    """What an upload notice is; UploadError when Mongrel2 cannot have written it."""
    h = req.headers
    start, done = h.get(UPLOAD_START), h.get(UPLOAD_DONE)
    if start is None and done is None:
        return Notice.NONE
    if req.body or not spooled_by_mongrel2(h):
        raise UploadError("upload headers on a request Mongrel2 does not spool")
    if type(start) is not str:
        # Mongrel2 sets -start on both notices, replacing whatever the client sent.
        raise UploadError("no single x-mongrel2-upload-start")
    if done is None:
        return Notice.STARTED
    if done == start:
        return Notice.DONE
    # Mongrel2 replaces -done only in the done notice, where it equals -start: this is the
    # start notice carrying the client's own -done header. Its real done notice follows.
    return Notice.STARTED


def spooled_by_mongrel2(h: dict) -> bool:
    """Whether Mongrel2 spools a request with these headers (then its body arrives empty)."""
    length = h.get("content-length")
    if length is not None:
        # Mongrel2 reads bodies up to limits.content_length inline, so an empty body
        # with a positive length means it spooled this one.
        count = parse_count(length)
        return count is not None and count > 0
    return h.get("transfer-encoding") == "chunked"


def store_pattern_matches(spooled: str, temp_store: str) -> bool:
    """Whether mkstemp on ``temp_store`` can have produced ``spooled``.

    Mongrel2 runs in its chroot, so "/uploads/x" and "uploads/x" name the same file."""
    if not temp_store.endswith(_TEMPLATE):
        return False
    head = temp_store.lstrip("/")[: -len(_TEMPLATE)]
    rest = spooled.lstrip("/")
    return rest.startswith(head) and _MKSTEMP_SUFFIX.fullmatch(rest[len(head) :]) is not None


def map_path(upload_root: str, spooled: str) -> str:
    """Where Mongrel2's (chrooted, possibly relative) path lives on our filesystem."""
    root = os.path.realpath(upload_root)
    # Mongrel2's working directory is its chroot, so relative and absolute mean the same.
    candidate = os.path.normpath(os.path.join(root, spooled.lstrip("/")))
    if os.path.commonpath([root, candidate]) != root or candidate == root:
        raise UploadError(f"spooled upload path {spooled!r} escapes the upload root")
    return candidate


def open_spooled(
    req: Request, upload_root: str, temp_store: str = DEFAULT_TEMP_STORE
) -> tuple[BinaryIO, str, int]:
    """Open the completed temp file; return (file, local path, size). Touches nothing."""
    h = req.headers
    done = h.get(UPLOAD_DONE)
    if type(done) is not str or h.get(UPLOAD_START) != done:
        raise UploadError("malformed upload notice headers")
    if not store_pattern_matches(done, temp_store):
        raise UploadError(f"{done!r} is not a name upload.temp_store {temp_store!r} gives")
    path = map_path(upload_root, done)
    # Refuse symlinks anywhere in the path below the root as well as at the end.
    if os.path.realpath(path) != path:
        raise UploadError(f"spooled upload {path!r} is reached through a symlink")
    try:
        directory = os.lstat(os.path.dirname(path))
        # O_NONBLOCK: a FIFO planted there must not hang us in open().
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise UploadError(f"cannot open spooled upload {path!r}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UploadError(f"spooled upload {path!r} is not a regular file")
        if st.st_nlink != 1:
            raise UploadError(f"spooled upload {path!r} has {st.st_nlink} links")
        if st.st_uid != directory.st_uid or st.st_dev != directory.st_dev:
            raise UploadError(f"spooled upload {path!r} is not the spool directory owner's")
        length = h.get("content-length")
        if length is not None and parse_count(length) != st.st_size:
            raise UploadError(
                f"spooled upload {path!r} has {st.st_size} bytes, Content-Length says {length!r}"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), path, st.st_size
    except BaseException:
        os.close(fd)
        raise


def remove_spooled(path: str, opened: BinaryIO | None = None) -> None:
    """Unlink a consumed temp file (Mongrel2 never deletes finished ones).

    With ``opened``: only if the name still leads to that file, so a file swapped in
    after the checks is left alone."""
    if opened is not None:
        try:
            now, then = os.lstat(path), os.fstat(opened.fileno())
        except FileNotFoundError:
            return
        if (now.st_dev, now.st_ino) != (then.st_dev, then.st_ino):
            return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
