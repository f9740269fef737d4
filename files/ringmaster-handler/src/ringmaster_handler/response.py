"""Bytes that go back to Mongrel2: reply framing, status lines, headers, chunked encoding."""

import time
from collections.abc import Sequence
from email.utils import formatdate
from http import HTTPStatus

from ringmaster_handler.digits import is_digits

MAX_CONN_IDS = 128  # Mongrel2's limits.handler_targets default

# Hop-by-hop headers belong to the connection, which we manage; PEP 3333 forbids apps to
# set them, so they are dropped (an app's "Connection: close" is still honoured).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)

CHUNKED_END = b"0\r\n\r\n"


def reply_prefix(sender: bytes, conn_ids: Sequence[bytes]) -> bytes:
    """``SENDER LEN:ID ID ..., `` -- everything before the payload of a reply message.

    An empty payload after this prefix tells Mongrel2 to close those connections.
    """
    if not 1 <= len(conn_ids) <= MAX_CONN_IDS:
        raise ValueError(f"a reply addresses 1 to {MAX_CONN_IDS} connections, not {len(conn_ids)}")
    ids = b" ".join(conn_ids)
    return b"%s %d:%s, " % (sender, len(ids), ids)


def single_reply_prefix(sender: bytes, conn_id: bytes) -> bytes:
    # The per-request fast path of reply_prefix.
    return b"%s %d:%s, " % (sender, len(conn_id), conn_id)


def chunk(data: bytes) -> bytes:
    """One chunk of Transfer-Encoding: chunked."""
    return b"%x\r\n%s\r\n" % (len(data), data)


_date_second = -1
_date_line = b""


def date_line() -> bytes:
    """The ``Date: ...\\r\\n`` line; formatting happens at most once a second."""
    global _date_second, _date_line
    now = time.time()
    second = int(now)
    if second != _date_second:
        _date_line = f"Date: {formatdate(now, usegmt=True)}\r\n".encode("ascii")
        _date_second = second
    return _date_line


def simple_response(
    code: int, keep_alive: bool, body: bytes | None = None, request_id: str | None = None
) -> bytes:
    """A complete small response the handler makes itself (errors). ``request_id``: a safe
    token (observe.request_id_for) for an X-Request-Id header."""
    status = HTTPStatus(code)
    if body is None:
        body = f"{code} {status.phrase}\n".encode("ascii")
    rid_line = "" if request_id is None else f"X-Request-Id: {request_id}\r\n"
    head = (
        f"HTTP/1.1 {code} {status.phrase}\r\n"
        f"{date_line().decode('ascii')}{rid_line}"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode("ascii") + body


def wants_keep_alive(version: str, connection: object) -> bool:
    """Whether the client asked to keep the connection open after this request."""
    if connection is not None:
        if type(connection) is list:
            connection = ",".join(connection)
        tokens = {t.strip() for t in str(connection).lower().split(",")}
        if "close" in tokens:
            return False
        if "keep-alive" in tokens:
            return version in ("HTTP/1.1", "HTTP/1.0")
    return version == "HTTP/1.1"


def status_code(status: str) -> int:
    """Validate a WSGI status string ("200 OK") and return its code."""
    if (
        type(status) is not str
        or len(status) < 4
        or not is_digits(status[:3])
        or status[3] != " "
        or "\n" in status
        or "\r" in status
        or "\x00" in status
    ):
        raise ValueError(f"invalid WSGI status {status!r}")
    return int(status[:3])
