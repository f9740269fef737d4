import json

import pytest

from ringmaster_console.restarts import RestartCounter, parse_event


def frames(topic, body):
    return [topic.encode(), json.dumps(body).encode()]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (frames("watcher.shop.reap", {"process_pid": 12, "exit_code": 1}), ("shop", "reap", 12)),
        (frames("watcher.shop.kill", {"process_pid": 12}), ("shop", "kill", 12)),
        (frames("watcher.a.b.spawn", {"process_pid": 3}), ("a.b", "spawn", 3)),
        (frames("watcher.shop.start", {"time": 1}), ("shop", "start", None)),
        (frames("watcher.shop.reap", {"process_pid": True}), ("shop", "reap", None)),
        (frames("stats.shop", {}), None),
        ([b"watcher.shop.reap"], None),
        ([b"watcher.shop.reap", b"{"], None),
    ],
)
def test_parse_event(message, expected):
    assert parse_event(message) == expected


def test_counts_only_exits_circusd_did_not_cause():
    counter = RestartCounter()
    events = [
        ("shop", "spawn", 1),
        ("shop", "reap", 1),  # died on its own
        ("shop", "kill", 2),
        ("shop", "reap", 2),  # stopped by circusd (scale down, reload)
        ("shop", "reap", 3),  # died on its own
        ("blog", "kill", 4),
        ("shop", "reap", 4),  # a kill of another watcher's process does not count here
        ("shop", "reap", None),
    ]
    for event in events:
        counter.event(*event)
    assert counter.of("shop") == 3
    assert counter.of("SHOP") == 3
    assert counter.of("blog") == 0
