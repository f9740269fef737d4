"""Lengths and numbers from clients and Mongrel2: ASCII digits only, ProtocolError otherwise."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringmaster_handler import netstrings, tnetstrings
from ringmaster_handler.digits import is_digits, parse_count
from ringmaster_handler.environ import split_host
from ringmaster_handler.errors import ProtocolError
from ringmaster_handler.request import parse_message

SUPERSCRIPT_TWO = "\xb2".encode()  # '²': str.isdigit() is true, int() raises
ARABIC_ONE = "\u0661".encode()  # U+0661: str.isdigit() is true, int() reads 1


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0), ("123", 123), (b"42", 42), ("", None), ("\xb2", None), ("\u0661", None),
        ("+1", None), ("-1", None), ("1_0", None), (" 1", None), ("1 ", None), (None, None),
        (5, None), ("9" * 20, None), ("\uff11", None),  # fullwidth '1'
    ],
)  # fmt: skip
def test_parse_count(text, value):
    assert parse_count(text) == value
    if isinstance(text, str | bytes) and text:
        assert is_digits(text) == (value is not None or len(text) > 19)


@pytest.mark.parametrize(
    "raw",
    [
        b"3:--5#",  # used to reach int() and raise ValueError
        b"2:+5#",
        b"3:1_0#",
        b"2:" + SUPERSCRIPT_TWO + b"#",
        b"2:" + ARABIC_ONE + b"#",
        b"1:-#",
        b"0:#",
        SUPERSCRIPT_TWO + b":ab,",
        ARABIC_ONE + b":a,",
        b"3: 12#",
    ],
)  # fmt: skip
def test_tnetstring_numbers_are_ascii(raw):
    with pytest.raises(ProtocolError):
        tnetstrings.loads(raw)


@pytest.mark.parametrize(
    "raw", [b"1_0:" + b"x" * 10 + b",", ARABIC_ONE + b":a,", b"+1:a,", b" 1:a,", b"-1:a,"]
)
def test_netstring_lengths_are_ascii(raw):
    with pytest.raises(ProtocolError):
        netstrings.read_netstring(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"s " + ARABIC_ONE + b' / 16:{"METHOD":"GET"},0:,',
        b"s 1 / " + ARABIC_ONE + b'6:{"METHOD":"GET"},0:,',
        b's 1 / 16:{"METHOD":"GET"},' + ARABIC_ONE + b":x,",
        b's 1 / 16:{"METHOD":"GET"},+1:x,',
    ],
)
def test_message_lengths_are_ascii(raw):
    with pytest.raises(ProtocolError):
        parse_message(raw)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("a:81", ("a", "81")),
        ("a:\xb2", ("a:\xb2", "80")),
        ("a:\u0661", ("a:\u0661", "80")),
        ("[::1]:\u0661", ("[::1]", "80")),
    ],
)
def test_host_port_is_ascii(host, expected):
    assert split_host(host, "http") == expected


# Tnetstring-shaped input built from the characters that trip number parsing.
_tricky = st.sampled_from(
    [b"-", b"+", b"_", b" ", b"0", b"1", b"9", b".", b"e", SUPERSCRIPT_TWO, ARABIC_ONE, b"x"]
)
_payload = st.lists(_tricky, max_size=6).map(b"".join)


@given(_payload, st.sampled_from(b"#^!~,]}"), st.booleans())
def test_number_like_tnetstrings_only_raise_protocol_error(payload, tag, honest_length):
    length = str(len(payload)).encode() if honest_length else payload[:3]
    with contextlib.suppress(ProtocolError):
        tnetstrings.loads(length + b":" + payload + bytes([tag]))


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_random_bytes_only_raise_protocol_error(prefix, tail):
    for data in (prefix + tail, prefix + b":" + tail, b"s 1 / " + prefix + tail):
        with contextlib.suppress(ProtocolError):
            tnetstrings.loads(data)
        with contextlib.suppress(ProtocolError):
            netstrings.read_netstring(data)
        with contextlib.suppress(ProtocolError):
            parse_message(data)
