"""--request-timeout inside the handler: one process-wide ``ITIMER_REAL`` alarm.

No SIGALRM handler is installed on purpose: when the alarm fires, the default action ends the
process even while the app's C code holds the GIL, and the supervisor starts a fresh one.
That is also why a watchdog thread would not do: it cannot run while C code holds the GIL.

A process has one such timer. With ``--threads N`` every thread has a deadline of its own
(its request's last progress plus the timeout) and the timer is kept at the earliest of them,
so a thread that makes progress never hides one that is stuck.
"""

import signal
import threading
import time


class SoloAlarm:
    """The alarm of a process with one serving thread: each arm restarts the timer."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def arm(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def clear(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)


class SharedAlarm:
    """The alarm shared by the serving threads of one process (``slot`` gives each its own)."""

    def __init__(self, seconds: float, clock=time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._deadlines: dict[int, float] = {}

    def slot(self, index: int) -> "AlarmSlot":
        return AlarmSlot(self, index)

    def arm(self, index: int) -> None:
        with self._lock:
            self._deadlines[index] = self._clock() + self.seconds
            self._reset()

    def clear(self, index: int) -> None:
        with self._lock:
            if self._deadlines.pop(index, None) is not None:
                self._reset()

    def pending(self) -> dict[int, float]:
        """The armed deadlines, by slot (a copy)."""
        with self._lock:
            return dict(self._deadlines)

    def _reset(self) -> None:
        # (Called with the lock held.) The timer always stands at the earliest deadline.
        if not self._deadlines:
            signal.setitimer(signal.ITIMER_REAL, 0)
            return
        left = min(self._deadlines.values()) - self._clock()
        signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))


class AlarmSlot:
    """One thread's view of a SharedAlarm (the same two calls as SoloAlarm)."""

    __slots__ = ("index", "shared")

    def __init__(self, shared: SharedAlarm, index: int) -> None:
        self.shared = shared
        self.index = index

    def arm(self) -> None:
        self.shared.arm(self.index)

    def clear(self) -> None:
        self.shared.clear(self.index)
