# Copyright (c) 2025, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import contextlib
import json
import shlex
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from ansible_collections.ringmaster.stack.plugins.modules import circus_info

ENDPOINT = "ipc:///run/circus/control.sock"
NOW = 1795840000.0


class ExitJson(Exception):
    pass


class FailJson(Exception):
    pass


def exit_json(self, **kwargs):
    raise ExitJson(kwargs)


def fail_json(self, **kwargs):
    kwargs["failed"] = True
    raise FailJson(kwargs)


def reply(**props):
    # The shape circusd 0.19 answers with; "time" and "id" are always there.
    return {"status": "ok", "time": NOW, "id": "b782699bd94b400e9991960d783c41c1", **props}


def refusal(reason):
    return {"status": "error", "reason": reason, "tb": None, "time": NOW, "errno": 3, "id": "a7bd"}


def proc(pid, cpu=0.5, rss="21.50M", age=100.0, user="ringmaster", cmd="ringmaster-wsgi", mem=0.5):
    # What circus.process.Process.info() returns, as circusctl --json prints it.
    return {
        "mem_info1": rss,
        "mem_info2": "120.00M",
        "cpu": cpu,
        "mem": mem,
        "ctime": "0:01.20",
        "pid": pid,
        "username": user,
        "nice": 0,
        "create_time": NOW - age,
        "age": age,
        "started": NOW - age,
        "children": [],
        "wid": 1,
        "cmdline": cmd,
    }


class FakeCircusd:
    """Stands in for circusctl --json talking to circusd 0.19, with the replies circusd gives."""

    def __init__(self, watchers, circusctl, broken=None):
        # watchers: name -> (status, numprocesses, {pid: info})
        self.watchers = watchers
        self.circusctl = circusctl
        self.broken = broken or {}
        self.sent = []

    def __call__(self, argv, check_rc=False, **kwargs):
        assert argv[:6] == [self.circusctl, "--json", "--endpoint", ENDPOINT, "--timeout", "10"]
        assert check_rc is False
        args = argv[6:]
        command = shlex.join(args)
        self.sent.append(command)
        if command in self.broken:
            return self.broken[command]
        return 0, json.dumps(self.answer(args)) + "\n", ""

    def answer(self, args):
        if args == ["status"]:
            return reply(statuses={name: w[0] for name, w in self.watchers.items()})
        if args == ["stats"]:
            # JSON turns the pid keys into strings.
            return reply(infos={name: {str(k): v for k, v in w[2].items()} for name, w in self.watchers.items()})
        if args[0] == "get":
            w = self.watchers.get(args[1])
            if w is None:
                return refusal(f"program {args[1]} not found")
            return reply(options={"numprocesses": w[1]})
        raise AssertionError(f"unexpected circusctl command {args}")


