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
from ansible_collections.ringmaster.stack.plugins.module_utils import circusctl as circusctl_utils
from ansible_collections.ringmaster.stack.plugins.modules import circus_watcher

ENDPOINT = "ipc:///run/circus/control.sock"
NAME = "web"


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
    return {"status": "ok", "time": 1795840000.0, "id": "b782699bd94b400e9991960d783c41c1", **props}


def refusal(reason):
    return {"status": "error", "reason": reason, "tb": None, "time": 1795840000.0, "errno": 3, "id": "a7bd"}


class FakeCircusd:
    """Stands in for circusctl --json talking to circusd 0.19: the replies and the process handling are modelled
    on what circusd does (see the integration target for the real thing)."""

    def __init__(self, watchers, circusctl):
        self.watchers = {name: dict(w, pids=list(w["pids"])) for name, w in watchers.items()}
        self.circusctl = circusctl
        self.sent = []
        self.next_pid = 500

    def spawn(self, count):
        pids = list(range(self.next_pid, self.next_pid + count))
        self.next_pid += count
        return pids

    def __call__(self, argv, check_rc=False, **kwargs):
        assert argv[:6] == [self.circusctl, "--json", "--endpoint", ENDPOINT, "--timeout", "10"]
        assert check_rc is False
        args = argv[6:]
        self.sent.append(shlex.join(args))
        return 0, json.dumps(self.answer(args)) + "\n", ""

    def answer(self, args):
        command, words = args[0], [a for a in args[1:] if a not in ("--waiting", "--match", "simple")]
        if command == "list" and not words:
            return reply(watchers=sorted(self.watchers))
        name = words[0]
        w = self.watchers.get(name)
        if w is None:
            return refusal(f"program {name} not found")
        if command == "status":
            # circusd overwrites the reply's status with the watcher's.
            return {"status": w["state"], "time": 1795840000.0, "id": "c0ffee"}
        if command == "get":
            return reply(options={"numprocesses": w["numprocesses"]})
        if command == "list":
            return reply(pids=list(w["pids"]))
        if command == "set":
            w["numprocesses"] = int(words[2])
            if w["state"] == "active":
                missing = w["numprocesses"] - len(w["pids"])
                # Scaling up adds processes; scaling down stops the oldest ones.
                if missing > 0:
                    w["pids"] = w["pids"] + self.spawn(missing)
                else:
                    w["pids"] = w["pids"][len(w["pids"]) - w["numprocesses"] :]
            return reply()
        if command == "stop":
            w.update(state="stopped", pids=[])
            return reply(info=None)
        if command in ("start", "restart", "reload"):
            before = w["pids"]
            if command == "start" and w["state"] == "active":
                return reply(info={"started": [], "kept": before})
            w["pids"] = self.spawn(w["numprocesses"])
            # A graceful reload leaves an active watcher active; a (re)started watcher without processes stays stopped.
            if not (command == "reload" and w["state"] == "active"):
                w["state"] = "active" if w["pids"] else "stopped"
            return reply(info={"stopped": before, "started": w["pids"], "kept": []})
        raise AssertionError(f"unexpected circusctl command {args}")


@pytest.fixture
def circusctl(tmp_path):
    path = tmp_path / "circusctl"
    path.write_text("#!/bin/sh\nexit 99\n")
    path.chmod(0o755)
    return str(path)


def run(params, watchers, circusctl, check_mode=False, diff=False, runner=None):
    fake = runner or FakeCircusd(watchers, circusctl)
    args = dict(params, circusctl=circusctl, _ansible_check_mode=check_mode, _ansible_diff=diff)
    # ExitStack rather than a parenthesized with: unit tests of modules also run on target Pythons older than 3.10.
    with contextlib.ExitStack() as stack:
        stack.enter_context(patch_module_args(args))
        stack.enter_context(mock.patch.multiple(basic.AnsibleModule, exit_json=exit_json, fail_json=fail_json))
        stack.enter_context(mock.patch.object(basic.AnsibleModule, "run_command", side_effect=fake))
        exc = stack.enter_context(pytest.raises((ExitJson, FailJson)))
        circus_watcher.main()
    return exc.value.args[0], fake


def reads(name=NAME):
    return [f"status {name}", f"get {name} numprocesses", f"list {name}"]


