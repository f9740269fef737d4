"""What /proc says about a process: CPU ticks, start time, resident memory (pure parsing), and
the CPU share between two looks (``CpuMeter``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class Stat:
    cpu_ticks: int  # utime + stime
    start_ticks: int  # clock ticks after boot


def parse_stat(text: str) -> Stat | None:
    """A /proc/<pid>/stat line (the command, in parentheses, may hold spaces and parentheses)."""
    try:
        fields = text.rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state): utime is field 14, stime 15, starttime 22.
        return Stat(int(fields[11]) + int(fields[12]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def parse_rss(statm: str) -> int | None:
    """Resident bytes from /proc/<pid>/statm."""
    try:
        return int(statm.split()[1]) * PAGE
    except (IndexError, ValueError):
        return None


def parse_uptime(text: str) -> float | None:
    try:
        return float(text.split()[0])
    except (IndexError, ValueError):
        return None


def age_seconds(start_ticks: int, uptime: float) -> float:
    return max(0.0, uptime - start_ticks / TICKS)


class CpuMeter:
    """CPU percent of each process (100 = one core) over the time since the previous look.

    Whoever asks (one console or several) gets the share since the last look by anyone; a
    look closer than ``min_interval`` to the previous one repeats the previous figures, so
    two quick polls do not make a noisy 0 or 300 %.
    """

    def __init__(self, min_interval: float = 0.25) -> None:
        self.min_interval = min_interval
        self.last: dict[int, tuple[float, int, int]] = {}  # pid -> (time, ticks, start)
        self.percent: dict[int, float] = {}

    def update(self, now: float, samples: dict[int, Stat]) -> dict[int, float | None]:
        """``samples``: the live processes now. None for a process seen for the first time."""
        result: dict[int, float | None] = {}
        fresh: dict[int, tuple[float, int, int]] = {}
        for pid, stat in samples.items():
            before = self.last.get(pid)
            if before is None or before[2] != stat.start_ticks:
                # New, or the PID was reused by another process.
                fresh[pid] = (now, stat.cpu_ticks, stat.start_ticks)
                result[pid] = None
                continue
            elapsed = now - before[0]
            if elapsed < self.min_interval:
                fresh[pid] = before
                result[pid] = self.percent.get(pid)
                continue
            used = max(0, stat.cpu_ticks - before[1]) / TICKS
            result[pid] = round(100.0 * used / elapsed, 1)
            fresh[pid] = (now, stat.cpu_ticks, stat.start_ticks)
        self.last = fresh
        self.percent = {pid: value for pid, value in result.items() if value is not None}
        return result
