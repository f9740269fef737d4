"""Restarts per watcher, from circusd's pub/sub events.

circusd publishes ``kill`` for every process it stops itself (stop, restart, reload, scale
down) and ``reap`` for every process that ended. A reap without a kill before it is a process
that died on its own, and that circusd starts again: a restart. Counted from the agent's start.
"""

from __future__ import annotations

import json
from collections import defaultdict


def parse_event(frames: list[bytes]) -> tuple[str, str, int | None] | None:
    """(watcher, event, pid) from a ``watcher.<name>.<event>`` message, or None."""
    if len(frames) != 2:
        return None
    try:
        topic = frames[0].decode()
        body = json.loads(frames[1])
    except (UnicodeDecodeError, ValueError):
        return None
    parts = topic.split(".")
    if len(parts) < 3 or parts[0] != "watcher":
        return None
    pid = body.get("process_pid") if isinstance(body, dict) else None
    if isinstance(pid, bool) or not isinstance(pid, int):
        pid = None
    # Watcher names hold no dots in ringmaster, but circus allows them: the event is last.
    return ".".join(parts[1:-1]), parts[-1], pid


class RestartCounter:
    def __init__(self) -> None:
        self.killed: dict[str, set[int]] = defaultdict(set)
        self.counts: dict[str, int] = defaultdict(int)

    def event(self, watcher: str, event: str, pid: int | None) -> None:
        if pid is None:
            return
        if event == "kill":
            self.killed[watcher].add(pid)
        elif event == "reap":
            if pid in self.killed[watcher]:
                self.killed[watcher].discard(pid)
            else:
                self.counts[watcher] += 1

    def of(self, watcher: str) -> int:
        return self.counts.get(watcher.lower(), 0)
