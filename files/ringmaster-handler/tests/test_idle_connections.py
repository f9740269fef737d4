"""Idle keep-alive clients must not stall the active ones (issue "front trust boundary", item 7).

A real Mongrel2 with the connection limits the mongrel2 role applies (read from its defaults),
one real handler, 32 active keep-alive clients, and a separate process holding up to 10,000
idle keep-alive connections (each sent one request and read its answer). Throughput alone and
with the idle connections is measured interleaved, twice, in one run.

Why it stalled: Mongrel2 1.12 puts every waiting socket in its "hot" poll() set while a slot
is free (src/task/fd.c, _wait) and its 0MQ handler sockets can wait nowhere else
(src/superpoll.c, SuperPoll_add). An idle client keeps its slot for good; once idle clients
fill the set, the handler task cannot wait for replies ("Error adding fd ... to task wait
list"), sleeps 100 ms (src/handler.c, Handler_task) and tries again: under 1% of the
throughput was left. The role makes the hot set larger than the number of clients Mongrel2
can hold. What it cannot change: every idle client in the hot set is scanned by poll() on
each loop, so throughput still falls with their number (see the xfail below). A Mongrel2 built
so that client descriptors always wait in epoll (only 0MQ sockets in the hot set) kept 0.94 to
1.1 of the throughput with 10,000 idle clients here; run against such a build the xfail turns
into a strict XPASS failure: drop the marker then.

The idle count is 10,000, or half this machine's hard open-files limit less a margin: no
setting can give Mongrel2 a hot set larger than half its limit (20,000 here: 9,744 idle).
"""

import os
import re
import resource
import shutil
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
ROUNDS = 2
# Room in the hot set for the active clients, the handler and control sockets, the listener
# and the epoll descriptor, so that the idle ones alone never fill it.
HOT_SPARE = 256


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
            # 10,000 unless this machine's hard limit is too low for any setting to hold them:
            # with the smallest dividend (2) the hot set is half the limit, so a hard limit of
            # 20,000 holds 9,744 (those beyond would fill the hot set whatever the role says).
            idle = min(IDLE, saved[1] // 2 - HOT_SPARE)
            if idle < 1000:
                pytest.skip(f"hard open files limit {saved[1]} leaves too few for idle clients")
            Load(m2.port, clients=ACTIVE, duration=1).start().join()
            baseline_fds = fd_count(pid)
            alone, with_idle, held, notes = [], [], [], []
            for _ in range(ROUNDS):
                alone.append(Load(m2.port, ACTIVE, SECONDS, 10**7).start().join())
                proc, n = hold_idle(m2.port, idle)
                held.append(n)
                with_idle.append(Load(m2.port, ACTIVE, SECONDS, 10**7).start().join())
                notes.append(release_idle(proc))
                # Mongrel2 tells the handler about every closed connection: let that pass
                # before the next measurement alone.
                wait_for(lambda: fd_count(pid) <= baseline_fds + 16, 60, "idle clients to close")
                time.sleep(0.5)
            log = (root / "logs" / "error.log").read_text(errors="replace")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, saved)
    ok_alone = sum(r.ok for r in alone)
    ok_idle = sum(r.ok for r in with_idle)
    report = (
        f"limit {limit} hot {hot} idle {idle} held {held} {notes}: "
        f"alone {[r.ok / SECONDS for r in alone]} req/s, "
        f"with idle {[r.ok / SECONDS for r in with_idle]} req/s, "
        f"ratio {ok_idle / max(ok_alone, 1):.3f}"
    )
    print(report)
    return {
        "idle": idle,
        "held": held,
        "results": alone + with_idle,
        "ratio": ok_idle / max(ok_alone, 1),
        # Mongrel2's messages when the handler socket found no slot in the hot set.
        "stalls": log.count("Error adding fd") + log.count("Receive on handler socket failed"),
        "report": report,
    }


def test_idle_clients_do_not_stall_replies(measured):
    assert measured["held"] == [measured["idle"]] * ROUNDS, measured["report"]
    for result in measured["results"]:
        assert result.lost == 0 and result.error == 0, f"{result}; {measured['report']}"
    assert measured["stalls"] == 0, measured["report"]
    # The stall left 0.5% of the throughput. poll() over 9,744 idle clients leaves 20-50% of it
    # on 2 shared cores, depending on the neighbours: the floor only tells the two apart.
    assert measured["ratio"] >= 0.05, measured["report"]


@pytest.mark.xfail(
    strict=True,
    reason="Mongrel2 1.12 scans every idle client in its hot poll set on each loop; no setting "
    "moves them to epoll while the 0MQ sockets can still wait (see the module docstring)",
)
def test_idle_clients_cost_at_most_a_tenth(measured):
    assert measured["ratio"] >= 0.9, measured["report"]
