"""The credit protocol between ``ringmaster-dispatcher`` and handlers in dispatcher mode.

A handler connects one DEALER socket to each dispatcher's ROUTER. Every message is a single
ZeroMQ frame (on the dispatcher side the ROUTER puts the peer's routing id in front): one
byte saying what it is, then for most kinds an 8-byte request id the dispatcher chose, then
the payload. One frame per message keeps the per-request Python work to one recv and one
send on each side.

handler -> dispatcher::

    H<json>          hello: I take requests. Sent on every (re)connection; json is informative
                     but for "v" (protocol version) and "proc": a token the same in the
                     hellos of all threads of one process (--threads), which a request
                     timeout stops together (an older handler sends none: no change)
    D<rid><reply>    the last reply message for request rid: rid is finished (the credit)
    M<rid><reply>    a reply message for rid; more follow (streamed responses)
    F<rid>           rid is finished and there is nothing (more) to send
    B                bye: give me nothing more; I finish what I hold
    K<rid><n>        I have consumed n more body bytes of streamed upload rid (n: 4 bytes,
                     little-endian unsigned): the dispatcher lets Mongrel2 read that much more

dispatcher -> handler::

    Q<rid><request>  one Mongrel2 request message, verbatim
    S<rid><request>  the first Mongrel2 message of a request whose body streams after it
                     (Mongrel2's upload.stream): its body netstring holds the first bytes,
                     the rest follows in U frames and ends with E
    U<rid><bytes>    more body bytes of streamed request rid
    E<rid>           the body of streamed request rid is complete
    X<rid>           abort rid: its client is gone or its body was refused. If the app has
                     not started it, drop it and answer F<rid>; any reply is dropped anyway
    C<rid>           cancel rid if it has not started: another handler got it. Answer F<rid>
    A                bye acknowledged: nothing follows
    W                who are you? (the dispatcher does not know this peer): send hello again

The handler answers every Q and S with exactly one D or F (after any number of M), in the
order it received them; the dispatcher counts a handler's requests with that. F without any
reply is legitimate only after C or X; otherwise the dispatcher answers the client 502.

Trust: the dispatcher never forwards the Mongrel2 address (``SENDER LEN:CONN_ID, ``) a
handler writes. A reply must start with exactly the prefix of the request it answers
(single connection id); anything else is dropped and the request answered 502 or closed.
No frame in either direction is longer than MAX_FRAME bytes (libzmq's MAXMSGSIZE
enforces it: a peer that sends more is disconnected).
"""

import json
import struct

PROTOCOL_VERSION = 2
RID_LEN = 8
HEAD_LEN = 1 + RID_LEN  # kind byte + request id

# Handler -> dispatcher.
HELLO = b"H"
DONE = b"D"
MORE = b"M"
FINISHED = b"F"
BYE = b"B"
CONSUMED = b"K"
# Dispatcher -> handler.
REQUEST = b"Q"
STREAM_REQUEST = b"S"
UPLOAD_DATA = b"U"
UPLOAD_END = b"E"
ABORT = b"X"
CANCEL = b"C"
BYE_ACK = b"A"
WHO = b"W"

# The same kinds as ints, which is what indexing a bytes object gives (cheaper than slicing).
K_HELLO, K_DONE, K_MORE, K_FINISHED, K_BYE = (ord(k) for k in (HELLO, DONE, MORE, FINISHED, BYE))
K_CONSUMED = ord(CONSUMED)
K_REQUEST, K_CANCEL, K_BYE_ACK, K_WHO = (ord(k) for k in (REQUEST, CANCEL, BYE_ACK, WHO))
K_STREAM_REQUEST, K_UPLOAD_DATA, K_UPLOAD_END, K_ABORT = (
    ord(k) for k in (STREAM_REQUEST, UPLOAD_DATA, UPLOAD_END, ABORT)
)

# The largest frame either side sends or accepts (ZMQ_MAXMSGSIZE on both sockets). Handlers
# split longer replies; the dispatcher asks Mongrel2 for upload bytes in smaller steps.
MAX_FRAME = 1 << 20
# libzmq checks MAXMSGSIZE against the frame on the wire, and CURVE wraps each frame in a
# MESSAGE command: 8 bytes of name, an 8-byte nonce, a 16-byte MAC and a flags byte.
CURVE_OVERHEAD = 33


def wire_limit(curve: bool) -> int:
    """ZMQ_MAXMSGSIZE for a link that carries frames of at most MAX_FRAME bytes."""
    return MAX_FRAME + (CURVE_OVERHEAD if curve else 0)