ACTIVE2 = {"state": "active", "numprocesses": 2, "pids": [101, 102]}
ACTIVE4 = {"state": "active", "numprocesses": 4, "pids": [101, 102, 103, 104]}
STOPPED2 = {"state": "stopped", "numprocesses": 2, "pids": []}
STOPPED0 = {"state": "stopped", "numprocesses": 0, "pids": []}

SET = "set web numprocesses {} --waiting"
START = "start web --match simple --waiting"
STOP = "stop web --match simple --waiting"
RESTART = "restart web --match simple --waiting"
RELOAD = "reload web --waiting"

# (id, watcher before, module params, check mode, circusctl commands sent, changed, expected result items)
CASES = [
    (
        "started-noop",
        ACTIVE2,
        {"state": "started"},
        False,
        reads(),
        False,
        {"state": "active", "numprocesses": 2, "pids": [101, 102], "actions": []},
    ),
    (
        "default-state-is-started",
        ACTIVE2,
        {},
        False,
        reads(),
        False,
        {"state": "active", "numprocesses": 2, "actions": []},
    ),
    (
        "started-noop-check",
        ACTIVE2,
        {"state": "started", "numprocesses": 2},
        True,
        reads(),
        False,
        {"state": "active", "numprocesses": 2, "pids": [101, 102]},
    ),
    (
        "start",
        STOPPED2,
        {"state": "started"},
        False,
        [*reads(), START, *reads()],
        True,
        {"state": "active", "numprocesses": 2, "pids": [500, 501], "actions": ["start web"]},
    ),
    (
        "start-check",
        STOPPED2,
        {"state": "started"},
        True,
        reads(),
        True,
        {"state": "active", "numprocesses": 2, "pids": [], "actions": ["start web"]},
    ),
    (
        "stop",
        ACTIVE2,
        {"state": "stopped"},
        False,
        [*reads(), STOP, *reads()],
        True,
        {"state": "stopped", "numprocesses": 2, "pids": [], "actions": ["stop web"]},
    ),
    (
        "stop-check",
        ACTIVE2,
        {"state": "stopped"},
        True,
        reads(),
        True,
        {"state": "stopped", "numprocesses": 2, "pids": [101, 102], "actions": ["stop web"]},
    ),
    (
        "stopped-noop",
        STOPPED2,
        {"state": "stopped"},
        False,
        reads(),
        False,
        {"state": "stopped", "numprocesses": 2, "pids": []},
    ),
    (
        "scale-up-keeps-pids",
        ACTIVE2,
        {"numprocesses": 4},
        False,
        [*reads(), SET.format(4), *reads()],
        True,
        {"state": "active", "numprocesses": 4, "pids": [101, 102, 500, 501], "actions": ["set web numprocesses 4"]},
    ),
    (
        "scale-up-check",
        ACTIVE2,
        {"numprocesses": 4},
        True,
        reads(),
        True,
        {"state": "active", "numprocesses": 4, "pids": [101, 102], "actions": ["set web numprocesses 4"]},
    ),
    (
        "scale-down",
        ACTIVE4,
        {"numprocesses": 1},
        False,
        [*reads(), SET.format(1), *reads()],
        True,
        {"state": "active", "numprocesses": 1, "pids": [104]},
    ),
    (
        "scale-noop",
        ACTIVE4,
        {"numprocesses": 4},
        False,
        reads(),
        False,
        {"numprocesses": 4, "pids": [101, 102, 103, 104]},
    ),
    (
        "scale-active-to-zero",
        ACTIVE2,
        {"numprocesses": 0},
        False,
        [*reads(), SET.format(0), *reads()],
        True,
        {"state": "active", "numprocesses": 0, "pids": []},
    ),
    (
        "scale-then-start",
        STOPPED2,
        {"numprocesses": 3},
        False,
        [*reads(), SET.format(3), START, *reads()],
        True,
        {
            "state": "active",
            "numprocesses": 3,
            "pids": [500, 501, 502],
            "actions": ["set web numprocesses 3", "start web"],
        },
    ),
    (
        "stop-then-scale",
        ACTIVE2,
        {"state": "stopped", "numprocesses": 5},
        False,
        [*reads(), STOP, SET.format(5), *reads()],
        True,
        {"state": "stopped", "numprocesses": 5, "pids": [], "actions": ["stop web", "set web numprocesses 5"]},
    ),
    (
        "scale-while-stopped",
        STOPPED2,
        {"state": "stopped", "numprocesses": 5},
        False,
        [*reads(), SET.format(5), *reads()],
        True,
        {"state": "stopped", "numprocesses": 5, "pids": []},
    ),
    (
        "scale-while-stopped-check",
        STOPPED2,
        {"state": "stopped", "numprocesses": 5},
        True,
        reads(),
        True,
        {"state": "stopped", "numprocesses": 5, "pids": []},
    ),
    (
        "restart-always-changes",
        ACTIVE2,
        {"state": "restarted"},
        False,
        [*reads(), RESTART, *reads()],
        True,
        {"state": "active", "numprocesses": 2, "pids": [500, 501], "actions": ["restart web"]},
    ),
    (
        "restart-check",
        ACTIVE2,
        {"state": "restarted"},
        True,
        reads(),
        True,
        {"state": "active", "pids": [101, 102], "actions": ["restart web"]},
    ),
    (
        "restart-stopped-starts-it",
        STOPPED2,
        {"state": "restarted"},
        False,
        [*reads(), RESTART, *reads()],
        True,
        {"state": "active", "pids": [500, 501]},
    ),
    (
        "scale-then-restart",
        ACTIVE2,
        {"state": "restarted", "numprocesses": 3},
        False,
        [*reads(), SET.format(3), RESTART, *reads()],
        True,
        {"state": "active", "numprocesses": 3, "pids": [501, 502, 503]},
    ),
    (
        "reload-always-changes",
        ACTIVE2,
        {"state": "reloaded"},
        False,
        [*reads(), RELOAD, *reads()],
        True,
        {"state": "active", "numprocesses": 2, "pids": [500, 501], "actions": ["reload web"]},
    ),
    (
        "reload-check",
        ACTIVE2,
        {"state": "reloaded", "numprocesses": 1},
        True,
        reads(),
        True,
        {"state": "active", "numprocesses": 1, "actions": ["set web numprocesses 1", "reload web"]},
    ),
]


