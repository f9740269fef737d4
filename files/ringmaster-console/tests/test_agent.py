"""The agent against a real circusd, over real CURVE, as the console reaches it."""

import json
import os
import signal
import socket
import time

import pytest
import zmq

from ringmaster_console.procfs import TICKS, parse_stat
from stack import wait_for


@pytest.fixture
def fleet(stack):
    client = stack.fleet()
    yield client
    client.close()


def watcher(report, name):
    return next(w for w in report["watchers"] if w["name"] == name)


def act(fleet, **request):
    return fleet.act({"local": request}, timeout=40)[0]


def test_status_reports_each_process(stack, fleet):
    first = fleet.status()[0]
    assert first["up"], first
    time.sleep(1.0)
    report = fleet.status()[0]
    shop = watcher(report, "shop")
    assert shop["status"] == "active"
    assert shop["numprocesses"] == len(shop["processes"]) == len(stack.pids("shop"))
    assert [p["pid"] for p in shop["processes"]] == stack.pids("shop")
    assert shop["scalable"] is True
    assert shop["flapping"] == "unknown"  # no flapping plugin in this circusd
    for process in shop["processes"]:
        # The burner uses about 5 % of a core; a loaded machine stretches that either way.
        assert process["cpu"] is not None and 0.5 < process["cpu"] < 60, process
        assert process["rss"] > 5_000_000
        assert process["age"] >= 0
    other = watcher(report, "other")
    assert other["scalable"] is False
    assert not [w for w in report["watchers"] if w["name"].startswith("plugin:")]


def test_restart_counted_when_a_process_dies(stack, fleet):
    before = watcher(fleet.status()[0], "shop")["restarts"]
    victim = stack.pids("shop")[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: watcher(fleet.status()[0], "shop")["restarts"] == before + 1, 10, "the restart"
    )
    wait_for(lambda: len(stack.pids("shop")) == 2, 10, "the respawn")
    assert victim not in stack.pids("shop")


def test_scale_is_live_and_remembered(stack, fleet):
    before = stack.pids("shop")
    result = act(fleet, op="scale", watcher="shop", count=4)
    assert result["up"], result
    after = stack.pids("shop")
    assert len(after) == 4 and set(before) <= set(after)  # the running processes are kept
    assert result["pids"] == after
    assert "numprocesses = 4\n" in (stack.dir / "conf.d" / "shop.ini").read_text()
    assert oct((stack.dir / "conf.d" / "shop.ini").stat().st_mode & 0o777) == "0o600"
    assert json.loads((stack.dir / "facts.d" / "ringmaster_scale.fact").read_text()) == {"shop": 4}
    # A circusd restart keeps the count, as after scale.yml.
    stack.stop_circusd()
    stack.start_circusd()
    assert len(stack.pids("shop")) == 4
    wait_for(lambda: fleet.status()[0]["up"], 10, "the agent to reach the new circusd")
    result = act(fleet, op="scale", watcher="shop", count=2)
    assert result["up"], result
    assert len(stack.pids("shop")) == 2


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        ({"op": "scale", "watcher": "shop", "count": 2.5}, "whole number"),
        ({"op": "scale", "watcher": "shop", "count": "3x"}, "whole number"),
        ({"op": "scale", "watcher": "shop", "count": -2}, "0 or more"),
        ({"op": "scale", "watcher": "shop", "count": 9}, "above the cap of 8"),
        ({"op": "scale", "watcher": "other", "count": 3}, "not one this agent may scale"),
        ({"op": "scale", "watcher": "nope", "count": 3}, "unknown watcher"),
        ({"op": "restart", "watcher": "nope"}, "unknown watcher"),
        ({"op": "quit"}, "unknown op"),
    ],
)
def test_bad_requests_are_refused_and_change_nothing(stack, fleet, request_, why):
    pids = stack.pids("shop"), stack.pids("other")
    fact_file = stack.dir / "facts.d" / "ringmaster_scale.fact"
    fact = fact_file.read_text() if fact_file.exists() else None
    result = act(fleet, **request_)
    assert not result["up"] and why in result["error"], result
    assert (stack.pids("shop"), stack.pids("other")) == pids
    assert stack.numprocesses("shop") == 2
    assert (fact_file.read_text() if fact_file.exists() else None) == fact