@pytest.fixture
def circusctl(tmp_path):
    path = tmp_path / "circusctl"
    path.write_text("#!/bin/sh\nexit 99\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def state_file(tmp_path):
    return str(tmp_path / "flapping.json")


def write_state(path, watchers, pid=1):
    with open(path, "w") as handle:
        json.dump({"pid": pid, "updated": NOW, "watchers": watchers}, handle)


def run(params, watchers, circusctl, broken=None, check_mode=False):
    fake = FakeCircusd(watchers, circusctl, broken)
    args = dict(params, circusctl=circusctl, _ansible_check_mode=check_mode)
    with contextlib.ExitStack() as stack:
        stack.enter_context(patch_module_args(args))
        stack.enter_context(mock.patch.multiple(basic.AnsibleModule, exit_json=exit_json, fail_json=fail_json))
        stack.enter_context(mock.patch.object(basic.AnsibleModule, "run_command", side_effect=fake))
        sleep = stack.enter_context(mock.patch.object(circus_info.time, "sleep"))
        stack.enter_context(mock.patch.object(circus_info.os.path, "exists", return_value=True))
        exc = stack.enter_context(pytest.raises((ExitJson, FailJson)))
        circus_info.main()
    return exc.value.args[0], fake, sleep


STACK = {
    "app": ("active", 2, {102: proc(102, cpu=1.25, age=50.0), 101: proc(101, cpu=0.75, rss="20.00M", age=300.0)}),
    "mongrel2": ("active", 1, {90: proc(90, cpu=0.0, rss="11.25M", age=900.0, user="mongrel2", cmd="mongrel2")}),
    "circusd-stats": ("active", 1, {80: proc(80, rss="30.00M", user="root", cmd="python3")}),
    "plugin:flapping": ("active", 1, {81: proc(81, rss="31.00M", user="root", cmd="python3")}),
    "broken": ("stopped", 1, {}),
}

READ_ALL = ["status", "stats", "stats", *[f"get {n} numprocesses" for n in sorted(STACK)]]

# (id, module params, flapping state file content or None, expected commands, expected items per watcher, totals)
CASES = [
    (
        "everything",
        {},
        {},
        READ_ALL,
        {
            "app": {
                "status": "active",
                "internal": False,
                "numprocesses": 2,
                "processes": 2,
                "pids": [101, 102],
                "cpu": 2.0,
                "rss": 20 * 1024**2 + int(21.5 * 1024**2),
                "age": 50.0,
                "oldest_age": 300.0,
                "flapping": "no",
            },
            "mongrel2": {"processes": 1, "pids": [90], "rss": int(11.25 * 1024**2), "flapping": "no"},
            "circusd-stats": {"internal": True},
            "plugin:flapping": {"internal": True},
            "broken": {"status": "stopped", "processes": 0, "pids": [], "cpu": 0.0, "rss": 0, "age": None},
        },
        {"watchers": 5, "active": 4, "processes": 5, "flapping": 0},
    ),
    (
        "names-case-insensitive",
        {"names": ["APP"]},
        {},
        ["status", "stats", "stats", "get app numprocesses"],
        {"app": {"processes": 2}},
        {"watchers": 1, "active": 1, "processes": 2, "cpu": 2.0},
    ),
    (
        "no-sample",
        {"names": ["mongrel2"], "sample_interval": 0},
        {},
        ["status", "stats", "get mongrel2 numprocesses"],
        {"mongrel2": {"cpu": 0.0, "processes": 1}},
        {"watchers": 1},
    ),
    (
        "gave-up",
        {"names": ["broken"]},
        {"broken": {"state": "stopped", "attempt": 5, "max_retry": 5, "since": NOW}},
        ["status", "stats", "stats", "get broken numprocesses"],
        {"broken": {"flapping": "stopped", "flapping_attempt": 5, "flapping_max_retry": 5, "flapping_since": NOW}},
        {"flapping": 1},
    ),
    (
        "retrying-while-active",
        {"names": ["app"]},
        {"app": {"state": "retrying", "attempt": 2, "max_retry": 5, "since": NOW}},
        ["status", "stats", "stats", "get app numprocesses"],
        {"app": {"flapping": "retrying", "flapping_attempt": 2}},
        {"flapping": 1},
    ),
    (
        "gave-up-then-started-by-hand",
        {"names": ["app"]},
        {"app": {"state": "stopped", "attempt": 5, "max_retry": 5, "since": NOW}},
        ["status", "stats", "stats", "get app numprocesses"],
        {"app": {"flapping": "no", "flapping_attempt": None}},
        {"flapping": 0},
    ),
    (
        "no-plugin-state",
        {"names": ["app"]},
        None,
        ["status", "stats", "stats", "get app numprocesses"],
        {"app": {"flapping": "unknown", "flapping_attempt": None}},
        {"flapping": 0},
    ),
]


@pytest.mark.parametrize(
    ("params", "state", "sent", "expected", "totals"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
@pytest.mark.parametrize("check_mode", [False, True], ids=["run", "check"])
def test_report(params, state, sent, expected, totals, check_mode, circusctl, state_file):
    if state is not None:
        write_state(state_file, state)
    result, fake, sleep = run(dict(params, flapping_state_file=state_file), STACK, circusctl, check_mode=check_mode)
    assert result["changed"] is False
    assert fake.sent == sent
    by_name = {w["name"]: w for w in result["watchers"]}
    assert [w["name"] for w in result["watchers"]] == sorted(by_name)
    assert set(expected) <= set(by_name)
    for name, items in expected.items():
        for key, value in items.items():
            assert by_name[name][key] == value, (name, key)
    for key, value in totals.items():
        assert result["totals"][key] == value, key
    assert sleep.call_count == (0 if params.get("sample_interval") == 0 else 1)


def test_process_list(circusctl, state_file):
    result = run({"names": ["app"], "flapping_state_file": state_file}, STACK, circusctl)[0]
    (app,) = result["watchers"]
    assert app["process_list"][0] == {
        "pid": 101,
        "username": "ringmaster",
        "cmdline": "ringmaster-wsgi",
        "cpu": 0.75,
        "memory_percent": 0.5,
        "rss": 20 * 1024**2,
        "age": 300.0,
    }


# (id, circusd's answers that differ, params, part of the failure message)
FAILURES = [
    (
        "error-reply-with-rc-0",
        {"status": (0, json.dumps(refusal("arbiter is restarting...")), "")},
        {},
        'refused "status": arbiter is restarting...',
    ),
    ("timeout", {"status": (1, "", "Timed out.\n")}, {}, "No answer from circusd at " + ENDPOINT),
    ("not-json", {"status": (0, "hello\n", "")}, {}, "printed no JSON reply"),
    ("unknown-watcher", {}, {"names": ["nope"]}, "Watcher(s) nope not found"),
    ("negative-interval", {}, {"sample_interval": -1}, "sample_interval must be 0 or more"),
    ("zero-timeout", {}, {"timeout": 0}, "timeout must be at least 1 second"),
]


@pytest.mark.parametrize(("broken", "params", "message"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES])
def test_failures(broken, params, message, circusctl, state_file):
    result = run(dict(params, flapping_state_file=state_file), STACK, circusctl, broken=broken)[0]
    assert result.get("failed") is True
    assert message in result["msg"]


def test_watcher_removed_while_reading(circusctl, state_file):
    broken = {"get app numprocesses": (0, json.dumps(refusal("program app not found")), "")}
    result = run({"flapping_state_file": state_file}, STACK, circusctl, broken=broken)[0]
    assert "app" not in [w["name"] for w in result["watchers"]]


def test_missing_circusctl(tmp_path, state_file):
    result = run({"flapping_state_file": state_file}, STACK, str(tmp_path / "nope"))[0]
    assert result["failed"] is True
    assert "circusctl executable not found" in result["msg"]


SIZES = [
    ("21.50M", int(21.5 * 1024**2)),
    ("512B", 512),
    ("1.00K", 1024),
    ("2.25G", int(2.25 * 1024**3)),
    ("N/A", None),
    ("", None),
    (None, None),
]


@pytest.mark.parametrize(("text", "expected"), SIZES, ids=[str(s[0]) for s in SIZES])
def test_parse_size(text, expected):
    assert circus_info.parse_size(text) == expected


def test_stale_state_file_is_unknown(state_file):
    write_state(state_file, {"app": {"state": "stopped"}}, pid=424242)
    assert circus_info.load_flapping(state_file, pid_alive=lambda pid: False) is None
    assert circus_info.load_flapping(state_file, pid_alive=lambda pid: True) == {"app": {"state": "stopped"}}


def test_dead_process_entries_are_skipped():
    assert circus_info.parse_processes({"5": "No such process (stopped?)", "6": proc(6)})[0]["pid"] == 6
    assert len(circus_info.parse_processes({"5": "No such process (stopped?)"})) == 0
