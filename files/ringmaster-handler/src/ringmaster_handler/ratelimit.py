"""Warnings that a peer can provoke at will, logged at most once per key per period."""

import logging
import time


class RateLimitedLog:
    """One warning per ``every`` seconds per key, with the count of those held back."""

    def __init__(
        self,
        logger: logging.Logger,
        every: float,
        clock=time.monotonic,
        held_back: str = " (%d more like it not logged)",
    ) -> None:
        self.logger = logger
        self.every = every
        self.clock = clock
        self.held_back = held_back
        self._last: dict[str, tuple[float, int]] = {}  # key -> (last warned, held back since)

    def warning(self, key: str, fmt: str, *args) -> bool:
        """Log unless ``key`` was warned about lately (then only count it); True if logged."""
        now = self.clock()
        last, skipped = self._last.get(key, (None, 0))
        if last is not None and now - last < self.every:
            self._last[key] = (last, skipped + 1)
            return False
        if skipped:
            fmt += self.held_back
            args = (*args, skipped)
        self.logger.warning(fmt, *args)
        self._last[key] = (now, 0)
        if len(self._last) > 4096:  # keys from many peers must not grow this forever
            cutoff = now - self.every
            self._last = {k: v for k, v in self._last.items() if v[0] >= cutoff}
        return True
