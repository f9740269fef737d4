"""Idle keep-alive clients must not stall the active ones (issue "front trust boundary", item 7).

A real Mongrel2 (the one installed: our build, see docs/security.md, "Our Mongrel2 build") with
the connection limits the mongrel2 role applies (read from its defaults), one real handler,
32 active keep-alive clients, and a separate process holding 10,000 idle keep-alive
connections (each sent one request and read its answer). Throughput alone and with the idle
connections is measured interleaved: alone, idle, alone, idle, ... alone. The best round with
idle connections must reach at least 0.9 of the best round alone (at most 10% lost): neighbours on
a shared machine only ever slow a round down, so the best of each kind is the nearest to what the
machine can do. Per round, against the rounds alone around it, is reported too; on CI's shared
cores rounds alone ranged from 12,000 to 21,000 req/s within one run, enough to sink a median.
Neighbours can still spoil every round of one attempt (CI on 2026-12-02: best/best 0.879, the last
round with idle at half the others), so an attempt that misses the bar is measured again, at most
ATTEMPTS times in all: a real cost shows in every attempt (Debian's build: 0.004 each time).

Why Debian's Mongrel2 1.12.2 fails it: it puts every waiting socket in its "hot" poll() set while
a slot is free (src/task/fd.c, _wait) and its 0MQ handler sockets can wait nowhere else
(src/superpoll.c, SuperPoll_add). An idle client keeps its slot; every loop scans them all with
poll(), and once they fill the set the handler task cannot wait for replies ("Error adding fd
... to task wait list") and sleeps 100 ms: under 1% of the throughput was left. Our build
(roles/mongrel2/files/patches) makes client descriptors wait in epoll and keeps the hot set for
the 0MQ sockets (and a connection's writer while its reader waits in epoll). With the role's
limits (a quarter of the descriptors hot) Debian's build still lost half to four fifths of the
throughput at 9,744 idle; with a small hot set it stalls at a few hundred.

The idle count is 10,000, or fewer when this machine's hard open-files limit leaves Mongrel2
less room (the descriptors it may open, less its hot set and a margin).
"""

import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import TESTS, Handler, Mongrel2, handler_route, running, wait_for
from loadclient import Load

pytestmark = pytest.mark.skipif(
    not (shutil.which("mongrel2") and shutil.which("m2sh")), reason="needs mongrel2 and m2sh"
)

ROLE_DEFAULTS = Path(__file__).resolve().parents[3] / "roles" / "mongrel2" / "defaults" / "main.yml"
IDLE = 10_000
ACTIVE = 32
SECONDS = 3.0
# Rounds with the idle connections; one more round alone than that, around them.
ROUNDS = 5
# Whole measurements, when one misses the bar (see the docstring).
ATTEMPTS = 3
BAR = 0.9
# Descriptors left for the active clients, the handler's sockets, the listener and the log.
SPARE = 256


def role_setting(name: str) -> int:
    match = re.search(rf"^{name}: (\d+)$", ROLE_DEFAULTS.read_text(), re.M)
    assert match, f"{name} not in {ROLE_DEFAULTS}"
    return int(match.group(1))


def open_files_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open files limit")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def hold_idle(port: int, count: int) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, str(TESTS / "idleclients.py"), str(port), str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().split()
    assert line[:1] == ["held"], f"idle client process said {line}"
    return proc, int(line[1])


def release_idle(proc: subprocess.Popen) -> str:
    proc.stdin.close()
    said = proc.stdout.readline().strip()
    proc.wait(30)
    return said


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    if not ROLE_DEFAULTS.exists():
        pytest.skip("needs the collection's roles/mongrel2 next to this package")
    max_fd = role_setting("mongrel2_max_fd")
    dividend = role_setting("mongrel2_hot_dividend")
    settings = {
        "superpoll.max_fd": max_fd,
        "superpoll.hot_dividend": dividend,
        "limits.min_ping": role_setting("mongrel2_idle_timeout"),
    }
    # As mongrel2-run does: Mongrel2 gets the whole hard limit (it lowers it to max_fd itself,
    # or keeps it when max_fd is out of reach, as on machines that cap it at 20,000).
    saved = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Root (as in CI) may raise the hard limit to what the role asks for, as circusd's
    # LimitNOFILE does on a front; others keep theirs.
    try:
        want = max(saved[1], max_fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (saved[1], saved[1]))
    root = tmp_path_factory.mktemp("idle")
    root.chmod(0o755)
    route = handler_route()
    m2 = Mongrel2(root, {"/": route}, settings)
    handler = Handler(root, "apps:hello", route["send"], route["recv"])
    try:
        with running(m2, handler):
            m2.start()
            handler.start()
            pid = m2.proc.pid
            limit = open_files_limit(pid)
            hot = limit // dividend
            idle = min(IDLE, limit - hot - SPARE)
            if idle < 1000:
                pytest.skip(f"open files limit {limit} leaves too few for idle clients")
            Load(m2.port, clients=ACTIVE, duration=1).start().join()
            baseline_fds = fd_count(pid)
            attempts = []
            for _ in range(ATTEMPTS):
                attempts.append(measure(m2.port, pid, idle, baseline_fds))
                if attempts[-1]["ratio"] >= BAR:
                    break
            log = (root / "logs" / "error.log").read_text(errors="replace")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, saved)
    report = f"limit {limit} hot {hot} idle {idle}: " + "; ".join(a["report"] for a in attempts)
    print(report)
    return {
        "idle": idle,
        "held": [n for a in attempts for n in a["held"]],
        "attempts": len(attempts),
        "results": [r for a in attempts for r in a["results"]],
        "ratio": attempts[-1]["ratio"],
        # Mongrel2's messages when the handler socket found no slot in the hot set.
        "stalls": log.count("Error adding fd") + log.count("Receive on handler socket failed"),
        "report": report,
    }