def test_reload_and_restart_replace_the_processes(stack, fleet):
    restarts = watcher(fleet.status()[0], "shop")["restarts"]
    before = stack.pids("shop")
    result = act(fleet, op="reload", watcher="shop")
    assert result["up"], result
    after = stack.pids("shop")
    assert len(after) == 2 and not set(before) & set(after)
    # Processes circusd stopped itself are not restarts.
    time.sleep(0.5)
    assert watcher(fleet.status()[0], "shop")["restarts"] == restarts
    result = act(fleet, op="restart", watcher="other")
    assert result["up"], result
    assert len(stack.pids("other")) == 1


def test_only_authorised_console_keys_get_an_answer(stack):
    stranger = stack.fleet(keyname="stranger", timeout=1.0)
    try:
        report = stranger.status()[0]
    finally:
        stranger.close()
    assert not report["up"] and "no answer" in report["error"]
    # Nor does a client without CURVE.
    plain = stack.ctx.socket(zmq.DEALER)
    plain.setsockopt(zmq.LINGER, 0)
    plain.connect(f"tcp://127.0.0.1:{stack.port}")
    plain.send(b'{"id": "x", "op": "status"}')
    assert not plain.poll(1000)
    plain.close()


def test_a_silent_host_does_not_hold_up_the_others(stack):
    # A port that accepts connections and never speaks, and one where nothing listens.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    nothing = socket.socket()
    nothing.bind(("127.0.0.1", 0))
    hosts = [
        stack.host("silent", silent.getsockname()[1]),
        stack.host("local"),
        stack.host("closed", nothing.getsockname()[1]),
    ]
    client = stack.fleet(hosts, timeout=1.5)
    try:
        started = time.monotonic()
        report = client.status()
        took = time.monotonic() - started
        # Again at once: the silent hosts are not asked (nor waited for) for a while.
        started = time.monotonic()
        again = client.status()
        took_again = time.monotonic() - started
        # And once their rest is over, asked again (with new sockets).
        client.backoff.until.clear()
        third = client.status()
    finally:
        client.close()
        silent.close()
        nothing.close()
    assert [h["host"] for h in report] == ["silent", "local", "closed"]
    assert [h["up"] for h in report] == [False, True, False]
    assert [h["up"] for h in again] == [False, True, False]
    assert [h["up"] for h in third] == [False, True, False]
    # All asked at once: one timeout in all, not one per silent host.
    assert 1.5 <= took < 2.5, took
    assert took_again < 0.5, took_again


def test_agent_stops_on_sigterm_when_idle(stack):
    """systemd stops it with SIGTERM: it must leave at once, even blocked in its poll."""
    import subprocess
    import sys

    from stack import PYTHONPATH, free_port

    config = stack.dir / "agent-2.toml"
    config.write_text(stack.agent_config.read_text().replace(str(stack.port), str(free_port())))
    log = stack.dir / "agent-2.log"
    agent = subprocess.Popen(
        [sys.executable, "-m", "ringmaster_console.agent_cli", str(config)],
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        stderr=stack.log("agent-2.log"),
    )
    try:
        wait_for(lambda: "listening" in log.read_text(), 10, "the agent to listen")
        time.sleep(1)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(5) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def test_idle_agent_costs_nothing(stack):
    """Nobody asks: the agent must stay under 1 % of a core (it blocks in one poll)."""

    def ticks():
        return parse_stat(open(f"/proc/{stack.agent.pid}/stat").read()).cpu_ticks

    time.sleep(0.5)
    before, started = ticks(), time.monotonic()
    time.sleep(5)
    used = (ticks() - before) / TICKS / (time.monotonic() - started)
    print(f"idle agent CPU: {used:.2%} of a core")
    assert used < 0.01, f"{used:.2%} of a core"


def test_agent_cost_while_the_page_polls(stack, fleet):
    """One console polling each second (the page's rate): a few milliseconds a second."""

    def ticks():
        return parse_stat(open(f"/proc/{stack.agent.pid}/stat").read()).cpu_ticks

    before, started = ticks(), time.monotonic()
    for _ in range(6):
        assert fleet.status()[0]["up"]
        time.sleep(1)
    used = (ticks() - before) / TICKS / (time.monotonic() - started)
    print(f"agent CPU while polled each second: {used:.2%} of a core")
    assert used < 0.05, f"{used:.2%} of a core"


def test_circusd_down_is_reported_and_the_agent_recovers(stack, fleet):
    stack.stop_circusd()
    try:
        report = fleet.status()[0]
        assert not report["up"] and "no answer from circusd" in report["error"], report
        assert stack.agent.poll() is None
    finally:
        stack.start_circusd()
    wait_for(lambda: fleet.status()[0]["up"], 10, "the agent to reach circusd again")
