import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringmaster_handler import credit
from ringmaster_handler.tnetstrings import parse


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("get_json", True),
        ("get_tns", True),
        ("head_connection_close", True),
        ("get_http10_no_host", True),
        ("post_json", False),
        ("post_tns_http10", False),
        ("upload_start", False),
        ("upload_done", False),
        ("disconnect_json", False),
        ("disconnect_tns", False),
    ],
)
def test_idempotent_requests_are_recognised(fixture_bytes, fixture, expected):
    assert credit.is_idempotent(fixture_bytes(fixture)) is expected


def tns_request(pairs: list[tuple[bytes, bytes]], body: bytes = b"") -> bytes:
    inner = b"".join(b"%d:%s,%d:%s," % (len(k), k, len(v), v) for k, v in pairs)
    headers = b"%d:%s}" % (len(inner), inner)
    parse(headers)  # a real tnetstring
    return b"s 1 /p " + headers + b"%d:%s," % (len(body), body)


def test_a_header_value_cannot_fake_the_method():
    sneaky = tns_request([(b"x-a", b"6:METHOD,3:GET,"), (b"METHOD", b"POST")])
    assert not credit.is_idempotent(sneaky)
    assert credit.is_idempotent(tns_request([(b"REMOTE_ADDR", b"1"), (b"METHOD", b"GET")]))


def test_json_body_cannot_fake_the_method():
    headers = b'{"PATH":"/","METHOD":"POST"}'
    body = b'"METHOD":"GET"'
    msg = b"s 1 / %d:%s,%d:%s," % (len(headers), headers, len(body), body)
    assert not credit.is_idempotent(msg)


@given(st.binary(max_size=200))
def test_garbage_is_never_idempotent_and_never_raises(data):
    credit.is_idempotent(data)
    credit.reply_prefix_of(data)
    credit.parse_hello(data)
    credit.describe_peer(credit.parse_hello(data))


@given(st.binary(max_size=40))
def test_garbage_after_a_valid_prefix_does_not_raise(tail):
    credit.is_idempotent(b"s 1 /p 30:" + tail)
    credit.is_idempotent(b"s 1 /p 12:{" + tail)


def test_reply_prefix():
    assert credit.reply_prefix_of(b"uuid 42 /x 2:{},0:,") == b"uuid 2:42, "
    assert credit.reply_prefix_of(b"uuid x42 /x") is None
    assert credit.reply_prefix_of(b"nothing") is None


def test_rid_bytes_are_eight_bytes_and_wrap():
    assert len(credit.rid_bytes(0)) == credit.RID_LEN
    assert credit.rid_bytes(2**64 + 5) == credit.rid_bytes(5)


def test_hello_round_trip():
    frame = credit.hello_frame({"pid": 7, "host": "h", "app": "m:app"})
    info = credit.parse_hello(frame)
    assert info["v"] == credit.PROTOCOL_VERSION
    assert credit.describe_peer(info) == "h:7 (m:app)"
    assert credit.parse_hello(b"H[1,2]") == {}


def test_monitor_event():
    assert credit.monitor_event([struct.pack("=HI", 512, 17), b"tcp://x"]) == (512, 17)
    assert credit.monitor_event([b"short"]) == (0, -1)


def test_disconnect(fixture_bytes):
    assert credit.is_disconnect(fixture_bytes("disconnect_json"))
    assert credit.is_disconnect(fixture_bytes("disconnect_tns"))
    assert not credit.is_disconnect(fixture_bytes("get_json"))


# -- length fields and connection ids: ASCII digits only ---------------------------------------

# superscript two, Arabic-Indic one, fullwidth one: str.isdigit() says yes to all three.
NOT_ASCII_DIGITS = [
    "\u00b2",
    "\u0661",
    "\uff11",
    "+1",
    " 1",
    "-1",
    "1 ",
    "1_0",
    "",
    "0x1",
    "12345678901",
]


@pytest.mark.parametrize("text", NOT_ASCII_DIGITS)
def test_only_ascii_digits_make_a_length(text):
    assert not credit.is_ascii_digits(text)
    assert credit.parse_length(text) is None
    assert not credit.is_ascii_digits(text.encode())
    assert credit.parse_length(text.encode()) is None


@pytest.mark.parametrize("text", ["0", "7", "42", "1234567890"])
def test_ascii_digits_are_lengths(text):
    assert credit.parse_length(text) == credit.parse_length(text.encode()) == int(text)


@pytest.mark.parametrize("text", NOT_ASCII_DIGITS)
def test_no_odd_digits_in_conn_ids_or_netstring_lengths(text):
    conn = text.encode()
    if text != "1 ":  # (that one is conn id 1 and an empty path)
        assert credit.reply_prefix_of(b"uuid " + conn + b" /x 2:{},0:,") is None
    headers = b'{"METHOD":"GET"}'
    msg = b"uuid 1 /x " + conn + b":" + headers + b",0:,"
    assert not credit.is_idempotent(msg)
    assert credit.headers_span(msg) is None
    tns = b"6:METHOD," + conn + b":GET,"
    assert not credit.is_idempotent(b"uuid 1 /x %d:%s}0:," % (len(tns), tns))


def test_stream_messages_are_recognised():
    first = b'uuid 3 /up 38:{"PATH":"/up","UPLOAD_STREAM":"0","METHOD":"POST"},2:ab,'
    more = b'uuid 3 /up 24:{"UPLOAD_STREAM":"4041"},3:cde,'
    last = b'uuid 3 /up 50:{"UPLOAD_STREAM":"4987467","UPLOAD_STREAM_DONE":"1"},0:,'
    assert credit.upload_stream_kind(first) == credit.STREAM_FIRST
    assert credit.upload_stream_kind(more) == credit.STREAM_MORE
    assert credit.upload_stream_kind(last) == credit.STREAM_MORE
    assert not credit.upload_stream_done(more) and credit.upload_stream_done(last)
    assert bytes(credit.body_of(more)) == b"cde"
    # A client's own header or body cannot pass for Mongrel2's key.
    sneaky = b'uuid 3 /up 40:{"x":"\\"UPLOAD_STREAM\\":\\"0","METHOD":"POST"},17:"UPLOAD_STREAM":",'
    assert credit.upload_stream_kind(sneaky) == credit.NOT_STREAMED
    assert not credit.is_idempotent(first.replace(b"POST", b"GET"))


def test_ctl_message_format():
    # The format Mongrel2 1.12.2 accepted on loopback (see DISPATCHER.md, streamed uploads).
    assert credit.ctl_message(b"uuid 2:42, ", credits=262144) == (
        b"uuid 4:X 42, 29:3:ctl,19:7:credits,6:262144#}]"
    )
    assert (
        credit.ctl_message(b"uuid 1:7, ", cancel=True) == b"uuid 3:X 7, 23:3:ctl,13:6:cancel,1:1,}]"
    )
    parsed = parse(credit.ctl_message(b"u 1:7, ", credits=5, cancel=True).split(b", ", 1)[1])
    assert parsed[0] == [b"ctl", {b"credits": 5, b"cancel": b"1"}]
