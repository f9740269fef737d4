"""Netstrings (``LEN:DATA,``), the framing Mongrel2 puts around headers and body."""

from ringmaster_handler.digits import is_digits
from ringmaster_handler.errors import ProtocolError

# Mongrel2 never sends a length with more digits than this; refusing longer prefixes up
# front keeps int() from chewing on hostile megabyte-long digit strings.
MAX_LENGTH_DIGITS = 10


def read_netstring(data: bytes, pos: int = 0) -> tuple[bytes, int]:
    """Return the payload of the netstring starting at ``pos`` and the offset after it."""
    colon = data.find(b":", pos, pos + MAX_LENGTH_DIGITS + 1)
    if colon <= pos:
        raise ProtocolError("netstring: missing or overlong length prefix")
    digits = data[pos:colon]
    if not is_digits(digits):
        raise ProtocolError("netstring: length is not a decimal number")
    start = colon + 1
    end = start + int(digits)
    if end >= len(data) or data[end] != 0x2C:  # b","
        raise ProtocolError("netstring: truncated or missing ',' terminator")
    return data[start:end], end + 1


def write_netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)
