"""One request/response exchange with the WSGI app: start_response, write(), framing.

Mongrel2 does not parse replies, so every reply must delimit itself for keep-alive to work:
Content-Length when the length is known, chunked encoding for HTTP/1.1 otherwise, and
otherwise the connection is closed by sending Mongrel2 the empty "close" message.

Mongrel2 (1.12.2) drops a client connection when more than 16 reply messages for it wait in
its delivery queue, and its handler task keeps reading the SUB socket without yielding while
messages are there: a burst of back-to-back messages kills the connection even when the
client is fast (measured: 50 x 1 KB or 20 x 1 MB without gaps fail; gaps of size/200 MB/s
work). Streamed output is therefore paced: after the first BURST_MESSAGES of a response,
consecutive messages are spaced by size / stream_rate, chunks that arrive while we wait are
coalesced into messages of up to STREAM_MESSAGE_BYTES, and a slow producer's chunks
(server-sent events) go out at once. The unpaced first messages keep a body of a few MiB
from holding its handler for size / stream_rate (16 ms per MiB at the default rate).
Nothing in the protocol tells a handler how fast the client reads (Mongrel2's download
credits go round-robin to any handler process), so a client much slower than stream_rate can
still be cut off by Mongrel2 once about 16 messages pile up for it.
"""

import logging
import re
import time
from collections.abc import Callable

from ringmaster_handler.digits import parse_count
from ringmaster_handler.response import (
    CHUNKED_END,
    HOP_BY_HOP,
    chunk,
    date_line,
    simple_response,
    status_code,
)

log = logging.getLogger("ringmaster_handler.exchange")

STREAM_MESSAGE_BYTES = 1024 * 1024
DEFAULT_STREAM_RATE = 64 * 1024 * 1024  # bytes/s; see the module docstring
# Messages of one response sent back to back before pacing starts: well under Mongrel2's 16.
BURST_MESSAGES = 4
# Even tiny messages need a gap, or Mongrel2 reads a burst of them in one go.
MIN_MESSAGE_GAP = 0.0003
# A chunk that took the app longer than this to produce goes out at once (latency matters
# more than message count for a slow producer).
SLOW_PRODUCER_GAP = 0.002

_NO_BODY_STATUSES = frozenset({204, 304})
# RFC 9110 section 5.6.2: token = 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\r\n\x00]")


class AppError(Exception):
    """The app broke the WSGI contract (bad status, headers, body type)."""


