# Copyright (c) 2025, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest
from ansible_collections.ringmaster.stack.plugins.filter import fleet_status as fs


def watcher(name, status="active", processes=2, cpu=1.25, rss=20 * 1048576, flapping="no", internal=False, **extra):
    return {
        "name": name,
        "status": status,
        "internal": internal,
        "numprocesses": processes,
        "processes": processes,
        "pids": list(range(100, 100 + processes)),
        "cpu": cpu,
        "rss": rss,
        "age": 75.0,
        "flapping": flapping,
        "flapping_attempt": extra.get("attempt"),
        "flapping_max_retry": extra.get("max_retry"),
    }


READS = {
    "front": {"watchers": [watcher("mongrel2", processes=1), watcher("circusd-stats", internal=True, processes=1)]},
    "worker1": {"watchers": [watcher("app"), watcher("flap", status="stopped", processes=0, cpu=0.0, rss=0,
                                                     flapping="stopped", attempt=3, max_retry=3)]},
    "worker2": {"watchers": [watcher("app", cpu=0.5)]},
}  # fmt: skip


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0, "0s"), (59.9, "59s"), (60, "1m00s"), (3599, "59m59s"), (3600, "1h00m"), (90061, "1d01h")],
)
def test_format_age(seconds, text):
    assert fs.format_age(seconds) == text


@pytest.mark.parametrize(
    ("hosts", "internal", "rows", "total", "missing"),
    [
        pytest.param(["front", "worker1", "worker2"], False, 4,
                     {"hosts": 3, "watchers": 4, "active": 3, "processes": 5, "cpu": 3.0, "rss": 60 * 1048576,
                      "flapping": 1}, [], id="fleet"),
        pytest.param(["front", "worker1", "worker2"], True, 5,
                     {"hosts": 3, "watchers": 5, "active": 4, "processes": 6, "cpu": 4.25, "rss": 80 * 1048576,
                      "flapping": 1}, [], id="internal-watchers"),
        pytest.param(["front", "worker1", "worker2", "worker3"], False, 4,
                     {"hosts": 3, "watchers": 4, "active": 3, "processes": 5, "cpu": 3.0, "rss": 60 * 1048576,
                      "flapping": 1}, ["worker3"], id="a-host-did-not-answer"),
        pytest.param(["worker2"], False, 1,
                     {"hosts": 1, "watchers": 1, "active": 1, "processes": 2, "cpu": 0.5, "rss": 20 * 1048576,
                      "flapping": 0}, [], id="only-the-hosts-asked-for"),
    ],
)  # fmt: skip
def test_totals(hosts, internal, rows, total, missing):
    result = fs.fleet_status(READS, hosts, internal)
    assert len(result["watchers"]) == rows
    assert result["fleet"]["total"] == total
    assert result["fleet"]["unreachable_or_failed"] == missing
    assert sum(w["processes"] for w in result["fleet"]["watchers"].values()) == total["processes"]


def test_per_watcher_totals_span_hosts():
    app = fs.fleet_status(READS, ["front", "worker1", "worker2"])["fleet"]["watchers"]["app"]
    assert app == {"hosts": 2, "active": 2, "processes": 4, "cpu": 1.75, "rss": 40 * 1048576, "flapping": 0}


def test_table():
    table = fs.fleet_status(READS, ["front", "worker1", "worker2"])["table"].splitlines()
    assert table[0].split() == ["HOST", "WATCHER", "STATUS", "FLAPPING", "PROCS", "CPU%", "RSS", "MiB", "AGE", "PIDS"]
    assert table[1] == "front    mongrel2  active    no          1/1     1.2       20.0    1m15s  100"
    assert table[3] == "worker1  flap      stopped   stopped 3/3    0/0     0.0        0.0    1m15s  "
    assert table[-1] == "(all)         3       5     3.0       60.0  1 / 1"
    assert "FLEET" in table[-5]


def test_a_result_without_watchers_counts_as_not_answered():
    result = fs.fleet_status({"a": {"failed": True, "msg": "no circusd"}}, ["a"])
    assert result["fleet"]["unreachable_or_failed"] == ["a"]
    assert result["watchers"] == []
