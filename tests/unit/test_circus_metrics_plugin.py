"""The metrics plugin the circus role installs (roles/circus/files/ringmaster_circus_metrics.py).

Its parsing and accounting as pure functions, and a scrape against a fake circusd and a fake /proc.
molecule/default scrapes the real one under a real circusd.
"""

import json
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("circus")

FILES = Path(__file__).resolve().parents[2] / "roles" / "circus" / "files"
sys.path.insert(0, str(FILES))  # the plugin imports the flapping plugin, installed next to it
import ringmaster_circus_metrics as metrics  # noqa: E402


@pytest.mark.parametrize(
    ("stat", "ticks"),
    [
        ("1234 (python3) S 1 1234 1234 0 -1 4194560 500 0 0 0 70 30 0 0 20 0 1 0 100 0 0", 100),
        # A process title with spaces and a closing parenthesis.
        ("99 (ringmaster-wsgi app (2 threads) -> x) S 1 1 1 0 -1 0 0 0 0 0 5 6 0 0 20 0 3 0 1 0 0", 11),
        ("", None),
        ("12 (x) S 1", None),
        ("12 (x) S 1 1 1 0 -1 0 0 0 0 0 a b", None),
    ],
    ids=["plain", "title-with-parens", "empty", "short", "not-numbers"],
)
def test_cpu_ticks(stat, ticks):
    assert metrics.cpu_ticks(stat) == ticks


@pytest.mark.parametrize(("statm", "pages"), [("5000 1200 300 1 0 900 0", 1200), ("", None), ("x y", None)])
def test_rss_pages(statm, pages):
    assert metrics.rss_pages(statm) == pages


@pytest.mark.parametrize(
    ("entry", "active", "expected"),
    [
        (None, True, (0, 0)),
        ({"state": "retrying"}, False, (1, 0)),
        ({"state": "stopped"}, False, (1, 1)),
        # Started again by hand since the plugin gave up.
        ({"state": "stopped"}, True, (0, 0)),
        ("garbage", False, (0, 0)),
    ],
    ids=["no-record", "retrying", "gave-up", "started-again", "garbage"],
)
def test_flapping_of(entry, active, expected):
    states = {} if entry is None else {"app": entry}
    assert metrics.flapping_of(states, "app", active) == expected


def test_cpu_ledger_never_goes_down():
    ledger = metrics.CpuLedger()
    steps = [
        ({1: 100, 2: 50}, 150),
        ({1: 120, 2: 60}, 180),
        # 2 ended (its last 60 stay counted), 3 started.
        ({1: 130, 3: 5}, 60 + 130 + 5),
        # PID 1 reused by a new process between scrapes.
        ({1: 2, 3: 10}, 60 + 130 + 2 + 10),
        ({}, 60 + 130 + 2 + 10),
    ]
    totals = [ledger.update("app", ticks) for ticks, _ in steps]
    assert totals == [total for _, total in steps]
    assert totals == sorted(totals)


def test_cpu_ledger_forgets_removed_watchers():
    ledger = metrics.CpuLedger()
    ledger.update("old", {1: 10})
    ledger.update("old", {})
    ledger.forget_others(["app"])
    assert ledger.update("old", {}) == 0


@pytest.mark.parametrize(
    ("value", "text"), [(0, "0"), (32440320, "32440320"), (32440320.0, "32440320"), (1.5, "1.5"), (0.12, "0.12")]
)
def test_numbers_are_written_in_full(value, text):
    assert metrics.number(value) == text


def test_render_is_prometheus_text():
    text = metrics.render(
        {
            "b": {"ringmaster_circus_watcher_processes": 2, "ringmaster_circus_watcher_cpu_seconds_total": 1.5},
            'a"x': {"ringmaster_circus_watcher_processes": 0},
        }
    )
    lines = text.splitlines()
    assert text.endswith("\n")
    assert "# TYPE ringmaster_circus_watcher_cpu_seconds_total counter" in lines
    assert "# TYPE ringmaster_circus_watcher_processes gauge" in lines
    # Sorted by watcher, label values escaped.
    assert lines.index('ringmaster_circus_watcher_processes{watcher="a\\"x"} 0') < lines.index(
        'ringmaster_circus_watcher_processes{watcher="b"} 2'
    )
    assert 'ringmaster_circus_watcher_cpu_seconds_total{watcher="b"} 1.5' in lines
    # Every series has HELP and TYPE once.
    for name, _, _ in metrics.SERIES:
        assert sum(line.startswith(f"# TYPE {name} ") for line in lines) == 1


class FakeCircusd:
    def __init__(self, statuses, pids):
        self.statuses, self.pids = statuses, pids

    def __call__(self, command, **props):
        if command == "status":
            return {"status": "ok", "statuses": self.statuses}
        if command == "list":
            return {"status": "ok", "pids": self.pids[props["name"]]}
        raise AssertionError(command)


def _plugin(tmp_path, monkeypatch, circusd, proc, state=None):
    state_file = tmp_path / "flapping.json"
    if state is not None:
        state_file.write_text(json.dumps(state))
    plugin = metrics.Metrics("ipc:///x", "ipc:///y", 1.0, None, port="9999", flapping_state_file=str(state_file))
    monkeypatch.setattr(plugin, "call", circusd)
    monkeypatch.setattr(metrics, "read", lambda path: proc.get(path))
    return plugin