# Bytes of a streamed upload that may be on their way to a handler and not yet consumed. Only
# a request a handler has taken gets credits, so this is held per busy handler, not per
# upload waiting. 1 MiB: the best of the window sweep in docs/performance.md (bench/whole.py).
UPLOAD_WINDOW = 1024 * 1024
CONSUMED_LEN = struct.Struct("<I")

# How every Mongrel2 disconnect notice ends, in both header protocols (the body is fixed JSON).
DISCONNECT_TAIL = b'21:{"type":"disconnect"},'

_MAX_LENGTH_DIGITS = 10
_JSON_METHOD = b'"METHOD":"'
_UPLOAD_KEY = b"x-mongrel2-upload-"
# Mongrel2 puts METHOD second among tnetstring headers; stop looking after this many.
_TNS_MAX_PAIRS = 64
_RID = struct.Struct("<Q")


def rid_bytes(n: int) -> bytes:
    """Request id ``n`` (taken modulo 2**64) as the 8 bytes that go on the wire."""
    return _RID.pack(n & 0xFFFFFFFFFFFFFFFF)


def hello_frame(info: dict) -> bytes:
    return HELLO + json.dumps({"v": PROTOCOL_VERSION, **info}, sort_keys=True).encode()


def parse_hello(frame: bytes) -> dict:
    """What a hello says about its handler; garbage gives an empty dict, never an error."""
    try:
        info = json.loads(frame[1:].decode("utf-8", "replace"))
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def describe_peer(info: dict) -> str:
    """A short name for logs: host:pid (app). Escaped: a peer cannot forge a log line."""
    host = _log_safe(str(info.get("host", "?"))[:64])
    pid = _log_safe(str(info.get("pid", "?"))[:16])
    app = _log_safe(str(info.get("app", ""))[:80])
    return f"{host}:{pid}" + (f" ({app})" if app else "")


def _log_safe(text: str) -> str:
    # Printable ASCII stays as it is (the usual names); anything else is escaped as repr does.
    if text.isascii() and text.isprintable():
        return text
    return repr(text)[1:-1]


def is_disconnect(msg: bytes) -> bool:
    return msg.endswith(DISCONNECT_TAIL)


def is_idempotent(msg: bytes) -> bool:
    """Whether a Mongrel2 request message is a GET or HEAD that may safely run twice.

    Only those may wait in a busy handler's queue and be moved to another handler later
    (which can mean running them twice). Spooled-upload notices never qualify: their temp
    file is consumed by the first run. Anything unparsable is treated as unsafe. This runs
    for most requests under load, hence the terse parsing.
    """
    # SENDER CONN_ID PATH LEN:HEADERS... (none of the first three contains a space)
    pos = msg.find(b" ", msg.find(b" ", msg.find(b" ") + 1) + 1) + 1
    colon = msg.find(b":", pos, pos + 1 + _MAX_LENGTH_DIGITS)
    if pos <= 2 or colon <= pos or not is_ascii_digits(msg[pos:colon]):
        return False
    if msg[colon + 1 : colon + 2] == b"{":
        # JSON headers. Mongrel2 escapes every '"' inside keys and values, so the first
        # '"METHOD":"' after the start is the METHOD key itself (HTTP header names arrive
        # lower-cased), and every request has one before its body.
        at = msg.find(_JSON_METHOD, colon)
        if at < 0:
            return False
        at += len(_JSON_METHOD)
        if not (msg.startswith(b'GET"', at) or msg.startswith(b'HEAD"', at)):
            return False
    else:
        end = colon + 1 + int(msg[pos:colon])
        if end > len(msg) or not _tns_is_idempotent(msg, colon + 1, end):
            return False
    # Anywhere in the message: a false alarm only makes a request "unsafe". Streamed
    # uploads (UPLOAD_STREAM) are consumed as they arrive: they cannot run twice either.
    return msg.find(_UPLOAD_KEY) < 0 and msg.find(_STREAM_KEY) < 0


def _tns_is_idempotent(msg: bytes, pos: int, end: int) -> bool:
    # A tnetstring dict body: key, value, key, value... each "LEN:DATA" plus a type byte.
    # Walked by the lengths, so a header value that happens to contain "6:METHOD," is
    # skipped. Mongrel2 puts METHOD second.
    for _ in range(_TNS_MAX_PAIRS):
        if pos >= end:
            return False
        key, pos = _tns_item(msg, pos, end)
        if key is None:
            return False
        value, pos = _tns_item(msg, pos, end)
        if value is None:
            return False
        if key == b"METHOD":
            return value in (b"GET", b"HEAD")
    return False


