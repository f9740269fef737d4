"""--threads without sockets: the shared alarm, and the dispatcher's view of a process's
threads (the scheduling core driven directly, with a fake clock)."""

import signal

from ringmaster_handler.alarm import SharedAlarm
from ringmaster_handler.credit import hello_frame
from test_dispatcher_core import Clock, Core, request


def join(core: Core, ident: bytes, fd: int, proc: str | None, key: str | None = None) -> None:
    info = {"pid": 1, "host": "h"} if proc is None else {"pid": 1, "host": "h", "proc": proc}
    core.on_worker_frame(ident, hello_frame(info), fd, key)


def test_a_timeout_stops_work_to_every_thread_of_that_process_only():
    core = Core(request_timeout=1.0, prefetch=0)
    for n, ident in enumerate((b"a1", b"a2", b"a3")):
        join(core, ident, 10 + n, "proc-a")
    join(core, b"b1", 20, "proc-b")
    join(core, b"c1", 21, None)  # an older handler: no proc token
    join(core, b"x1", 22, "proc-a", key="other-key")  # same token, another CURVE key
    core.on_request(request("GET", 1, "/stuck"))
    assert len(core.jobs_of(b"a1")) == 1
    core.clock_.now += 1.5
    core.check_timeouts()
    assert core.stats["timeouts"] == 1
    stopped = {ident for ident, w in core.workers.items() if w.stopping}
    assert stopped == {b"a1", b"a2", b"a3"}
    # What comes later goes to the other processes, though a2 and a3 are free.
    for conn in range(2, 6):
        core.on_request(request("GET", conn))
    assert [len(core.jobs_of(i)) for i in (b"a1", b"a2", b"a3")] == [1, 0, 0]
    assert [len(core.jobs_of(i)) for i in (b"b1", b"c1", b"x1")] == [1, 1, 1]


def test_the_shared_alarm_stands_at_the_earliest_deadline():
    clock = Clock()
    alarm = SharedAlarm(100.0, clock=clock)
    first, second = alarm.slot(0), alarm.slot(1)
    try:
        first.arm()  # due at 200
        clock.now += 30
        second.arm()  # due at 230: the timer still says about 70 s
        assert 69 < signal.getitimer(signal.ITIMER_REAL)[0] <= 70.01
        clock.now += 30
        first.arm()  # first due at 260 now: the second is the earliest (230 - 160)
        assert 69 < signal.getitimer(signal.ITIMER_REAL)[0] <= 70.01
        second.clear()
        assert 99 < signal.getitimer(signal.ITIMER_REAL)[0] <= 100.01
        first.clear()
        assert signal.getitimer(signal.ITIMER_REAL)[0] == 0
        assert alarm.pending() == {}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
