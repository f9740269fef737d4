"""Pure parsing of one Mongrel2 request message into a :class:`Request`.

Wire format (one ZeroMQ frame)::

    SENDER CONN_ID PATH LEN:HEADERS,LEN:BODY,     (JSON headers, in a netstring)
    SENDER CONN_ID PATH LEN:HEADERS}LEN:BODY,     (tnetstring headers: a bare dict)

HEADERS is a JSON object by default, or a tnetstring dict for ``protocol='tnetstring'``.
Mongrel2 puts its own keys in upper case (METHOD, VERSION, PATH, QUERY, PATTERN, URL_SCHEME,
REMOTE_ADDR, ...) and lower-cases every HTTP header name, so the two never collide.
"""

import json
import json.scanner

from ringmaster_handler import tnetstrings
from ringmaster_handler.digits import is_digits
from ringmaster_handler.errors import ProtocolError
from ringmaster_handler.netstrings import MAX_LENGTH_DIGITS

HeaderValue = str | list[str]

# Keys of the spooled-upload notices Mongrel2 adds to a request's headers.
UPLOAD_START = "x-mongrel2-upload-start"
UPLOAD_DONE = "x-mongrel2-upload-done"

_MAX_CONN_ID_DIGITS = 10
# The C scanner behind json.loads, called directly: it skips two layers of Python wrappers.
# strict=False admits the raw control characters Mongrel2 leaves in header values.
_json_scan = json.scanner.make_scanner(json.JSONDecoder(strict=False))


class Request:
    """One message from Mongrel2: an HTTP request or a JSON control message."""

    __slots__ = ("body", "conn_id", "headers", "path", "sender")

    def __init__(
        self,
        sender: bytes,
        conn_id: bytes,
        path: str,
        headers: dict[str, HeaderValue],
        body: bytes,
    ) -> None:
        self.sender = sender
        self.conn_id = conn_id  # kept as the ASCII digits: replies reuse them verbatim
        self.path = path
        self.headers = headers
        self.body = body

    @property
    def method(self) -> str:
        return self.headers["METHOD"]  # type: ignore[return-value]

    @property
    def is_control(self) -> bool:
        """Mongrel2's own notices (disconnect, credits, ...) arrive with METHOD "JSON"."""
        return self.headers.get("METHOD") == "JSON"

    def control_data(self) -> dict:
        """Decode a control message's JSON body (``{"type": "disconnect"}`` etc.)."""
        try:
            data = json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"control message body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ProtocolError("control message body is not a JSON object")
        return data

    def __repr__(self) -> str:
        return (
            f"Request(sender={self.sender!r}, conn_id={self.conn_id!r}, "
            f"method={self.headers.get('METHOD')!r}, path={self.path!r}, body={len(self.body)}B)"
        )


def parse_message(msg: bytes) -> Request:
    """Parse one raw message; raise :class:`ProtocolError` on anything malformed."""
    parts = msg.split(b" ", 3)
    if len(parts) != 4:
        raise ProtocolError("message has fewer than four space-separated fields")
    sender, conn_id, path, rest = parts
    if not sender:
        raise ProtocolError("empty sender")
    if not is_digits(conn_id) or len(conn_id) > _MAX_CONN_ID_DIGITS:
        raise ProtocolError("connection id is not a decimal number")
    if rest[-1:] != b",":
        raise ProtocolError("message does not end with a body netstring")
    headers, pos = _read_headers(rest)
    # The body netstring, inlined: this runs for every request.
    colon = rest.find(b":", pos, pos + MAX_LENGTH_DIGITS + 1)
    if colon <= pos or not is_digits(rest[pos:colon]):
        raise ProtocolError("body: missing or bad length prefix")
    start = colon + 1
    end = start + int(rest[pos:colon])
    if end != len(rest) - 1:
        raise ProtocolError("body: length does not match the message")
    body = rest[start:end] if end > start else b""
    method = headers.get("METHOD")
    if type(method) is not str or not method:
        raise ProtocolError("headers carry no METHOD")
    # Mongrel2 writes PATH into the headers too; prefer it, as the JSON copy is the one
    # Mongrel2 escapes properly.
    hpath = headers.get("PATH")
    return Request(
        sender, conn_id, hpath if type(hpath) is str else path.decode("latin-1"), headers, body
    )


def _read_headers(rest: bytes) -> tuple[dict[str, HeaderValue], int]:
    # JSON headers come wrapped in a netstring ("LEN:{...},"); tnetstring headers are a bare
    # tnetstring dict ("LEN:...}"). The byte after the length-delimited payload tells which.
    colon = rest.find(b":", 0, MAX_LENGTH_DIGITS + 1)
    if colon <= 0 or not is_digits(rest[:colon]):
        raise ProtocolError("headers: missing or bad length prefix")
    end = colon + 1 + int(rest[:colon])
    if end >= len(rest):
        raise ProtocolError("headers: truncated")
    if rest[end] == 0x7D:  # "}"
        try:
            value, pos = tnetstrings.parse(rest, 0)
        except ProtocolError as exc:
            raise ProtocolError(f"headers: bad tnetstring ({exc})") from None
        return _native_dict(value), pos  # type: ignore[arg-type]
    if rest[end] != 0x2C:  # ","
        raise ProtocolError("headers: netstring without its ',' terminator")
    start = colon + 1
    if rest[start] == 0x7B:  # "{": JSON, as Mongrel2 sends it by default
        return _json_headers(rest[start:end]), end + 1
    return parse_headers(rest[start:end]), end + 1


def parse_headers(raw: bytes) -> dict[str, HeaderValue]:
    """Decode a JSON or tnetstring header block into latin-1 native strings (PEP 3333)."""
    if raw[:1] == b"{":
        return _json_headers(raw)
    try:
        value = tnetstrings.loads(raw)
    except ProtocolError as exc:
        raise ProtocolError(f"headers are neither JSON nor a tnetstring ({exc})") from None
    return _native_dict(value)


def _json_headers(raw: bytes) -> dict[str, HeaderValue]:
    # Mongrel2 escapes only '"' and '\\' and copies every other byte raw, so the JSON may
    # hold control characters and non-UTF-8 bytes. Decoding it as latin-1 maps every byte
    # to one code point, which is exactly the native-string form PEP 3333 wants.
    text = raw.decode("latin-1")
    try:
        headers, end = _json_scan(text, 0)
    except (ValueError, StopIteration, RecursionError) as exc:
        raise ProtocolError(f"headers are not valid JSON: {exc!r}") from None
    if type(headers) is not dict or end != len(text):
        raise ProtocolError("headers are not a single JSON object")
    return headers


def _native_dict(value: object) -> dict[str, HeaderValue]:
    if type(value) is not dict:
        raise ProtocolError("tnetstring headers are not a dict")
    return {k.decode("latin-1"): _native(v) for k, v in value.items()}


def _native(value: object) -> HeaderValue:
    if type(value) is bytes:
        return value.decode("latin-1")
    if type(value) is list:
        return [v.decode("latin-1") if type(v) is bytes else str(v) for v in value]
    return str(value)


def raw_reply_prefix(msg: bytes) -> bytes | None:
    """``SENDER LEN:CONN_ID, `` for a message that may not parse, to answer it anyway."""
    parts = msg.split(b" ", 2)
    if len(parts) < 3 or not parts[0]:
        return None
    conn_id = parts[1]
    if not is_digits(conn_id) or len(conn_id) > _MAX_CONN_ID_DIGITS:
        return None
    return b"%s %d:%s, " % (parts[0], len(conn_id), conn_id)