def _value(text, name, watcher):
    for line in text.splitlines():
        if line.startswith(f'{name}{{watcher="{watcher}"}} '):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {watcher} not in:\n{text}")


def test_scrape_reads_circusd_proc_events_and_the_flapping_state(tmp_path, monkeypatch):
    circusd = FakeCircusd({"app": "active", "bad": "stopped"}, {"app": [11, 12], "bad": []})
    stat = "{pid} (x) S 1 1 1 0 -1 0 0 0 0 0 {u} {s} 0 0 20 0 1 0 1 0 0"
    proc = {
        "/proc/11/stat": stat.format(pid=11, u=metrics.TICKS * 2, s=0),
        "/proc/11/statm": "1000 10 0 0 0 0 0",
        "/proc/12/stat": stat.format(pid=12, u=0, s=metrics.TICKS),
        "/proc/12/statm": "1000 20 0 0 0 0 0",
    }
    # The flapping plugin's own PID: this test process, alive.
    state = {"pid": os.getpid(), "watchers": {"bad": {"state": "stopped"}}}
    plugin = _plugin(tmp_path, monkeypatch, circusd, proc, state)
    for topic in (b"watcher.app.spawn", b"watcher.app.spawn", b"watcher.app.reap", b"watcher.app.stop"):
        plugin.handle_recv((topic, b"{}"))
    text = plugin.scrape()
    assert _value(text, "ringmaster_circus_watcher_active", "app") == 1
    assert _value(text, "ringmaster_circus_watcher_processes", "app") == 2
    assert _value(text, "ringmaster_circus_watcher_rss_bytes", "app") == 30 * metrics.PAGE
    assert _value(text, "ringmaster_circus_watcher_cpu_seconds_total", "app") == 3
    assert _value(text, "ringmaster_circus_watcher_spawns_total", "app") == 2
    assert _value(text, "ringmaster_circus_watcher_reaps_total", "app") == 1
    assert _value(text, "ringmaster_circus_watcher_flapping", "app") == 0
    assert _value(text, "ringmaster_circus_watcher_active", "bad") == 0
    assert _value(text, "ringmaster_circus_watcher_flapping", "bad") == 1
    assert _value(text, "ringmaster_circus_watcher_flapping_gave_up", "bad") == 1


def test_cpu_and_memory_include_the_processes_a_watcher_started(tmp_path, monkeypatch):
    stat = "{pid} (x) S 1 1 1 0 -1 0 0 0 0 0 {u} 0 0 0 20 0 1 0 1 0 0"
    proc = {
        "/proc/11/stat": stat.format(pid=11, u=metrics.TICKS),
        "/proc/11/statm": "1000 10 0 0 0 0 0",
        "/proc/11/task/11/children": "21 ",
        "/proc/21/stat": stat.format(pid=21, u=metrics.TICKS * 2),
        "/proc/21/statm": "1000 5 0 0 0 0 0",
        "/proc/21/task/21/children": "31",
        "/proc/31/stat": stat.format(pid=31, u=metrics.TICKS * 4),
        "/proc/31/statm": "1000 1 0 0 0 0 0",
        "/proc/31/task/31/children": "11",  # (a PID reused below its ancestor: no loop)
    }
    plugin = _plugin(tmp_path, monkeypatch, FakeCircusd({"app": "active"}, {"app": [11]}), proc)
    text = plugin.scrape()
    assert _value(text, "ringmaster_circus_watcher_processes", "app") == 1
    assert _value(text, "ringmaster_circus_watcher_cpu_seconds_total", "app") == 7
    assert _value(text, "ringmaster_circus_watcher_rss_bytes", "app") == 16 * metrics.PAGE


def test_a_process_gone_between_list_and_proc_is_skipped(tmp_path, monkeypatch):
    plugin = _plugin(tmp_path, monkeypatch, FakeCircusd({"app": "active"}, {"app": [11]}), {})
    text = plugin.scrape()
    assert _value(text, "ringmaster_circus_watcher_processes", "app") == 1
    assert _value(text, "ringmaster_circus_watcher_cpu_seconds_total", "app") == 0
    assert _value(text, "ringmaster_circus_watcher_rss_bytes", "app") == 0


def test_circusd_not_answering_fails_the_scrape(tmp_path, monkeypatch):
    plugin = _plugin(tmp_path, monkeypatch, lambda command, **_: {"status": "error", "reason": "no answer"}, {})
    with pytest.raises(RuntimeError, match="no answer"):
        plugin.scrape()


def test_a_stale_flapping_state_is_ignored(tmp_path, monkeypatch):
    state = {"pid": 2**22 + 12345, "watchers": {"app": {"state": "retrying"}}}
    plugin = _plugin(tmp_path, monkeypatch, FakeCircusd({"app": "stopped"}, {"app": []}), {}, state)
    assert _value(plugin.scrape(), "ringmaster_circus_watcher_flapping", "app") == 0
