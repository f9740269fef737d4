"""Slows down password guessing, per client address.

The first ``free`` failures cost nothing (typos); each one after that doubles the time the
address must wait before its next attempt is even checked (``base`` seconds, up to
``max_delay``). A success forgets the address; so does ``forget_after`` seconds without a
failure. The table is bounded (``max_entries``, oldest dropped first), so a flood of addresses
cannot grow it without end.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Record:
    failures: int
    last: float  # time of the last failure
    until: float  # no attempt is checked before this time


class LoginThrottle:
    def __init__(
        self,
        free: int = 3,
        base: float = 1.0,
        max_delay: float = 60.0,
        forget_after: float = 900.0,
        max_entries: int = 10000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free, self.base, self.max_delay = free, base, max_delay
        self.forget_after, self.max_entries, self.clock = forget_after, max_entries, clock
        self.records: OrderedDict[str, Record] = OrderedDict()

    def _record(self, address: str) -> Record | None:
        record = self.records.get(address)
        if record is not None and self.clock() - record.last > self.forget_after:
            del self.records[address]
            return None
        return record

    def wait(self, address: str) -> float:
        """Seconds before ``address`` may try again; 0 when it may now."""
        record = self._record(address)
        if record is None:
            return 0.0
        return max(0.0, record.until - self.clock())

    def delay_after(self, failures: int) -> float:
        if failures <= self.free:
            return 0.0
        return min(self.max_delay, self.base * 2 ** (failures - self.free - 1))

    def failed(self, address: str) -> float:
        """Count a failure; the wait it imposes."""
        now = self.clock()
        record = self._record(address) or Record(0, now, now)
        record.failures += 1
        record.last = now
        delay = self.delay_after(record.failures)
        record.until = now + delay
        self.records[address] = record
        self.records.move_to_end(address)
        while len(self.records) > self.max_entries:
            self.records.popitem(last=False)
        return delay

    def succeeded(self, address: str) -> None:
        self.records.pop(address, None)
