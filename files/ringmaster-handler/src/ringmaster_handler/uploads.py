"""Bodies Mongrel2 spooled to disk (``upload.temp_store``).

For a large or chunked body Mongrel2 sends two messages with empty bodies: one with
``x-mongrel2-upload-start: PATH`` when it starts writing the temp file, one with both
``-start`` and ``-done`` when the file is complete. PATH is inside Mongrel2's chroot.

Mongrel2 passes a client's own ``X-Mongrel2-Upload-*`` headers through on ordinary requests,
so a notice is only believed when it has the shape only Mongrel2 can give it: an empty body
although the request announced one (Content-Length > 0, or chunked, which Mongrel2 always
spools and whose notice headers it overwrites). The file must also lie under the upload
root, be a regular file reached without symlinks, and have the announced size.
"""

import contextlib
import enum
import os
import stat
from typing import BinaryIO

from ringmaster_handler.request import UPLOAD_DONE, UPLOAD_START, Request


class UploadError(Exception):
    """A genuine-looking upload notice we cannot honour; the client gets a 400."""


class Notice(enum.Enum):
    NONE = "none"  # an ordinary request (possibly with forged headers)
    STARTED = "started"  # Mongrel2 began spooling: nothing to do yet
    DONE = "done"  # the spooled body is complete


def classify(req: Request) -> Notice:
    h = req.headers
    start = h.get(UPLOAD_START)
    if start is None and UPLOAD_DONE not in h:
        return Notice.NONE
    if req.body or not _announces_body(h):
        return Notice.NONE
    return Notice.DONE if UPLOAD_DONE in h else Notice.STARTED


def _announces_body(h: dict) -> bool:
    te = h.get("transfer-encoding")
    if type(te) is str and "chunked" in te.lower():
        return True
    length = h.get("content-length")
    return type(length) is str and length.isdigit() and int(length) > 0


def map_path(upload_root: str, spooled: str) -> str:
    """Where Mongrel2's (chrooted, possibly relative) path lives on our filesystem."""
    root = os.path.realpath(upload_root)
    # Mongrel2's working directory is its chroot, so relative and absolute mean the same.
    candidate = os.path.normpath(os.path.join(root, spooled.lstrip("/")))
    if os.path.commonpath([root, candidate]) != root or candidate == root:
        raise UploadError(f"spooled upload path {spooled!r} escapes the upload root")
    return candidate


def open_spooled(req: Request, upload_root: str) -> tuple[BinaryIO, str, int]:
    """Open the completed temp file; return (file, local path, size)."""
    h = req.headers
    start, done = h.get(UPLOAD_START), h.get(UPLOAD_DONE)
    if type(start) is not str or type(done) is not str or not done:
        raise UploadError("malformed upload notice headers")
    if start != done:
        raise UploadError(f"upload start {start!r} and done {done!r} differ")
    path = map_path(upload_root, done)
    # Refuse symlinks anywhere in the path below the root as well as at the end.
    if os.path.realpath(path) != path:
        raise UploadError(f"spooled upload {path!r} is reached through a symlink")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise UploadError(f"cannot open spooled upload {path!r}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UploadError(f"spooled upload {path!r} is not a regular file")
        length = h.get("content-length")
        if type(length) is str and length.isdigit() and int(length) != st.st_size:
            raise UploadError(
                f"spooled upload {path!r} has {st.st_size} bytes, Content-Length says {length}"
            )
        return os.fdopen(fd, "rb"), path, st.st_size
    except BaseException:
        os.close(fd)
        raise


def remove_spooled(path: str) -> None:
    # Mongrel2 never deletes finished temp files; whoever consumed them must.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
