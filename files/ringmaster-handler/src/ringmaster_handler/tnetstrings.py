"""Tagged netstrings, the header encoding of Mongrel2 handlers with ``protocol='tnetstring'``.

Strings come back as ``bytes``: deciding how to decode them is the caller's business (PEP 3333
wants latin-1 for headers). Parsing is strict, because the input may be hostile.
"""

from ringmaster_handler.digits import is_digits
from ringmaster_handler.errors import ProtocolError

MAX_LENGTH_DIGITS = 9  # the tnetstring spec caps lengths at 999999999
# A nesting limit turns a deep ``[[[[...`` bomb into a ProtocolError instead of a RecursionError.
MAX_DEPTH = 32

_TRUE_FALSE = {b"true": True, b"false": False}


def loads(data: bytes) -> object:
    """Parse exactly one tnetstring that must span all of ``data``."""
    value, end = parse(data, 0)
    if end != len(data):
        raise ProtocolError("tnetstring: trailing data")
    return value


def parse(data: bytes, pos: int = 0) -> tuple[object, int]:
    """Parse one tnetstring at ``pos``; return it and the offset just after it."""
    return _parse(data, pos, len(data), 0)


def _parse(data: bytes, pos: int, limit: int, depth: int) -> tuple[object, int]:
    # ``limit`` is where the enclosing container ends: nothing may run past it.
    if depth > MAX_DEPTH:
        raise ProtocolError("tnetstring: nested too deeply")
    colon = data.find(b":", pos, min(pos + MAX_LENGTH_DIGITS + 1, limit))
    if colon <= pos:
        raise ProtocolError("tnetstring: missing or overlong length prefix")
    digits = data[pos:colon]
    if not is_digits(digits):
        raise ProtocolError("tnetstring: length is not a decimal number")
    start = colon + 1
    end = start + int(digits)
    if end >= limit:
        raise ProtocolError("tnetstring: truncated")
    tag = data[end]
    if tag == 0x2C:  # ,  byte string
        return data[start:end], end + 1
    if tag == 0x7D:  # }  dict
        return _parse_dict(data, start, end, depth), end + 1
    if tag == 0x5D:  # ]  list
        return _parse_list(data, start, end, depth), end + 1
    payload = data[start:end]
    if tag == 0x23:  # #  integer
        # One optional '-' then ASCII digits ("--5" once got through to int() as ValueError).
        magnitude = payload[1:] if payload[:1] == b"-" else payload
        if not is_digits(magnitude) or len(payload) > 20:
            raise ProtocolError("tnetstring: bad integer")
        return int(payload), end + 1
    if tag == 0x5E:  # ^  float
        try:
            return float(payload.decode("ascii")), end + 1
        except (UnicodeDecodeError, ValueError):
            raise ProtocolError("tnetstring: bad float") from None
    if tag == 0x21:  # !  boolean
        if payload not in _TRUE_FALSE:
            raise ProtocolError("tnetstring: bad boolean")
        return _TRUE_FALSE[payload], end + 1
    if tag == 0x7E:  # ~  null
        if payload:
            raise ProtocolError("tnetstring: null with a payload")
        return None, end + 1
    raise ProtocolError(f"tnetstring: unknown type tag {tag!r}")


def _parse_dict(data: bytes, pos: int, end: int, depth: int) -> dict[bytes, object]:
    result: dict[bytes, object] = {}
    while pos < end:
        key, pos = _parse(data, pos, end, depth + 1)
        if type(key) is not bytes:
            raise ProtocolError("tnetstring: dict key is not a string")
        if pos >= end:
            raise ProtocolError("tnetstring: dict key without a value")
        value, pos = _parse(data, pos, end, depth + 1)
        result[key] = value
    return result


def _parse_list(data: bytes, pos: int, end: int, depth: int) -> list[object]:
    result: list[object] = []
    while pos < end:
        value, pos = _parse(data, pos, end, depth + 1)
        result.append(value)
    return result


def dumps(value: object) -> bytes:
    """Encode a value; used by tests and tools to build messages."""
    if isinstance(value, bytes):
        return b"%d:%s," % (len(value), value)
    if isinstance(value, str):
        return dumps(value.encode("utf-8"))
    if value is None:
        return b"0:~"
    if isinstance(value, bool):  # before int: bool is an int
        payload, tag = (b"true" if value else b"false"), b"!"
    elif isinstance(value, int):
        payload, tag = str(value).encode("ascii"), b"#"
    elif isinstance(value, float):
        payload, tag = repr(value).encode("ascii"), b"^"
    elif isinstance(value, dict):
        payload = b"".join(dumps(k) + dumps(v) for k, v in value.items())
        tag = b"}"
    elif isinstance(value, list | tuple):
        payload, tag = b"".join(dumps(v) for v in value), b"]"
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as a tnetstring")
    return b"%d:%s%s" % (len(payload), payload, tag)
