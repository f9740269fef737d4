import pytest

from ringmaster_handler.specs import Endpoint, SpecError, pair_specs, parse_spec


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("tcp://127.0.0.1:9997", Endpoint("tcp", "127.0.0.1:9997", None)),
        ("tcp://front1@127.0.0.1:9997", Endpoint("tcp", "127.0.0.1:9997", "front1")),
        ("tcp://a@b@localhost:1", Endpoint("tcp", "localhost:1", "a@b")),
        ("ipc:///run/m2/send", Endpoint("ipc", "/run/m2/send", None)),
        ("ipc://x@run/send", Endpoint("ipc", "run/send", "x")),
    ],
)
def test_parse(text, endpoint):
    assert parse_spec(text) == endpoint


@pytest.mark.parametrize(
    "text",
    ["", "127.0.0.1:9997", "udp://1.2.3.4:5", "tcp://host", "tcp://host:0", "tcp://host:70000",
     "tcp://:9997", "tcp://@host:1", "ipc://", "tcp://host:abc"],
)  # fmt: skip
def test_parse_errors(text):
    with pytest.raises(SpecError):
        parse_spec(text)


@pytest.mark.parametrize(
    ("send", "recv", "expected"),
    [
        ("tcp://h:9997", None, [("tcp://h:9997", "tcp://h:9998")]),
        ("tcp://id@h:9997", None, [("tcp://h:9997", "tcp://h:9998")]),
        ("tcp://h:1,tcp://g:5", None, [("tcp://h:1", "tcp://h:2"), ("tcp://g:5", "tcp://g:6")]),
        ("tcp://h:1,tcp://g:5", "tcp://h:7,ipc://r", [("tcp://h:1", "tcp://h:7"),
                                                      ("tcp://g:5", "ipc://r")]),
    ],
)  # fmt: skip
def test_pairing(send, recv, expected):
    assert [(s.url, r.url) for s, r in pair_specs(send, recv)] == expected


@pytest.mark.parametrize(
    ("send", "recv"),
    [("tcp://h:1,tcp://h:2", "tcp://h:3"), ("ipc://x", None), ("tcp://h:65535", None),
     ("tcp://h:1,", None)],
)  # fmt: skip
def test_pairing_errors(send, recv):
    with pytest.raises(SpecError):
        pair_specs(send, recv)