def _tns_item(msg: bytes, pos: int, end: int) -> tuple[bytes | None, int]:
    colon = msg.find(b":", pos, min(pos + 1 + _MAX_LENGTH_DIGITS, end))
    digits = msg[pos:colon]
    if colon < 0 or not is_ascii_digits(digits):
        return None, end
    start = colon + 1
    stop = start + int(digits)
    if stop >= end:
        return None, end
    return msg[start:stop], stop + 1  # skip the type byte


def reply_prefix_of(msg: bytes) -> bytes | None:
    """``SENDER LEN:CONN_ID, `` to answer a request message ourselves; None if malformed.

    It also names the client connection (the dispatcher's key for per-connection order and
    uploads), and every reply to the request must start with exactly it. Found with two
    ``find``s: no copy of the (possibly large) message.
    """
    sp = msg.find(b" ", 0, 256)
    end = msg.find(b" ", sp + 1, sp + 2 + _MAX_LENGTH_DIGITS)
    if sp <= 0 or end <= sp + 1:
        return None
    conn = msg[sp + 1 : end]
    if not conn.isdigit():  # (bytes.isdigit is ASCII-only, unlike str.isdigit)
        return None
    return msg[:sp] + _LENGTH_COLON[end - sp - 1] + conn + b", "


# " 1:", " 2:"... : the start of a reply prefix's netstring, per connection id length.
_LENGTH_COLON = [b" %d:" % n for n in range(_MAX_LENGTH_DIGITS + 1)]


_MONITOR_EVENT = struct.Struct("=HI")


def monitor_event(frames: list[bytes]) -> tuple[int, int]:
    """(event, value) of a libzmq socket-monitor message; value is the fd for (dis)connects."""
    if len(frames) != 2 or len(frames[0]) != _MONITOR_EVENT.size:
        return 0, -1
    return _MONITOR_EVENT.unpack(frames[0])


# -- lengths and ids ----------------------------------------------------------------------


def is_ascii_digits(text: bytes | str) -> bool:
    """Whether ``text`` is 1-10 ASCII digits: a length or id we may pass to ``int``.

    ``str.isdigit`` accepts superscripts and Arabic-Indic digits (and ``int`` reads the
    latter); ``int`` also takes '+1', ' 1', '1_0'. bytes.isdigit is ASCII-only, but one rule
    for both is simpler to trust.
    """
    if isinstance(text, str):
        if not text.isascii():
            return False
        text = text.encode("ascii")
    return 0 < len(text) <= _MAX_LENGTH_DIGITS and text.isdigit()


def parse_length(text: bytes | str) -> int | None:
    """A length field as an int, or None unless it is plain ASCII digits."""
    return int(text) if is_ascii_digits(text) else None


# -- Mongrel2 messages: headers, body, streamed uploads -----------------------------------

_STREAM_KEY = b"UPLOAD_STREAM"
_STREAM_DONE_KEY = b"UPLOAD_STREAM_DONE"
_JSON_STREAM = b'"UPLOAD_STREAM":"'
_JSON_STREAM_DONE = b'"UPLOAD_STREAM_DONE":"'
# A continuation message's JSON headers hold nothing but the stream keys, in this order.
_JSON_CONTINUATION = b'{"UPLOAD_STREAM":"'
_JSON_CONTENT_LENGTH = b'"content-length":"'

# What upload_stream_kind says.
NOT_STREAMED, STREAM_FIRST, STREAM_MORE = 0, 1, 2


def headers_span(msg: bytes) -> tuple[int, int] | None:
    """(start, end) of the headers netstring's data in a request message; None if malformed."""
    pos = msg.find(b" ", msg.find(b" ", msg.find(b" ") + 1) + 1) + 1
    colon = msg.find(b":", pos, pos + 1 + _MAX_LENGTH_DIGITS)
    if pos <= 2 or colon <= pos:
        return None
    n = parse_length(msg[pos:colon])
    if n is None or colon + 1 + n >= len(msg):
        return None
    return colon + 1, colon + 1 + n


def body_span(msg: bytes, headers_end: int) -> tuple[int, int] | None:
    """(start, end) of the body netstring's data, which follows the headers' ``,`` or ``}``."""
    pos = headers_end + 1
    colon = msg.find(b":", pos, pos + 1 + _MAX_LENGTH_DIGITS)
    if colon < 0:
        return None
    n = parse_length(msg[pos:colon])
    if n is None or colon + 1 + n > len(msg):
        return None
    return colon + 1, colon + 1 + n


