import pytest

from ringmaster_console.procfs import (
    PAGE,
    TICKS,
    CpuMeter,
    Stat,
    age_seconds,
    parse_rss,
    parse_stat,
    parse_uptime,
)

# utime 150, stime 50, starttime 777; the command holds a space and parentheses.
STAT = "4242 (rm-wsgi: shop (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 150 50 0 0 20 0 3 0 777 1 2"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (STAT, Stat(200, 777)),
        ("1 (a) R 0 1 1 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 9 0 0", Stat(11, 9)),
        ("", None),
        ("1 (a) R 0", None),
        ("1 (a) R 0 1 1 0 -1 0 0 0 0 0 x 6 0 0 20 0 1 0 9", None),
    ],
)
def test_parse_stat(text, expected):
    assert parse_stat(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("100 25 3 1 0 4 0", 25 * PAGE), ("", None), ("1 x", None)]
)
def test_parse_rss(text, expected):
    assert parse_rss(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("1234.56 99.0\n", 1234.56), ("", None), ("x", None)]
)
def test_parse_uptime(text, expected):
    assert parse_uptime(text) == expected


def test_age():
    assert age_seconds(10 * TICKS, 25.0) == 15.0
    assert age_seconds(30 * TICKS, 25.0) == 0.0


def test_cpu_meter():
    meter = CpuMeter(min_interval=0.25)
    # First look: nothing to compare with.
    assert meter.update(100.0, {1: Stat(0, 5)}) == {1: None}
    # Half a core over two seconds.
    assert meter.update(102.0, {1: Stat(TICKS, 5), 2: Stat(0, 9)}) == {1: 50.0, 2: None}
    # Too soon after the last look: the same figures again.
    assert meter.update(102.1, {1: Stat(TICKS * 2, 5), 2: Stat(0, 9)}) == {1: 50.0, 2: None}
    # A whole core; PID 2 reused by a process started later: new again.
    assert meter.update(103.0, {1: Stat(2 * TICKS, 5), 2: Stat(0, 50)}) == {1: 100.0, 2: None}
    # PID 1 gone: forgotten.
    meter.update(104.0, {2: Stat(0, 50)})
    assert 1 not in meter.last
