"""bench/whole.py's verdicts: which row each target reads, and that a dirty row never passes."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import whole

MIXED = ("mixed", "95% fast / 5% slow")
RM, RMT, SYNC = whole.RingmasterDispatcher.name, whole.RingmasterDispatcherThreads.name, whole.BASE


def cell(p99=10.0, rps=1000.0, errors=0, lost=0, bg_lost=0):
    return [{"p99": p99, "rps": rps, "errors": errors, "lost": lost, "background": {"lost": bg_lost}}]


def verdicts(results, capsys) -> dict[str, str]:
    whole.targets(results)
    out = {}
    for line in capsys.readouterr().out.splitlines():
        if "[PASS]" in line or "[FAIL]" in line:
            verdict = "PASS" if "[PASS]" in line else "FAIL"
            out[line.split("] ", 1)[1].split(" (")[0]] = verdict
    return out


@pytest.mark.parametrize(
    ("threads_p99", "plain_p99", "sync_p99", "expected"),
    [
        (80.0, 1200.0, 1100.0, "PASS"),  # the threads row is what counts
        (400.0, 100.0, 1100.0, "FAIL"),  # the plain row being fast does not help
        (367.0, 80.0, 1100.0, "FAIL"),  # just short of a third
    ],
)
def test_the_mixed_target_reads_the_threads_row(capsys, threads_p99, plain_p99, sync_p99, expected):
    results = {
        ("2 procs", *MIXED, RMT): cell(p99=threads_p99),
        ("2 procs", *MIXED, RM): cell(p99=plain_p99),
        ("2 procs", *MIXED, SYNC): cell(p99=sync_p99),
    }
    assert verdicts(results, capsys) == {"mixed fast p99 <= 1/3 of nginx+gunicorn sync": expected}


@pytest.mark.parametrize(
    ("ours", "granian", "expected"),
    [(80.0, 164.0, "PASS"), (170.0, 164.0, "FAIL")],
)
def test_recommended_mixed_compares_with_peers_only(capsys, ours, granian, expected):
    results = {
        ("recommended", *MIXED, f"{RMT} x2"): cell(p99=ours),
        ("recommended", *MIXED, f"{RM} x2"): cell(p99=1.0),  # ours, not our recommendation
        ("recommended", *MIXED, "granian wsgi x2"): cell(p99=granian),
    }
    got = verdicts(results, capsys)
    assert got["mixed fast p99 the best of every stack"] == expected


@pytest.mark.parametrize(
    ("with_bg", "expected"),
    [
        (cell(rps=950.0, p99=19.0), "PASS"),
        (cell(rps=899.0, p99=10.0), "FAIL"),  # more than 10% down
        (cell(rps=1000.0, p99=21.0), "FAIL"),  # p99 past 2x
        (cell(rps=1000.0, p99=10.0, bg_lost=1), "FAIL"),  # the background load lost one
    ],
)
def test_background_workloads(capsys, with_bg, expected):
    results = {
        ("2 procs", "slow", "without", RM): cell(rps=1000.0, p99=10.0),
        ("2 procs", "slow", "with", RM): with_bg,
    }
    assert verdicts(results, capsys) == {"slow: req/s drop <= 10%, p99 within 2x": expected}
