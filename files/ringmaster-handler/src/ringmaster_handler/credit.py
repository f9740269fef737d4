"""The credit protocol between ``ringmaster-dispatcher`` and handlers in dispatcher mode.

A handler connects one DEALER socket to each dispatcher's ROUTER. Every message is a single
ZeroMQ frame (on the dispatcher side the ROUTER puts the peer's routing id in front): one
byte saying what it is, then for most kinds an 8-byte request id the dispatcher chose, then
the payload. One frame per message keeps the per-request Python work to one recv and one
send on each side.

handler -> dispatcher::

    H<json>          hello: I take requests. Sent on every (re)connection; json is informative
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
# Bytes of a streamed upload that may be on their way to a handler and not yet consumed.
UPLOAD_WINDOW = 256 * 1024
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
    """A short name for logs: host:pid (app)."""
    host = str(info.get("host", "?"))[:64]
    pid = str(info.get("pid", "?"))[:16]
    app = str(info.get("app", ""))[:80]
    return f"{host}:{pid}" + (f" ({app})" if app else "")


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
    if pos <= 2 or colon <= pos:
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
        digits = msg[pos:colon]
        if not digits.isdigit():
            return False
        end = colon + 1 + int(digits)
        if end > len(msg) or not _tns_is_idempotent(msg, colon + 1, end):
            return False
    # Anywhere in the message: a false alarm only makes a request "unsafe".
    return msg.find(_UPLOAD_KEY) < 0


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
    if colon < 0 or not digits.isdigit():
        return None, end
    start = colon + 1
    stop = start + int(digits)
    if stop >= end:
        return None, end
    return msg[start:stop], stop + 1  # skip the type byte


def reply_prefix_of(msg: bytes) -> bytes | None:
    """``SENDER LEN:CONN_ID, `` to answer a request message ourselves; None if malformed."""
    parts = msg.split(b" ", 2)
    if len(parts) < 3 or not parts[0] or not parts[1].isdigit() or len(parts[1]) > 10:
        return None
    return b"%s %d:%s, " % (parts[0], len(parts[1]), parts[1])


_MONITOR_EVENT = struct.Struct("=HI")


def monitor_event(frames: list[bytes]) -> tuple[int, int]:
    """(event, value) of a libzmq socket-monitor message; value is the fd for (dis)connects."""
    if len(frames) != 2 or len(frames[0]) != _MONITOR_EVENT.size:
        return 0, -1
    return _MONITOR_EVENT.unpack(frames[0])