def _tns_headers(msg: bytes, start: int, end: int) -> dict[bytes, bytes] | None:
    """The first pairs of a tnetstring headers dict (keys -> raw values), walked by lengths."""
    found: dict[bytes, bytes] = {}
    pos = start
    for _ in range(_TNS_MAX_PAIRS):
        if pos >= end:
            break
        key, pos = _tns_item(msg, pos, end)
        if key is None:
            return None
        value, pos = _tns_item(msg, pos, end)
        if value is None:
            return None
        found.setdefault(key, value)
    return found


def upload_stream_kind(msg: bytes) -> int:
    """NOT_STREAMED, STREAM_FIRST (headers + UPLOAD_STREAM) or STREAM_MORE (body only).

    Mongrel2's ``upload.stream``: the first message is the request with an upper-case
    ``UPLOAD_STREAM`` header (client header names arrive lower-cased, so only Mongrel2 can
    write it); the next ones have nothing but ``UPLOAD_STREAM`` (+ ``UPLOAD_STREAM_DONE``).
    Cheap for ordinary requests: one bounded ``find`` in the headers.
    """
    span = headers_span(msg)
    if span is None:
        return NOT_STREAMED
    start, end = span
    if msg[start : start + 1] == b"{":
        if msg.startswith(_JSON_CONTINUATION, start):
            return STREAM_MORE
        # Values have their quotes escaped, so this can only be Mongrel2's own key.
        return STREAM_FIRST if msg.find(_JSON_STREAM, start, end) >= 0 else NOT_STREAMED
    if msg.find(_STREAM_KEY, start, end) < 0:
        return NOT_STREAMED
    pairs = _tns_headers(msg, start, end)
    if pairs is None or _STREAM_KEY not in pairs:
        return NOT_STREAMED
    return STREAM_FIRST if b"METHOD" in pairs else STREAM_MORE


def upload_stream_done(msg: bytes) -> bool:
    """Whether a streamed-upload message is the last one (``UPLOAD_STREAM_DONE``)."""
    span = headers_span(msg)
    if span is None:
        return False
    start, end = span
    if msg[start : start + 1] == b"{":
        return msg.find(_JSON_STREAM_DONE, start, end) >= 0
    pairs = _tns_headers(msg, start, end)
    return pairs is not None and _STREAM_DONE_KEY in pairs


def body_of(msg: bytes) -> memoryview | None:
    """The body bytes of a request message, without copying; None if malformed."""
    span = headers_span(msg)
    if span is None:
        return None
    body = body_span(msg, span[1])
    return None if body is None else memoryview(msg)[body[0] : body[1]]


def content_length_of(msg: bytes) -> int | None:
    """The request's Content-Length (ASCII digits only), or None (absent, chunked, bad)."""
    span = headers_span(msg)
    if span is None:
        return None
    start, end = span
    if msg[start : start + 1] == b"{":
        at = msg.find(_JSON_CONTENT_LENGTH, start, end)
        if at < 0:
            return None
        at += len(_JSON_CONTENT_LENGTH)
        close = msg.find(b'"', at, min(end, at + 1 + _MAX_LENGTH_DIGITS))
        return None if close < 0 else parse_length(msg[at:close])
    pairs = _tns_headers(msg, start, end)
    value = None if pairs is None else pairs.get(b"content-length")
    return None if value is None else parse_length(value)


def ctl_message(prefix: bytes, *, credits: int = 0, cancel: bool = False) -> bytes:
    """Mongrel2's extended reply ``SENDER LEN:X CONN_ID, [ "ctl", {...} ]`` for one connection.

    ``credits``: let Mongrel2 read that many more bytes of a streamed upload; ``cancel``:
    disconnect the client and end the upload task. ``prefix`` is the request's reply prefix.
    """
    sender, _, rest = prefix.partition(b" ")
    conn = rest[rest.index(b":") + 1 : -2]
    pairs = b""
    if credits:
        n = b"%d" % credits
        pairs += b"7:credits,%d:%s#" % (len(n), n)
    if cancel:
        pairs += b"6:cancel,1:1,"
    body = b"3:ctl,%d:%s}" % (len(pairs), pairs)
    target = b"X " + conn
    return b"%s %d:%s, %d:%s]" % (sender, len(target), target, len(body), body)
