"""The flapping plugin the circus role installs (roles/circus/files/ringmaster_circus_flapping.py).

Fed circusd's pub/sub events with a fake clock and a fake circusd: which commands it sends, when it gives up,
what it records in its state file, and that processes circusd stops itself do not count.
"""

import importlib.util
import json
from pathlib import Path
from unittest import mock

import pytest

pytest.importorskip("circus")

PLUGIN = Path(__file__).resolve().parents[2] / "roles" / "circus" / "files" / "ringmaster_circus_flapping.py"
spec = importlib.util.spec_from_file_location("ringmaster_circus_flapping", PLUGIN)
flapping = importlib.util.module_from_spec(spec)
spec.loader.exec_module(flapping)

CHECK_DELAY = 5.0


class Clock:
    def __init__(self):
        self.now = 1000.0

    def time(self):
        return self.now


@pytest.fixture
def plugin(tmp_path):
    clock = Clock()
    p = flapping.Flapping(
        "ipc:///x",
        "ipc:///y",
        5.0,
        None,
        attempts="2",
        window="1",
        retry_in="7",
        max_retry="2",
        circusd_check_delay=str(CHECK_DELAY),
        state_file=str(tmp_path / "flapping.json"),
    )
    p.sent = []
    p.refuse = []  # commands circusd refuses once with a ConflictError
    p.later = []  # (delay, callback, args) scheduled on the loop

    def call(command, **props):
        if command == "options":
            return {"status": "ok", "options": {}}
        p.sent.append((command, props.get("name")))
        if command in p.refuse:
            p.refuse.remove(command)
            return {"status": "error", "reason": "arbiter is already running manage_watchers command"}
        return {"status": "ok"}

    p.call = call
    p.loop = mock.Mock()
    p.loop.call_later.side_effect = lambda delay, cb, *args: p.later.append((delay, cb, args))
    p.clock = clock
    with (
        mock.patch("circus.plugins.flapping.time", clock),
        mock.patch.object(flapping, "time", clock),
        mock.patch("circus.plugins.flapping.Timer") as timer,
    ):
        p.timer = timer
        p.write_state()  # what handle_init does when the plugin starts
        yield p


def event(plugin, watcher, action, pid, **details):
    message = json.dumps({"process_pid": pid, **details}).encode()
    plugin.handle_recv((f"watcher.{watcher}.{action}".encode(), message))


def crash_loop(plugin, watcher, exits, first_pid=100, **details):
    """Processes that exit on their own, one per circusd check."""
    for n in range(exits):
        plugin.clock.now += CHECK_DELAY
        event(plugin, watcher, "reap", first_pid + n, **details)


def state(plugin):
    return json.loads(Path(plugin.state_file).read_text())["watchers"]


def run_later(plugin):
    pending, plugin.later = plugin.later, []
    for _, callback, args in pending:
        callback(*args)


def test_crash_loop_is_stopped_and_retried(plugin):
    crash_loop(plugin, "web", 2)
    assert plugin.sent == [("stop", "web")]
    assert state(plugin)["web"]["state"] == "retrying"
    assert state(plugin)["web"]["attempt"] == 1
    # The stock plugin starts it again from a Timer thread after retry_in.
    assert plugin.timer.call_args.args[0] == 7.0


def test_gives_up_after_max_retry(plugin, caplog):
    for _ in range(3):
        crash_loop(plugin, "web", 2)
    assert plugin.sent == [("stop", "web")] * 3
    assert state(plugin)["web"] == {"state": "stopped", "attempt": 2, "max_retry": 2, "since": plugin.clock.now}
    # The line to alert on: warning priority in the journal, naming the watcher.
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["web: gave up after 2 retries: the watcher stays stopped until it is started again"]


def test_started_by_hand_after_giving_up_is_forgotten(plugin):
    for _ in range(3):
        crash_loop(plugin, "web", 2)
    event(plugin, "web", "start", 0)
    assert state(plugin) == {}


def test_exits_far_apart_are_not_flapping(plugin):
    plugin.clock.now += 60
    event(plugin, "web", "reap", 1)
    plugin.clock.now += 60
    event(plugin, "web", "reap", 2)
    assert plugin.sent == []
    assert state(plugin) == {}


@pytest.mark.parametrize("count", [2, 8], ids=["two", "eight"])
def test_processes_circusd_stops_are_not_crashes(plugin, count):
    # A reload, restart or scale-down: circusd announces the kill, then reaps the process.
    for pid in range(count):
        event(plugin, "web", "kill", pid)
    for pid in range(count):
        event(plugin, "web", "reap", pid)
    assert plugin.sent == []


@pytest.mark.parametrize(
    ("exit_code", "flapping"),
    [(0, False), (1, True), (2, True), (-9, True), (None, True)],
    ids=["clean-exit-recycled", "exit-1", "exit-2-import-error", "sigkill", "unknown"],
)
def test_only_unclean_exits_count(plugin, exit_code, flapping):
    # A recycled handler finishes its requests and exits 0; under load several do so in a row.
    crash_loop(plugin, "web", 4, exit_code=exit_code)
    assert (plugin.sent != []) is flapping
    assert ("web" in state(plugin)) is flapping


def test_refused_stop_is_sent_again(plugin):
    plugin.refuse = ["stop"]
    crash_loop(plugin, "web", 2)
    assert plugin.sent == [("stop", "web")]
    run_later(plugin)
    assert plugin.sent == [("stop", "web"), ("stop", "web")]


def test_start_from_the_timer_thread_goes_through_the_loop(plugin):
    with mock.patch.object(flapping.threading, "current_thread", return_value=object()):
        plugin.cast("start", name="web")
    assert plugin.sent == []
    plugin.loop.add_callback.assert_called_once()


def test_recovered_after_retry_is_forgotten(plugin):
    crash_loop(plugin, "web", 2)
    plugin.cast("start", name="web")  # the retry
    assert state(plugin)["web"]["state"] == "retrying"
    # No more exits: the settle timer clears it.
    run_later(plugin)
    assert state(plugin) == {}
