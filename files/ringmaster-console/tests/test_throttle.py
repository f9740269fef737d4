import pytest

from ringmaster_console.throttle import LoginThrottle


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize(
    ("failures", "delay"), [(1, 0), (3, 0), (4, 1), (5, 2), (6, 4), (9, 32), (10, 60), (30, 60)]
)
def test_delay_after(failures, delay):
    assert LoginThrottle(free=3, base=1, max_delay=60).delay_after(failures) == delay


def test_waits_grow_per_address_and_success_forgets():
    clock = Clock()
    throttle = LoginThrottle(free=2, base=1, max_delay=60, clock=clock)
    assert [throttle.failed("a") for _ in range(2)] == [0, 0]
    assert throttle.wait("a") == 0
    assert throttle.failed("a") == 1
    assert throttle.wait("a") == 1
    assert throttle.wait("b") == 0  # another address is not slowed down
    clock.now += 1
    assert throttle.wait("a") == 0
    assert throttle.failed("a") == 2
    clock.now += 0.5
    assert throttle.wait("a") == 1.5
    throttle.succeeded("a")
    assert throttle.wait("a") == 0
    assert throttle.failed("a") == 0


def test_forgets_after_quiet_time_and_is_bounded():
    clock = Clock()
    throttle = LoginThrottle(free=0, base=1, forget_after=900, max_entries=3, clock=clock)
    throttle.failed("a")
    clock.now += 901
    assert throttle.wait("a") == 0
    assert throttle.failed("a") == 1  # counted from scratch
    for address in "bcd":
        throttle.failed(address)
    assert list(throttle.records) == ["b", "c", "d"]