class Exchange:
    """State of one response, from start_response to the last reply message."""

    __slots__ = (
        "_buffer",
        "_buffered",
        "_last_chunk",
        "_max_payload",
        "_next_send",
        "_prefix",
        "_push",
        "_send",
        "_send_last",
        "_stream_rate",
        "body_allowed",
        "chunked",
        "content_length",
        "head",
        "headers",
        "is_head",
        "keep_alive",
        "messages",
        "request_id",
        "status",
        "version",
        "written",
    )

    def __init__(
        self,
        send: Callable[[bytes], None],
        version: str,
        keep_alive: bool,
        is_head: bool,
        stream_rate: float = DEFAULT_STREAM_RATE,
        prefix: bytes = b"",
        send_last: Callable[[bytes], None] | None = None,
        push: Callable[[], None] | None = None,
        max_payload: int = 0,
    ):
        # ``send`` takes whole reply messages; ``prefix`` is their Mongrel2 framing.
        # ``send_last``, if given, takes the response's last message instead (dispatcher
        # mode: it also tells the dispatcher the request is finished, saving a message).
        # ``push``, if given, makes messages sent so far leave now: ``send`` may hold them
        # back to send several responses in one burst, which paced streams must not wait for.
        # ``max_payload``: the most bytes one reply message may carry after the prefix
        # (dispatcher links refuse frames above credit.MAX_FRAME); 0 for no limit.
        self._max_payload = max_payload
        self._send = send
        self._send_last = send_last
        self._push = push
        self._prefix = prefix
        self.version = version
        self.keep_alive = keep_alive  # what the client asked for; the response may veto it
        self.is_head = is_head
        self.status: str | None = None
        self.headers: list | None = None
        self.head: bytes | None = None  # the encoded status line and headers, once decided
        self.content_length: int | None = None
        self.body_allowed = True
        self.chunked = False
        self.written = 0  # body bytes accepted (after Content-Length truncation)
        self.messages = 0  # reply messages actually sent
        self.request_id: str | None = None  # X-Request-Id (a safe token), unless the app sets it
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._last_chunk = 0.0
        self._next_send = 0.0
        self._stream_rate = stream_rate

    # -- the WSGI callables ---------------------------------------------------------------

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.head is not None:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        if type(headers) is not list:
            raise AppError(f"response headers must be a list, not {type(headers).__name__}")
        self.status = status
        self.headers = headers
        return self.write

    def write(self, data: bytes) -> None:
        if type(data) is not bytes:
            data = _as_bytes(data)
        if self.head is None:
            self._start_stream()
        self._body(data)

    # -- driving the app ------------------------------------------------------------------

    def run(self, app, environ: dict) -> None:
        """Call the app and send its whole response. Exceptions propagate to the caller."""
        result = app(environ, self.start_response)
        try:
            if (type(result) is list or type(result) is tuple) and self.head is None:
                self._send_sequence(result)
            else:
                for data in result:
                    if type(data) is not bytes:
                        data = _as_bytes(data)
                    if data:
                        if self.head is None:
                            self._start_stream()
                        self._body(data)
                self.finish()
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def _send_sequence(self, parts) -> None:
        # The common case (a list of bytes): the length is known up front, so the whole
        # response goes out as one Content-Length-delimited message.
        total = 0
        for p in parts:
            if type(p) is not bytes:
                return self._send_parts_slowly(parts)
            total += len(p)
        if self.status is None:
            raise AppError("the app returned without calling start_response")
        self._decide_head(total)
        if self.is_head or self.content_length is None:
            payload = self.head  # no body may follow
        elif self.content_length != total:
            self._buffer.append(self.head)  # the app announced another length
            self._buffered = len(self.head)
            return self._send_parts_slowly(parts)
        elif len(parts) == 1:
            payload = self.head + parts[0]
        else:
            payload = self.head + b"".join(parts)
        self._emit(payload, self.keep_alive)
        self.written = total
        if not self.keep_alive:
            self._emit(b"", True)

    def _send_parts_slowly(self, parts) -> None:
        for data in parts:
            if type(data) is not bytes:
                data = _as_bytes(data)
            if data:
                if self.head is None:
                    self._start_stream()
                self._body(data)
        self.finish()

    def finish(self) -> None:
        if self.head is None:
            if self.status is None:
                raise AppError("the app returned without calling start_response")
            self._decide_head(0)  # nothing was written: the body is empty
            self._queue(self.head)  # type: ignore[arg-type]
        if self.chunked and not self.is_head:
            self._queue(CHUNKED_END)
        # (Decided before the flush, so the flush knows whether a close message follows.)
        if (
            self.content_length is not None
            and self.written < self.content_length
            and not self.is_head
            and self.body_allowed
        ):
            log.error(
                "app sent %d of the %d bytes its Content-Length announced; closing",
                self.written,
                self.content_length,
            )
            self.keep_alive = False
        self._flush(self.keep_alive)
        if not self.keep_alive:
            self._emit(b"", True)

    def fail(self, exc: BaseException) -> None:
        """The app raised: answer 500 if nothing went out yet, else cut the connection."""
        if self.messages == 0:
            self._buffer.clear()
            self._buffered = 0
            self._emit(
                simple_response(
                    500, self.keep_alive, None if not self.is_head else b"", self.request_id
                ),
                self.keep_alive,
            )
            if not self.keep_alive:
                self._emit(b"", True)
        else:
            self._emit(b"", True)

    # -- internals -------------------------------------------------------------------------

    def _start_stream(self) -> None:
        self._decide_head(None)
        self._queue(self.head)  # type: ignore[arg-type]

    def _decide_head(self, known_length: int | None) -> None:
        """Encode status and headers and choose how the body is delimited."""
        if self.status is None:
            raise AppError("write() or body before start_response")
        app = _app_head(self.status, self.headers)
        key = (known_length, self.keep_alive, self.version, self.is_head)
        plan = app.plans.get(key)
        if plan is None:
            plan = app.plan(*key)
        tail, self.content_length, self.keep_alive, self.chunked, self.body_allowed = plan
        # Everything but the Date line is the same for every response with this plan.
        head = app.prefix if app.has_date else app.prefix + date_line()
        if self.request_id is not None and not app.has_request_id:
            head += b"X-Request-Id: %s\r\n" % self.request_id.encode("ascii")
        self.head = head + tail

    def _body(self, data: bytes) -> None:
        if self.is_head or not self.body_allowed:
            return
        if self.content_length is not None:
            room = self.content_length - self.written
            if len(data) > room:
                log.error("app wrote more than its Content-Length (%d); truncating", room)
                data = data[:room]
                self.keep_alive = False
                if not data:
                    return
        self.written += len(data)
        self._queue(chunk(data) if self.chunked else data)
        self._maybe_flush()

    def _queue(self, data: bytes) -> None:
        self._buffer.append(data)
        self._buffered += len(data)

    def _maybe_flush(self) -> None:
        now = time.monotonic()
        # How long the app took for this chunk (our own pacing sleeps excluded).
        slow_producer = now - self._last_chunk > SLOW_PRODUCER_GAP
        if slow_producer or now >= self._next_send or self._buffered >= STREAM_MESSAGE_BYTES:
            self._flush()
            now = time.monotonic()
        # else: keep coalescing until the pacing gap has passed
        self._last_chunk = now

    def _flush(self, last: bool = False) -> None:
        buf = self._buffer
        if not buf:
            return
        payload = buf[0] if len(buf) == 1 else b"".join(buf)
        buf.clear()
        self._buffered = 0
        now = time.monotonic()
        if now < self._next_send:
            time.sleep(self._next_send - now)
        in_pieces = self._emit(payload, last)
        if self._push is not None:
            self._push()
        if not in_pieces:  # (pieces were paced one by one)
            self._pace(len(payload))

    def _pace(self, size: int) -> None:
        # Measured from the end of this send, so the gap holds however long the send took.
        if self.messages >= BURST_MESSAGES:
            self._next_send = time.monotonic() + max(MIN_MESSAGE_GAP, size / self._stream_rate)

    def _emit(self, payload: bytes, last: bool = False) -> bool:
        """Send one reply message; ``last``: nothing follows it for this response. True when
        it was too long and went as several messages, each paced already."""
        if self._max_payload and len(payload) > self._max_payload:
            self._emit_pieces(payload, last)
            return True
        self.messages += 1
        if last and self._send_last is not None:
            self._send_last(self._prefix + payload)
        else:
            self._send(self._prefix + payload)
        return False

    def _emit_pieces(self, payload: bytes, last: bool) -> None:
        # Too long for one message (a 64 MiB body returned at once): several messages, paced
        # like a stream so Mongrel2's 16-message delivery queue is not flooded.
        limit = self._max_payload
        view = memoryview(payload)
        total = len(payload)
        for start in range(0, total, limit):
            piece = view[start : start + limit]
            now = time.monotonic()
            if now < self._next_send:
                time.sleep(self._next_send - now)
            final = start + limit >= total
            self.messages += 1
            if final and last and self._send_last is not None:
                self._send_last(self._prefix + piece)
            else:
                self._send(self._prefix + piece)
                if self._push is not None:
                    self._push()
            self._pace(len(piece))


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise AppError(f"the app produced {type(data).__name__}, WSGI bodies must be bytes")


