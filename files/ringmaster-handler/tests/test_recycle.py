"""Process recycling (--max-requests, --max-requests-jitter, --max-age, --max-rss).

The limits themselves are pure functions (table-driven below); the guarantee that matters,
no request lost while handlers recycle under load, is checked with real processes: Mongrel2,
the dispatcher, and handler processes restarted by a small supervisor loop (as circus
respawns a watcher's process that exited).
"""

import random
import shutil
import threading
import time

import pytest

from dispatch_harness import Worker
from loadclient import Load
from ringmaster_handler import cli
from ringmaster_handler.recycle import Recycler, age_limit, request_limit
from test_dispatcher import Stack

needs_mongrel2 = pytest.mark.skipif(
    not (shutil.which("mongrel2") and shutil.which("m2sh")), reason="needs mongrel2 and m2sh"
)


@pytest.mark.parametrize(
    ("max_requests", "jitter", "low", "high"),
    [(0, 0, 0, 0), (0, 50, 0, 0), (-5, 0, 0, 0), (1, 0, 1, 1), (50, 0, 50, 50), (50, 20, 50, 70)],
)
def test_request_limit(max_requests, jitter, low, high):
    rng = random.Random(7)
    seen = {request_limit(max_requests, jitter, rng) for _ in range(500)}
    assert min(seen) == low and max(seen) == high
    if jitter and max_requests > 0:
        assert len(seen) > jitter // 2  # spread, not one value


@pytest.mark.parametrize(("max_age", "low", "high"), [(0, 0, 0), (-1, 0, 0), (100, 100, 110)])
def test_age_limit(max_age, low, high):
    rng = random.Random(3)
    seen = [age_limit(max_age, rng) for _ in range(200)]
    assert low <= min(seen) and max(seen) <= high


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("kwargs", "requests", "advance", "expect"),
    [
        ({}, 1000, 10_000, None),
        ({"max_requests": 3}, 2, 0, None),
        ({"max_requests": 3}, 3, 0, "served 3 requests"),
        ({"max_age": 60}, 0, 59, None),
        ({"max_age": 60}, 0, 67, "age limit"),  # (60 + at most 10%)
        ({"max_age": 60}, 1, 67, "age limit"),  # seen after a request too
        ({"max_rss_mib": 1}, 1, 0, "resident"),  # any Python process is above 1 MiB
        ({"max_rss_mib": 1_000_000}, 5, 5, None),
    ],
)
def test_recycler_limits(kwargs, requests, advance, expect):
    clock = FakeClock()
    r = Recycler(**kwargs, clock=clock, rng=random.Random(1))
    reasons = []
    r.on_limit = reasons.append
    clock.now += advance
    for _ in range(requests):
        r.request_done()
    r.idle_check()
    r.idle_check()
    r.close()
    if expect is None:
        assert reasons == []
    else:
        assert len(reasons) == 1 and expect in reasons[0], reasons


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-requests", "-1"], "--max-requests must be 0"),
        (["--max-age", "-1"], "--max-age must be 0"),
        (["--max-rss", "-2"], "--max-rss must be 0"),
        (["--max-requests-jitter", "5"], "--max-requests-jitter needs --max-requests"),
    ],
)
def test_recycling_usage_errors(capsys, argv, message):
    assert cli.main([*argv, "--dispatcher", "apps:hello", "tcp://127.0.0.1:9"]) == 2
    assert message in capsys.readouterr().err


class Supervisor:
    """Keeps ``slots`` handler processes running, as circus does: one that exits is
    replaced at once. Exit codes are recorded."""

    def __init__(self, stack: Stack, slots: list[tuple[str, ...]]) -> None:
        self.stack = stack
        self.slots = slots
        self.procs = [self._start(args) for args in slots]
        self.exits: list[int] = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _start(self, args: tuple[str, ...]) -> Worker:
        w = Worker(
            self.stack.root, self.stack.app, self.stack.bind, "--upload-root", str(self.stack.root),
            *args,
        ).start(wait=False)  # fmt: skip
        self.stack.workers.append(w)
        return w

    def _run(self) -> None:
        while not self.stopping:
            for i, w in enumerate(self.procs):
                rc = w.proc.poll()
                if rc is not None:
                    self.exits.append(rc)
                    w.stderr.close()
                    self.procs[i] = self._start(self.slots[i])
            time.sleep(0.02)

    def start(self) -> "Supervisor":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(5)


@needs_mongrel2
def test_no_request_is_lost_while_handlers_recycle_under_load(tmp_path):
    """Two handler processes (one with --threads 2) leave after 50-70 requests each and
    are replaced at once, while 12 keep-alive clients send GETs and POSTs."""
    recycle = ("--max-requests", "50", "--max-requests-jitter", "20")
    with Stack(tmp_path, workers=0, app="apps:router") as stack:
        sup = Supervisor(stack, [recycle, (*recycle, "--threads", "2")])
        stack.dispatcher.wait_connected(3)
        sup.start()
        began = time.monotonic()
        gets = Load(stack.m2.port, clients=8, duration=6.0, timeout=5).start()
        posts = Load(stack.m2.port, clients=4, duration=6.0, timeout=5, method="POST", path="/echo")
        posts.start()
        got, posted = gets.join(), posts.join()
        sup.stop()
        elapsed = time.monotonic() - began
        logs = "".join(w.log_text() for w in stack.workers)
        disp = stack.dispatcher.log_text()
    print(f"GET {got}; POST {posted}; {len(sup.exits)} recycled in {elapsed:.1f}s")
    for result in (got, posted):
        assert result.lost == 0 and result.error == 0, result
        assert result.ok == result.sent > 100, result
    assert len(sup.exits) >= 10, sup.exits
    assert set(sup.exits) == {0}, sup.exits
    assert logs.count("recycling: this process served") >= len(sup.exits)
    # Every one left through the bye path, holding nothing; the dispatcher failed nothing.
    assert disp.count("is stopping") >= len(sup.exits)
    assert " 502" not in disp and "holding 0 requests" in disp
    assert "WARNING" not in disp, disp[-3000:]


@needs_mongrel2
def test_a_leaking_app_is_recycled_above_max_rss(tmp_path):
    """2 MiB more resident per request; --max-rss 60 MiB: replaced every ~15-20 requests,
    and every request is answered."""
    with Stack(tmp_path, workers=0, app="leaky_app:application") as stack:
        sup = Supervisor(stack, [("--max-rss", "60")])
        stack.dispatcher.wait_connected(1)
        sup.start()
        load = Load(stack.m2.port, clients=2, duration=30.0, max_requests=120, timeout=5).start()
        result = load.join()
        sup.stop()
        logs = "".join(w.log_text() for w in stack.workers)
    print(f"{result}; {len(sup.exits)} recycled")
    assert result.lost == 0 and result.error == 0 and result.ok == 120, result
    assert len(sup.exits) >= 2 and set(sup.exits) == {0}, sup.exits
    assert logs.count("above --max-rss 60 MiB") >= 2
