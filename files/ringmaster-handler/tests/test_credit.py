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
