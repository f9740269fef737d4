import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringmaster_handler import tnetstrings
from ringmaster_handler.errors import ProtocolError
from ringmaster_handler.netstrings import write_netstring
from ringmaster_handler.request import parse_message

# name -> (sender, conn_id, METHOD, path, body, some header checks)
CASES = {
    "get_json": (b"cap-send-ident", b"1", "GET", "/hello/w%C3%B6rld%2Fx", b"",
                 {"x-dup": ["one", "two"], "QUERY": "a=1&b=%20c", "FRAGMENT": "frag",
                  "x-bin": '\xff\xfe"q\\', "method": "evil", "URL_SCHEME": "http"}),
    "get_tns": (b"cap-send-ident2", b"3", "GET", "/tns/x", b"",
                {"x-dup": ["one", "two"], "PATTERN": "/tns/", "QUERY": "q=1"}),
    "post_json": (b"cap-send-ident", b"2", "POST", "/echo", b"hello world",
                  {"content-length": "11", "content-type": "text/plain"}),
    "post_tns_http10": (b"cap-send-ident2", b"4", "POST", "/tns/x", b"abcde",
                        {"VERSION": "HTTP/1.0", "content-length": "5"}),
    "get_regex_route_http10": (b"cap-send-ident", b"5", "GET", "/app/foo/bar", b"",
                               {"PATTERN": "/app/(.*)"}),
    "head_connection_close": (b"cap-send-ident", b"6", "HEAD", "/", b"",
                              {"connection": "close"}),
    "upload_start": (b"cap-send-ident", b"8", "POST", "/up", b"",
                     {"x-mongrel2-upload-start": "/uploads/upload.QtTUwb"}),
    "upload_done": (b"cap-send-ident", b"8", "POST", "/up", b"",
                    {"x-mongrel2-upload-done": "/uploads/upload.QtTUwb"}),
    "upload_chunked_done": (b"cap-send-ident", b"9", "POST", "/upc", b"",
                            {"transfer-encoding": "chunked"}),
    "get_http10_no_host": (b"cap-send-ident", b"10", "GET", "/x", b"",
                           {"REMOTE_ADDR": "127.0.0.1"}),
    "disconnect_json": (b"cap-send-ident", b"1", "JSON", "@*", b'{"type":"disconnect"}', {}),
    "disconnect_tns": (b"cap-send-ident2", b"3", "JSON", "@*", b'{"type":"disconnect"}', {}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_captured_messages(fixture_bytes, name):
    sender, conn_id, method, path, body, headers = CASES[name]
    req = parse_message(fixture_bytes(name))
    assert (req.sender, req.conn_id, req.method, req.path, req.body) == (
        sender,
        conn_id,
        method,
        path,
        body,
    )
    for key, value in headers.items():
        assert req.headers[key] == value
    assert req.is_control == (method == "JSON")


@pytest.mark.parametrize("name", ["disconnect_json", "disconnect_tns"])
def test_disconnect_is_a_control_message(fixture_bytes, name):
    req = parse_message(fixture_bytes(name))
    assert req.control_data() == {"type": "disconnect"}


def test_json_and_tnetstring_headers_agree(fixture_bytes):
    a = parse_message(fixture_bytes("get_json")).headers
    b = parse_message(fixture_bytes("get_tns")).headers
    assert a["x-dup"] == b["x-dup"] == ["one", "two"]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"sender",
        b"sender 1 /",
        b"sender x / 2:{},0:,",  # conn id not numeric
        b" 1 / 2:{},0:,",  # empty sender
        b"s 1 / 2:{},0:,",  # no METHOD
        b's 1 / 14:{"METHOD":1},0:,',  # METHOD not a string
        b's 1 / 16:{"METHOD":"GET"},0:',  # body netstring unterminated
        b's 1 / 16:{"METHOD":"GET"},5:ab,',  # body truncated
        b's 1 / 16:{"METHOD":"GET"},0:,extra',
        b's 1 / 15:{"METHOD":"GET",0:,',  # bad JSON
        b"s 1 / 2:[],0:,",  # JSON but not an object
        b"s 1 / 9999999999999:x,0:,",  # absurd length
        b's 12345678901 / 16:{"METHOD":"GET"},0:,',  # conn id too long
        b"s 1 / 5:3:a,],0:,",  # tnetstring but not a dict
    ],
)
def test_malformed_messages_raise_protocol_error(raw):
    with pytest.raises(ProtocolError):
        parse_message(raw)


def test_non_utf8_and_control_characters_survive_as_latin1():
    headers = b'{"METHOD":"GET","PATH":"/","x-a":"\xe9\x01\t"}'
    msg = b"s 1 / " + write_netstring(headers) + write_netstring(b"")
    assert parse_message(msg).headers["x-a"] == "\xe9\x01\t"


def test_tnetstring_non_string_values_become_strings():
    headers = tnetstrings.dumps({b"METHOD": b"GET", b"n": 5, b"l": [b"a", 1]})
    req = parse_message(b"s 1 / " + write_netstring(headers) + write_netstring(b""))
    assert req.headers["n"] == "5"
    assert req.headers["l"] == ["a", "1"]


@given(st.binary(max_size=300))
def test_random_bytes_only_raise_protocol_error(data):
    with contextlib.suppress(ProtocolError):
        parse_message(data)


@given(st.sampled_from(sorted(CASES)), st.data())
def test_mutated_fixtures_only_raise_protocol_error(name, data):
    from conftest import FIXTURES

    raw = bytearray((FIXTURES / f"{name}.bin").read_bytes())
    cut = data.draw(st.integers(0, len(raw)))
    raw = raw[:cut] + raw[cut + data.draw(st.integers(0, 5)) :]
    if raw:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        req = parse_message(bytes(raw))
    except ProtocolError:
        return
    assert isinstance(req.headers, dict)


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=10), st.text(max_size=20) | st.lists(st.text(), max_size=3)
    ),
    st.binary(max_size=50),
)
def test_generated_json_messages_parse(headers, body):
    headers = {**headers, "METHOD": "GET"}
    # Mongrel2 sends raw bytes; the parser maps them through latin-1.
    raw = json.dumps(headers, ensure_ascii=False).encode("utf-8")
    msg = b"s 7 /p " + write_netstring(raw) + write_netstring(body)
    req = parse_message(msg)
    assert req.body == body
    assert req.conn_id == b"7"
    assert req.headers["METHOD"] == "GET"
