import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringmaster_handler import tnetstrings
from ringmaster_handler.errors import ProtocolError


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"0:,", b""),
        (b"5:hello,", b"hello"),
        (b"2:42#", 42),
        (b"3:-42#", -42),
        (b"3:1.5^", 1.5),
        (b"4:true!", True),
        (b"5:false!", False),
        (b"0:~", None),
        (b"0:]", []),
        (b"0:}", {}),
        (b"8:1:a,1:b,]", [b"a", b"b"]),
        (b"15:1:k,8:1:x,1:y,]}", {b"k": [b"x", b"y"]}),
        (b"12:3:one,3:two,]", [b"one", b"two"]),
    ],
)
def test_parses(raw, value):
    assert tnetstrings.loads(raw) == value


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"5:hell,",  # truncated
        b"5:hello",  # no tag
        b"5:hello?",  # unknown tag
        b"x:abc,",  # length not a number
        b"-1:a,",
        b"1234567890:x,",  # length prefix longer than the spec allows
        b"2:ab#",  # bad int
        b"3:yes!",  # bad bool
        b"1:x~",  # null with payload
        b"3:abc^",  # bad float
        b"4:1:a,}",  # dict key without a value
        b"7:1:#1:a,}",  # ... and a non-string key
        b"8:1:a,1:b,}trailing",
        b"6:1:a,1:b,]",  # inner element runs past the list
        b"99999999:x,",  # absurd length
    ],
)
def test_rejects(raw):
    with pytest.raises(ProtocolError):
        tnetstrings.loads(raw)


def test_deep_nesting_is_an_error_not_a_crash():
    raw = b"0:]"
    for _ in range(200):
        raw = b"%d:%s]" % (len(raw), raw)
    with pytest.raises(ProtocolError):
        tnetstrings.loads(raw)


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.binary(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


@given(values)
def test_roundtrip(value):
    assert tnetstrings.loads(tnetstrings.dumps(value)) == value


@given(st.binary(max_size=200))
def test_garbage_only_raises_protocol_error(data):
    with contextlib.suppress(ProtocolError):
        tnetstrings.loads(data)


@given(values, st.data())
def test_truncations_and_flips_are_contained(value, data):
    raw = bytearray(tnetstrings.dumps(value))
    cut = data.draw(st.integers(0, len(raw)))
    mutated = raw[:cut]
    if mutated:
        i = data.draw(st.integers(0, len(mutated) - 1))
        mutated[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(ProtocolError):
        tnetstrings.loads(bytes(mutated))
