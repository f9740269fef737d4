import pytest

from ringmaster_console.actions import plan
from ringmaster_console.fleet import Spread, SpreadError, collect, spread
from ringmaster_console.protocol import RequestError


@pytest.mark.parametrize(
    ("total", "hosts", "expected"),
    [
        (10, ["w1", "w2"], [5, 5]),
        (5, ["w1", "w2"], [3, 2]),
        (7, ["w1", "w2", "w3"], [3, 2, 2]),
        (1, ["w1", "w2", "w3"], [1, 0, 0]),
        (0, ["w1", "w2"], [0, 0]),
        (3, [], []),
    ],
)
def test_spread(total, hosts, expected):
    result = spread(total, hosts)
    assert [s.count for s in result] == expected
    assert [s.host for s in result] == hosts


@pytest.mark.parametrize(
    ("total", "pinned", "expected"),
    [
        (10, {"w2": 1}, [5, 1, 4]),
        (4, {"w1": 4}, [4, 0, 0]),
        (6, {"w1": 1, "w2": 2, "w3": 3}, [1, 2, 3]),
        (7, {"w9": 5}, [3, 2, 2]),  # a pin for a host that does not run the app
    ],
)
def test_spread_with_pins(total, pinned, expected):
    assert [s.count for s in spread(total, ["w1", "w2", "w3"], pinned)] == expected


@pytest.mark.parametrize(
    ("total", "pinned"),
    [(2, {"w1": 3}), (5, {"w1": 1, "w2": 2, "w3": 3}), (7, {"w1": 1, "w2": 2, "w3": 3})],
)
def test_spread_refuses_pins_that_do_not_fit(total, pinned):
    with pytest.raises(SpreadError, match="must add up"):
        spread(total, ["w1", "w2", "w3"], pinned)


def test_plan_with_pins():
    p = plan({"op": "scale", "watcher": "shop", "count": "5"}, FLEET, 256, {"shop": {"w2": 4}})
    assert p.targets == (Spread("w1", 1), Spread("w2", 4))
    with pytest.raises(RequestError, match="must add up"):
        plan({"op": "scale", "watcher": "shop", "count": "3"}, FLEET, 256, {"shop": {"w2": 4}})


def watcher(name, scalable=True):
    return {"name": name, "scalable": scalable, "processes": []}


FLEET = [
    {"host": "w1", "up": True, "watchers": [watcher("shop"), watcher("mongrel2", False)]},
    {"host": "w2", "up": True, "watchers": [watcher("shop")]},
    {"host": "w3", "up": False, "error": "no answer"},
]


def test_plan_scale_spreads_over_answering_hosts():
    p = plan({"op": "scale", "watcher": "shop", "count": "5"}, FLEET, 256)
    assert p.targets == (Spread("w1", 3), Spread("w2", 2))
    assert p.unreachable == ("w3",)
    assert p.requests() == {
        "w1": {"op": "scale", "watcher": "shop", "count": 3},
        "w2": {"op": "scale", "watcher": "shop", "count": 2},
    }
    assert p.describe() == "Set shop to 5 processes in all (w1: 3, w2: 2)"


def test_plan_reload_one_host():
    p = plan({"op": "reload", "watcher": "mongrel2", "host": "w1"}, FLEET, 256)
    assert p.requests() == {"w1": {"op": "reload", "watcher": "mongrel2"}}
    assert p.describe() == "Gracefully reload mongrel2 on w1"


@pytest.mark.parametrize(
    ("form", "why"),
    [
        ({"op": "kill", "watcher": "shop"}, "unknown action"),
        ({"op": "scale", "watcher": "shop", "count": "2.5"}, "whole number"),
        ({"op": "scale", "watcher": "shop", "count": "-1"}, "whole number"),
        ({"op": "scale", "watcher": "shop", "count": ""}, "whole number"),
        ({"op": "scale", "watcher": "shop", "count": "300"}, "above the cap of 256"),
        ({"op": "scale", "watcher": "mongrel2", "count": "2"}, "may scale mongrel2"),
        ({"op": "scale", "watcher": "<b>", "count": "2"}, "no such watcher"),
        ({"op": "restart", "watcher": "shop", "host": "w3"}, "not running on a host"),
        ({"op": "restart", "watcher": "shop", "host": "nowhere"}, "not running on a host"),
    ],
)
def test_plan_refuses(form, why):
    with pytest.raises(RequestError, match=why):
        plan(form, FLEET, 256)


def test_collect_keeps_order_and_marks_down():
    result = collect(
        ["a", "b", "c"],
        {
            "a": {"id": "1", "ok": True, "watchers": []},
            "c": {"id": "3", "ok": False, "error": "busy"},
        },
        {"b": "no answer within 1s"},
    )
    assert result == [
        {"host": "a", "up": True, "watchers": []},
        {"host": "b", "up": False, "error": "no answer within 1s"},
        {"host": "c", "up": False, "error": "busy"},
    ]


def test_backoff():
    from ringmaster_console.fleet import Backoff

    now = [100.0]
    backoff = Backoff(5.0, clock=lambda: now[0])
    assert backoff.resting("w1") is None
    backoff.missed("w1", "no answer within 1.5s")
    now[0] += 4.9
    assert backoff.resting("w1") == "no answer within 1.5s"
    assert backoff.resting("w2") is None
    now[0] += 0.1
    assert backoff.resting("w1") is None  # asked again
    backoff.missed("w1", "again")
    backoff.answered("w1")
    assert backoff.resting("w1") is None
