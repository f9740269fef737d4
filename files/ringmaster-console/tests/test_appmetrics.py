import math

import pytest

from ringmaster_console.appmetrics import Rates, difference, parse, quantile, rates, sample

PAGE = """# HELP ringmaster_dispatcher_requests_total Requests finished.
# TYPE ringmaster_dispatcher_requests_total counter
ringmaster_dispatcher_requests_total{app="shop",code_class="closed"} 0
ringmaster_dispatcher_requests_total{app="shop",code_class="2xx"} 90
ringmaster_dispatcher_requests_total{app="shop",code_class="5xx"} 10
ringmaster_dispatcher_requests_total{app="blog",code_class="2xx"} 7
ringmaster_dispatcher_responses_total{app="shop",code="503"} 4
ringmaster_dispatcher_responses_total{app="shop",code="504"} 1
ringmaster_dispatcher_request_duration_seconds_bucket{app="shop",le="0.005"} 50
ringmaster_dispatcher_request_duration_seconds_bucket{app="shop",le="0.01"} 90
ringmaster_dispatcher_request_duration_seconds_bucket{app="shop",le="+Inf"} 100
ringmaster_dispatcher_request_duration_seconds_sum{app="shop"} 0.9
ringmaster_dispatcher_request_duration_seconds_count{app="shop"} 100
ringmaster_dispatcher_queue_depth{app="shop"} 3
ringmaster_dispatcher_handlers_connected{app="shop"} 4
ringmaster_dispatcher_events_total{app="shop",event="a \\"b\\""} 2
garbage line
ringmaster_dispatcher_queue_depth{app="shop"} not-a-number
"""


def test_parse():
    samples = parse(PAGE)
    assert ("ringmaster_dispatcher_queue_depth", {"app": "shop"}, 3.0) in samples
    assert (
        "ringmaster_dispatcher_events_total",
        {"app": "shop", "event": 'a \\"b\\"'},
        2.0,
    ) in samples
    assert len(samples) == 14


def test_sample_of_one_app():
    s = sample(PAGE, "shop")
    assert s["classes"]["2xx"] == 90 and s["classes"]["5xx"] == 10 and s["classes"]["4xx"] == 0
    assert s["codes"] == {"502": 0, "503": 4, "504": 1}
    assert s["buckets"] == [(0.005, 50), (0.01, 90), (math.inf, 100)]
    assert s["count"] == 100 and s["queue_depth"] == 3 and s["handlers_connected"] == 4
    other = sample(PAGE, "blog")
    assert other["classes"]["2xx"] == 7 and other["count"] == 0 and other["queue_depth"] is None


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [(0.005, 50), (0.01, 90), (math.inf, 100)], 0.005),
        (0.7, [(0.005, 50), (0.01, 90), (math.inf, 100)], 0.0075),
        (0.25, [(0.005, 50), (0.01, 90), (math.inf, 100)], 0.0025),
        (0.99, [(0.005, 50), (0.01, 90), (math.inf, 100)], 0.01),
        (0.5, [(0.005, 0), (math.inf, 0)], None),
        (0.5, [], None),
    ],
)
def test_quantile(q, buckets, expected):
    assert (
        quantile(q, buckets) == pytest.approx(expected)
        if expected
        else quantile(q, buckets) is None
    )


def later(s, n2xx, buckets):
    return {
        **s,
        "classes": {**s["classes"], "2xx": n2xx},
        "buckets": buckets,
        "count": buckets[-1][1],
    }


def test_rates_over_an_interval():
    before = sample(PAGE, "shop")
    now = later(before, 110, [(0.005, 50), (0.01, 110), (math.inf, 120)])
    r = rates(now, before, 2.0)
    assert r["per_second"]["2xx"] == 10 and r["per_second"]["5xx"] == 0
    assert r["p50_ms"] == pytest.approx(7.5)  # 10 of the 20 new ones within (5, 10] ms
    assert r["p99_ms"] == pytest.approx(10.0)  # above the last finite bucket: its bound
    assert r["totals"] == {"502": 0, "503": 4, "504": 1}
    assert r["queue_depth"] == 3 and r["handlers_connected"] == 4


def test_no_rates_without_a_previous_sample_or_after_a_reset():
    s = sample(PAGE, "shop")
    assert rates(s, None, 0)["per_second"] is None
    reset = later(s, 1, [(0.005, 1), (0.01, 1), (math.inf, 1)])
    assert difference(reset, s) is None
    assert rates(reset, s, 1.0)["per_second"] is None


def test_rates_keeps_the_last_sample_per_host_and_app():
    clock = [10.0]
    keeper = Rates(clock=lambda: clock[0])
    s = sample(PAGE, "shop")
    assert keeper.update("front", "shop", s)["per_second"] is None
    clock[0] = 11.0
    r = keeper.update("front", "shop", later(s, 100, [(0.005, 60), (0.01, 100), (math.inf, 110)]))
    assert r["per_second"]["2xx"] == 10
    assert keeper.update("front2", "shop", s)["per_second"] is None