@pytest.mark.parametrize(
    ("before", "params", "check_mode", "sent", "changed", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_module(circusctl, before, params, check_mode, sent, changed, expected):
    result, fake = run(dict(params, name=NAME), {NAME: before, "other": ACTIVE2}, circusctl, check_mode=check_mode)

    assert "failed" not in result, result
    assert fake.sent == sent
    assert result["changed"] is changed
    assert result["name"] == NAME
    assert {key: result[key] for key in expected} == expected
    assert result["previous"] == before
    assert "diff" not in result
    assert fake.watchers["other"] == ACTIVE2


@pytest.mark.parametrize("check_mode", [False, True])
def test_diff(circusctl, check_mode):
    result, _fake = run(
        {"name": NAME, "state": "stopped", "numprocesses": 3},
        {NAME: ACTIVE2},
        circusctl,
        check_mode=check_mode,
        diff=True,
    )

    assert result["diff"] == {
        "before": {"state": "active", "numprocesses": 2},
        "after": {"state": "stopped", "numprocesses": 3},
    }


def test_diff_without_change(circusctl):
    result, _fake = run({"name": NAME}, {NAME: ACTIVE2}, circusctl, diff=True)

    assert result["diff"] == {
        "before": {"state": "active", "numprocesses": 2},
        "after": {"state": "active", "numprocesses": 2},
    }


@pytest.mark.parametrize("check_mode", [False, True])
def test_missing_watcher_fails_with_endpoint_and_known_watchers(circusctl, check_mode):
    result, fake = run(
        {"name": "nope", "numprocesses": 3}, {NAME: ACTIVE2, "db": STOPPED2}, circusctl, check_mode=check_mode
    )

    assert result["failed"] is True
    assert result["changed"] is False
    assert result["msg"] == f"Watcher nope not found on circusd at {ENDPOINT} (known watchers: db, web)"
    assert fake.sent == ["status nope", "list"]


@pytest.mark.parametrize("check_mode", [False, True])
def test_starting_a_stopped_watcher_with_no_processes_fails_before_acting(circusctl, check_mode):
    result, fake = run({"name": NAME, "numprocesses": 0}, {NAME: STOPPED2}, circusctl, check_mode=check_mode)

    assert result["failed"] is True
    assert "Cannot start watcher web with numprocesses=0" in result["msg"]
    assert fake.sent == reads()


def test_restarting_a_watcher_configured_with_no_processes_fails(circusctl):
    result, fake = run({"name": NAME, "state": "restarted"}, {NAME: STOPPED0}, circusctl)

    assert result["failed"] is True
    assert "numprocesses=0" in result["msg"]
    assert fake.sent == reads()


def test_negative_numprocesses_fails_without_talking_to_circusd(circusctl):
    result, fake = run({"name": NAME, "numprocesses": -1}, {NAME: ACTIVE2}, circusctl)

    assert result["failed"] is True
    assert result["msg"] == "numprocesses must be 0 or more, got -1"
    assert fake.sent == []


def test_missing_circusctl_fails(tmp_path):
    path = str(tmp_path / "venv" / "bin" / "circusctl")
    result, fake = run({"name": NAME}, {NAME: ACTIVE2}, path)

    assert result["failed"] is True
    assert result["msg"].startswith(f"circusctl executable not found at {path}: ")
    assert fake.sent == []


def test_circusd_refusing_an_action_fails_with_its_reason(circusctl):
    fake = FakeCircusd({NAME: ACTIVE2}, circusctl)
    answer = fake.answer

    def refuse_set(args):
        if args[0] == "set":
            return refusal("command '...': Singleton watcher has a single process")
        return answer(args)

    fake.answer = refuse_set
    result, _fake = run({"name": NAME, "numprocesses": 3}, None, circusctl, runner=fake)

    assert result["failed"] is True
    assert result["changed"] is True
    assert result["msg"] == (
        f'circusd at {ENDPOINT} refused "set web numprocesses 3 --waiting": '
        "command '...': Singleton watcher has a single process"
    )
    assert result["previous"] == ACTIVE2


def test_watcher_not_reaching_the_wanted_state_fails(circusctl):
    fake = FakeCircusd({NAME: STOPPED2}, circusctl)
    answer = fake.answer

    def start_does_nothing(args):
        if args[0] == "start":
            return reply(info={"started": [], "kept": []})
        return answer(args)

    fake.answer = start_does_nothing
    result, _fake = run({"name": NAME}, None, circusctl, runner=fake)

    assert result["failed"] is True
    assert result["msg"] == 'Watcher web is stopped after "start web", expected active; see the circusd log'


def test_unreachable_circusd_fails_with_endpoint(circusctl):
    def timeout(argv, check_rc=False, **kwargs):
        return 1, "", "Timed out.\nA time out usually happens in one of those cases:\n"

    result, _fake = run({"name": NAME, "timeout": 10}, None, circusctl, runner=timeout)

    assert result["failed"] is True
    assert result["msg"].startswith(f'No answer from circusd at {ENDPOINT} within 10s to "status web": ')


TIMEOUT_STDERR = "Timed out.\nA time out usually happens in one of those cases:\n\n#1 The Circus daemon ...\n"
TRACEBACK = 'Traceback (most recent call last):\n  File "x"\nzmq.error.ZMQError: Protocol not supported\n'

FAILED = 'circusctl failed (rc=1) running "status web" against circusd at ipc://x:'
NO_JSON = 'circusctl printed no JSON reply for "status web" against circusd at ipc://x:'

# (id, rc, stdout, stderr, expected reply or error message)
REPLIES = [
    ("ok", 0, '{"status": "ok", "pids": [1, 2]}\n', "", {"status": "ok", "pids": [1, 2]}),
    ("status-of-watcher", 0, '{"status": "stopped", "time": 1.0}', "", {"status": "stopped", "time": 1.0}),
    ("noise-before-reply", 0, 'DeprecationWarning: x\n{"status": "ok"}\n', "", {"status": "ok"}),
    (
        "error-reply-rc-0",
        0,
        '{"status": "error", "reason": "program web not found", "errno": 3}',
        "",
        'circusd at ipc://x refused "status web": program web not found',
    ),
    ("error-without-reason", 0, '{"status": "error"}', "", 'circusd at ipc://x refused "status web": unknown error'),
    (
        "timeout",
        1,
        "",
        TIMEOUT_STDERR,
        (
            'No answer from circusd at ipc://x within 5s to "status web": '
            "circusd is not running or not listening on that "
            "endpoint, or the command took longer than the timeout option allows"
        ),
    ),
    ("crash", 1, "", TRACEBACK, f"{FAILED} zmq.error.ZMQError: Protocol not supported"),
    ("silent-failure", 2, "", "", FAILED.replace("rc=1", "rc=2") + " no output"),
    ("not-json", 0, "active\n", "", f"{NO_JSON} active"),
    ("json-but-not-object", 0, "[1]", "", f"{NO_JSON} [1]"),
    ("empty", 0, "", "", f"{NO_JSON} no output"),
]


@pytest.mark.parametrize(("rc", "stdout", "stderr", "expected"), [r[1:] for r in REPLIES], ids=[r[0] for r in REPLIES])
def test_parse_reply(rc, stdout, stderr, expected):
    if isinstance(expected, dict):
        assert circusctl_utils.parse_reply(rc, stdout, stderr, "ipc://x", 5, ("status", "web")) == expected
    else:
        with pytest.raises(circusctl_utils.CircusError) as exc:
            circusctl_utils.parse_reply(rc, stdout, stderr, "ipc://x", 5, ("status", "web"))
        assert str(exc.value) == expected


def test_parse_reply_keeps_circusd_reason():
    with pytest.raises(circusctl_utils.CircusError) as exc:
        circusctl_utils.parse_reply(0, json.dumps(refusal("program Web not found")), "", "ipc://x", 5, ("list", "Web"))
    assert exc.value.reason == "program Web not found"
    assert circus_watcher.is_missing_watcher(exc.value.reason, "web")
    assert not circus_watcher.is_missing_watcher(exc.value.reason, "other")
    assert not circus_watcher.is_missing_watcher(None, "web")


def test_build_argv():
    assert circusctl_utils.build_argv("/v/circusctl", "tcp://127.0.0.1:5555", 7, ("get", "web", "numprocesses")) == [
        "/v/circusctl",
        "--json",
        "--endpoint",
        "tcp://127.0.0.1:5555",
        "--timeout",
        "7",
        "get",
        "web",
        "numprocesses",
    ]


def test_parse_watcher_sorts_pids():
    watcher = circus_watcher.parse_watcher(
        {"status": "active"}, reply(options={"numprocesses": 3}), reply(pids=[30, 10, 20])
    )
    assert watcher == {"state": "active", "numprocesses": 3, "pids": [10, 20, 30]}


# (id, current state, requested state, numprocesses, planned actions)
PLANS = [
    ("start", "stopped", "started", None, [("start", "w")]),
    ("start-from-stopping", "stopping", "started", None, [("start", "w")]),
    ("start-noop", "active", "started", 2, []),
    ("scale-first-then-start", "stopped", "started", 3, [("set", "w", "numprocesses", "3"), ("start", "w")]),
    ("stop-first-then-scale", "active", "stopped", 3, [("stop", "w"), ("set", "w", "numprocesses", "3")]),
    ("stop-noop", "stopped", "stopped", 2, []),
    ("restart", "active", "restarted", 2, [("restart", "w")]),
    ("scale-then-reload", "active", "reloaded", 5, [("set", "w", "numprocesses", "5"), ("reload", "w")]),
]


@pytest.mark.parametrize(
    ("current", "state", "numprocesses", "actions"), [p[1:] for p in PLANS], ids=[p[0] for p in PLANS]
)
def test_plan_actions(current, state, numprocesses, actions):
    watcher = {"state": current, "numprocesses": 2, "pids": []}
    assert circus_watcher.plan_actions(watcher, "w", state, numprocesses) == actions


@pytest.mark.parametrize(
    ("current", "configured", "state", "numprocesses", "feasible"),
    [
        ("stopped", 2, "started", 0, False),
        ("stopped", 0, "started", None, False),
        ("stopped", 0, "reloaded", None, False),
        ("stopped", 0, "started", 1, True),
        ("active", 2, "started", 0, True),
        ("active", 0, "restarted", None, False),
        ("active", 0, "reloaded", None, True),
        ("stopped", 2, "stopped", 0, True),
    ],
)
def test_check_feasible(current, configured, state, numprocesses, feasible):
    watcher = {"state": current, "numprocesses": configured, "pids": []}
    assert (circus_watcher.check_feasible(watcher, "w", state, numprocesses) is None) is feasible