class _AppHead:
    """What an app's status and header list mean for the reply, minus per-request parts."""

    __slots__ = (
        "body_allowed", "close", "content_length", "has_date", "has_request_id", "plans",
        "prefix",
    )  # fmt: skip

    def __init__(self, status: str, headers: list) -> None:
        try:
            code = status_code(status)
        except ValueError as exc:
            raise AppError(str(exc)) from None
        lines = ["HTTP/1.1 ", status, "\r\n"]
        self.content_length: int | None = None
        self.close = False
        self.has_date = False
        self.has_request_id = False
        for item in headers:
            if type(item) is not tuple or len(item) != 2:
                raise AppError(f"response header {item!r} is not a (name, value) tuple")
            name, value = item
            if type(name) is not str or type(value) is not str:
                raise AppError(f"response header {item!r} is not a pair of str")
            # A name that is not a token, or a value with CR/LF/NUL, would let the app (or
            # whoever fed it the text) split the response or smuggle headers.
            if _TOKEN.fullmatch(name) is None:
                raise AppError(f"response header name {name!r} is not an RFC 9110 token")
            if _BAD_VALUE.search(value) is not None:
                raise AppError(f"response header {name!r} has CR, LF or NUL in its value")
            lname = name.lower()
            if lname == "content-length":
                length = parse_count(value.strip(" \t"))
                if length is None:
                    raise AppError(f"invalid Content-Length {value!r}")
                if self.content_length is not None:
                    if length != self.content_length:
                        raise AppError("conflicting Content-Length headers")
                    continue  # a repeat of the same value: send it once
                self.content_length = length
            elif lname in HOP_BY_HOP:
                if lname == "connection" and "close" in value.lower():
                    self.close = True
                continue
            elif lname == "date":
                self.has_date = True
            elif lname == "x-request-id":
                self.has_request_id = True
            lines += (name, ": ", value, "\r\n")
        try:
            self.prefix = "".join(lines).encode("latin-1")
        except UnicodeEncodeError as exc:
            raise AppError(f"response status or headers are not latin-1: {exc}") from None
        self.body_allowed = code >= 200 and code not in _NO_BODY_STATUSES
        if not self.body_allowed:
            self.content_length = None
        # (known length, client keep-alive, version, HEAD) -> what _decide_head decides
        self.plans: dict[tuple, tuple] = {}

    def plan(
        self, known_length: int | None, keep_alive: bool, version: str, is_head: bool
    ) -> tuple[bytes, int | None, bool, bool, bool]:
        """The head's tail (after the Date line), Content-Length, keep-alive, chunked, body."""
        key = (known_length, keep_alive, version, is_head)
        body_allowed = self.body_allowed
        content_length = self.content_length
        keep_alive = keep_alive and not self.close
        chunked = False
        parts = []
        if (
            body_allowed
            and content_length is None
            and known_length is not None
            and not (is_head and known_length == 0)
        ):
            # (A HEAD answer's length should be the GET one's; an empty body says nothing.)
            content_length = known_length
            parts.append(b"Content-Length: %d\r\n" % known_length)
        if body_allowed and content_length is None and not is_head:
            if version == "HTTP/1.1":
                chunked = True
                parts.append(b"Transfer-Encoding: chunked\r\n")
            else:
                keep_alive = False  # the end of the body is the end of the connection
        if not keep_alive:
            parts.append(b"Connection: close\r\n\r\n")
        elif version != "HTTP/1.1":
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        result = (
            b"".join(parts),
            content_length if body_allowed else None,
            keep_alive,
            chunked,
            body_allowed,
        )
        if len(self.plans) >= _PLANS_PER_HEAD:  # (bodies of ever-new lengths)
            self.plans.clear()
        self.plans[key] = result
        return result


_PLANS_PER_HEAD = 64


# Most apps answer with a handful of distinct status/header combinations (hello-world: one),
# so their validation and encoding are done once. Bounded: headers with per-request values
# (cookies, ETags) just miss.
_HEAD_CACHE_SIZE = 256
_head_cache: dict[tuple, _AppHead] = {}


def _app_head(status: str, headers: list) -> _AppHead:
    try:
        key = (status, *headers)
        cached = _head_cache.get(key)
    except TypeError:  # an unhashable item: let _AppHead report it
        return _AppHead(status, headers)
    if cached is None:
        cached = _AppHead(status, headers)
        if len(_head_cache) >= _HEAD_CACHE_SIZE:
            _head_cache.clear()
        _head_cache[key] = cached
    return cached
