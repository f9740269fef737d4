import json

import pytest

from ringmaster_console.protocol import (
    Request,
    RequestError,
    parse_request,
    request_id_of,
    whole_number,
)

KNOWN = {"shop", "mongrel2", "plugin:metrics"}
SCALABLE = {"shop"}


def raw(**body):
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"id": "a1", "op": "status"}, Request("a1", "status")),
        (
            {"id": "a1", "op": "scale", "watcher": "shop", "count": 4},
            Request("a1", "scale", "shop", 4),
        ),
        (
            {"id": "a1", "op": "scale", "watcher": "shop", "count": "4"},
            Request("a1", "scale", "shop", 4),
        ),
        (
            {"id": "a1", "op": "scale", "watcher": "shop", "count": 0},
            Request("a1", "scale", "shop", 0),
        ),
        (
            {"id": "a1", "op": "scale", "watcher": "shop", "count": 16},
            Request("a1", "scale", "shop", 16),
        ),
        ({"id": "a1", "op": "reload", "watcher": "mongrel2"}, Request("a1", "reload", "mongrel2")),
        ({"id": "a1", "op": "restart", "watcher": "shop"}, Request("a1", "restart", "shop")),
    ],
)
def test_accepted(body, expected):
    assert parse_request(raw(**body), KNOWN, SCALABLE, 16) == expected


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b"x" * 5000, "too large"),
        (raw(op="status"), "no valid id"),
        (raw(id="a b", op="status"), "no valid id"),
        (raw(id="a1", op="kill"), "unknown op"),
        (raw(id="a1", op="status", watcher="shop"), "unexpected fields"),
        (raw(id="a1", op="reload", watcher="shop", count=2), "unexpected fields"),
        (raw(id="a1", op="reload"), "watcher must be"),
        (raw(id="a1", op="reload", watcher="nope"), "unknown watcher nope"),
        (raw(id="a1", op="reload", watcher="../etc"), "watcher must be"),
        (raw(id="a1", op="restart", watcher="plugin:metrics"), "circusd's own plugins"),
        (raw(id="a1", op="scale", watcher="mongrel2", count=2), "not one this agent may scale"),
        (raw(id="a1", op="scale", watcher="shop"), "needs a count"),
        (raw(id="a1", op="scale", watcher="shop", count=2.5), "whole number"),
        (raw(id="a1", op="scale", watcher="shop", count="2.5"), "whole number"),
        (raw(id="a1", op="scale", watcher="shop", count="1e3"), "whole number"),
        (raw(id="a1", op="scale", watcher="shop", count=True), "whole number"),
        (raw(id="a1", op="scale", watcher="shop", count=None), "whole number"),
        (raw(id="a1", op="scale", watcher="shop", count=-1), "0 or more"),
        (raw(id="a1", op="scale", watcher="shop", count=17), "above the cap of 16"),
        (raw(id="a1", op="scale", watcher="shop", count="99999999"), "whole number"),
    ],
)
def test_refused(payload, why):
    with pytest.raises(RequestError, match=why):
        parse_request(payload, KNOWN, SCALABLE, 16)


@pytest.mark.parametrize(("value", "expected"), [(0, 0), ("7", 7), (" 7 ", 7), (256, 256)])
def test_whole_number(value, expected):
    assert whole_number(value, 256) == expected


@pytest.mark.parametrize(
    ("payload", "expected"), [(raw(id="x1", op="?"), "x1"), (b"{", None), (raw(id=3), None)]
)
def test_request_id_of(payload, expected):
    assert request_id_of(payload) == expected
