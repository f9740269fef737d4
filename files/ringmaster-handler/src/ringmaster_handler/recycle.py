"""Process recycling: ``--max-requests N [--max-requests-jitter J]``, ``--max-age SECONDS``,
``--max-rss MIB``, as Gunicorn's max_requests/max_requests_jitter and uWSGI's reload-on-rss.

When a limit is reached the process stops the way SIGTERM stops it (the loop's stop flag):
it takes no new work, finishes what it holds (in dispatcher mode: says bye and serves what
the dispatcher sent before acknowledging it, so no request is lost), and exits 0 for its
supervisor (circus) to start a fresh one.

With ``--threads N`` one Recycler is shared by the process's threads: the request count is
the process's (``next()`` on an ``itertools.count`` is atomic under the GIL), and the first
thread to see a limit stops the whole process.

Jitter spreads the restarts of processes that started together: the request limit is
``N + randint(0, J)``, and the age limit gets up to 10% more, drawn once per process.
"""

import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable

log = logging.getLogger("ringmaster_handler.recycle")

# The age and RSS limits are also looked at this often while a process is idle (seconds).
IDLE_CHECK = 1.0
AGE_JITTER = 0.10
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(fd: int) -> int:
    """Resident set size of this process, from ``/proc/self/statm`` opened as ``fd``."""
    fields = os.pread(fd, 128, 0).split()
    return int(fields[1]) * _PAGE


def request_limit(max_requests: int, jitter: int, rng: random.Random) -> int:
    """The number of requests after which this process leaves (0: no limit)."""
    if max_requests <= 0:
        return 0
    return max_requests + (rng.randint(0, jitter) if jitter > 0 else 0)


def age_limit(max_age: float, rng: random.Random) -> float:
    """Seconds after start at which this process leaves (0: no limit)."""
    if max_age <= 0:
        return 0.0
    return max_age * (1 + rng.uniform(0, AGE_JITTER))


class Recycler:
    """Decides when this process has served enough; calls ``on_limit(reason)`` once."""

    def __init__(
        self,
        max_requests: int = 0,
        jitter: int = 0,
        max_age: float = 0.0,
        max_rss_mib: float = 0.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        rng = rng or random.Random()
        self.limit = request_limit(max_requests, jitter, rng)
        self.clock = clock
        self.started = clock()
        age = age_limit(max_age, rng)
        self.age_deadline = self.started + age if age else 0.0
        self.max_rss = int(max_rss_mib * 2**20)
        self._statm = os.open("/proc/self/statm", os.O_RDONLY) if self.max_rss else -1
        self._count = itertools.count(1)
        self._next_idle = 0.0
        self.reason: str | None = None
        self._lock = threading.Lock()
        self.on_limit: Callable[[str], None] | None = None

    @property
    def active(self) -> bool:
        return bool(self.limit or self.age_deadline or self.max_rss)

    def request_done(self) -> None:
        """After every request (any thread)."""
        if self.reason is not None:
            return
        n = next(self._count)
        if self.limit and n >= self.limit:
            self._trigger(f"served {n} requests (--max-requests, limit {self.limit} with jitter)")
            return
        self._check_age_rss()

    def idle_check(self) -> None:
        """While idle (at most every IDLE_CHECK seconds): the age and RSS limits."""
        if self.reason is not None or not (self.age_deadline or self.max_rss):
            return
        now = self.clock()
        if now >= self._next_idle:
            self._next_idle = now + IDLE_CHECK
            self._check_age_rss(now)

    def _check_age_rss(self, now: float | None = None) -> None:
        if self.age_deadline and (now or self.clock()) >= self.age_deadline:
            self._trigger(
                f"reached its age limit of {self.age_deadline - self.started:.0f}s (--max-age)"
            )
        elif self.max_rss:
            rss = rss_bytes(self._statm)
            if rss > self.max_rss:
                self._trigger(
                    f"uses {rss / 2**20:.1f} MiB resident, above --max-rss "
                    f"{self.max_rss / 2**20:g} MiB"
                )

    def _trigger(self, reason: str) -> None:
        with self._lock:  # (threads: only the first one reports it)
            if self.reason is not None:
                return
            self.reason = reason
        log.info("recycling: this process %s; finishing its requests and exiting", reason)
        if self.on_limit is not None:
            self.on_limit(reason)

    def close(self) -> None:
        if self._statm >= 0:
            os.close(self._statm)
            self._statm = -1