def measure(port: int, pid: int, idle: int, baseline_fds: int) -> dict:
    """One attempt: rounds alone and with the idle clients, interleaved."""
    alone, with_idle, held, notes = [], [], [], []
    alone.append(Load(port, ACTIVE, SECONDS, 10**7).start().join())
    for _ in range(ROUNDS):
        proc, n = hold_idle(port, idle)
        held.append(n)
        with_idle.append(Load(port, ACTIVE, SECONDS, 10**7).start().join())
        notes.append(release_idle(proc))
        # Mongrel2 tells the handler about every closed connection: let that pass
        # before the next measurement alone.
        wait_for(lambda: fd_count(pid) <= baseline_fds + 16, 60, "idle clients to close")
        time.sleep(0.5)
        alone.append(Load(port, ACTIVE, SECONDS, 10**7).start().join())
    # Each round with idle clients against the mean of the rounds alone before and after it:
    # what the neighbours on a shared machine take drifts slowly, a round is 3 s.
    ratios = [with_idle[i].ok / max((alone[i].ok + alone[i + 1].ok) / 2, 1) for i in range(ROUNDS)]
    best = max(r.ok for r in with_idle) / max(max(r.ok for r in alone), 1)
    report = (
        f"held {held} {notes}: "
        f"alone {[round(r.ok / SECONDS) for r in alone]} req/s, "
        f"with idle {[round(r.ok / SECONDS) for r in with_idle]} req/s, "
        f"per round {[round(r, 3) for r in ratios]} (median {statistics.median(ratios):.3f}), "
        f"best with idle / best alone {best:.3f}"
    )
    return {"held": held, "results": alone + with_idle, "ratio": best, "report": report}


# The throughput measurement (`measured`): with nothing else of the suite running beside it.
@pytest.mark.alone
def test_idle_clients_do_not_stall_replies(measured):
    held = measured["held"]
    assert held == [measured["idle"]] * ROUNDS * measured["attempts"], measured["report"]
    for result in measured["results"]:
        assert result.lost == 0 and result.error == 0, f"{result}; {measured['report']}"
    assert measured["stalls"] == 0, measured["report"]


@pytest.mark.alone
def test_idle_clients_cost_at_most_a_tenth(measured):
    # Our build kept 0.9 to 1.1 per round on 2 shared cores (best/best 1.04 on 2026-12-02);
    # Debian's 1.12.2-3+b1, first on PATH, the same day: 64 to 78 req/s with idle clients in
    # every round, best/best 0.004.
    assert measured["ratio"] >= BAR, measured["report"]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# Not marked alone: it measures memory, not throughput, so it runs on the shared workers
# (2000 connections against its own Mongrel2; each worker process raises its own descriptor limit).
def test_idle_clients_closed_by_the_timeout_free_their_memory(tmp_path):
    """Connections the idle timeout closes must give back their tasks (about 69 kB each).

    Closing a descriptor drops it from epoll without an event: with clients waiting in epoll,
    a connection Mongrel2 closes itself (idle timeout, a handler's close) would leave its
    tasks waiting for good unless our patch wakes them, as poll() did. Without that part of
    the patch each cycle below kept about 150 MB more; with it none.
    """
    saved = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (saved[1], saved[1]))
    tmp_path.chmod(0o755)
    route = handler_route()
    # The reaper runs every 10 s and closes about half of the connections due each time.
    m2 = Mongrel2(tmp_path, {"/": route}, {"superpoll.max_fd": 8192, "limits.min_ping": 1})
    handler = Handler(tmp_path, "apps:hello", route["send"], route["recv"])
    count, after = 2000, []
    try:
        with running(m2, handler):
            m2.start()
            handler.start()
            for _ in range(2):
                proc, n = hold_idle(m2.port, count)
                assert n == count
                time.sleep(22)
                said = release_idle(proc)
                closed = int(said.split()[1])
                assert closed >= count // 2, said
                result = Load(m2.port, 8, 1.0, 10**6).start().join()
                assert result.ok and result.lost == 0 and result.error == 0, str(result)
                after.append(rss_kb(m2.proc.pid))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, saved)
    # The first cycle grows the heap to its working size; the second must reuse it.
    assert after[1] - after[0] < 30_000, f"RSS after each cycle {after} kB"
