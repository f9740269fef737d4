"""The apps' request numbers, from their dispatcher's ``/metrics`` (Prometheus text format,
``files/ringmaster-handler/DISPATCHER.md``, "Access log and metrics").

The agent on a front reads the page when the console asks for the host's status (nothing in
between) and sends the counters as they are (``sample``); the console turns two samples into
rates (``Rates``): requests per second by status class, latency p50/p99 over the interval,
and passes on the gauges (queue depth, handlers connected) and the 502/503/504 totals.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

PREFIX = "ringmaster_dispatcher_"
LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "closed")
CODES = ("502", "503", "504")


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample line; comments and malformed lines skipped."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = LINE.match(line.strip())
        if not match:
            continue
        try:
            value = float(match.group("value"))
        except ValueError:
            continue
        labels = dict(LABEL.findall(match.group("labels") or ""))
        samples.append((match.group("name"), labels, value))
    return samples


def sample(text: str, app: str) -> dict:
    """The counters and gauges of ``app`` on one dispatcher's page."""
    out: dict = {
        "classes": dict.fromkeys(CLASSES, 0.0),
        "codes": dict.fromkeys(CODES, 0.0),
        "buckets": [],
        "count": 0.0,
        "queue_depth": None,
        "handlers_connected": None,
    }
    for name, labels, value in parse(text):
        if not name.startswith(PREFIX) or labels.get("app") != app:
            continue
        short = name[len(PREFIX) :]
        if short == "requests_total" and labels.get("code_class") in out["classes"]:
            out["classes"][labels["code_class"]] = value
        elif short == "responses_total" and labels.get("code") in out["codes"]:
            out["codes"][labels["code"]] = value
        elif short == "request_duration_seconds_bucket" and "le" in labels:
            out["buckets"].append((float(labels["le"]), value))
        elif short == "request_duration_seconds_count":
            out["count"] = value
        elif short in ("queue_depth", "handlers_connected"):
            out[short] = value
    out["buckets"].sort()
    return out


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative (le, count) buckets; None when empty."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_le  # above the last finite bucket: its bound is all we know
            if count == lower_count:
                return le
            return lower_le + (le - lower_le) * (rank - lower_count) / (count - lower_count)
        lower_le, lower_count = le, count
    return None


def difference(now: dict, before: dict) -> dict | None:
    """What happened between two samples, or None when a counter went down (the recorder
    restarted: its counters start from zero)."""
    if now["count"] < before["count"]:
        return None
    if len(now["buckets"]) != len(before["buckets"]):
        return None
    return {
        "classes": {k: now["classes"][k] - before["classes"].get(k, 0) for k in now["classes"]},
        "buckets": [
            (le, n - m) for (le, n), (_, m) in zip(now["buckets"], before["buckets"], strict=True)
        ],
    }


def rates(now: dict, before: dict | None, seconds: float) -> dict:
    """The figures the page shows for one app on one front."""
    out = {
        "per_second": None,
        "p50_ms": None,
        "p99_ms": None,
        "queue_depth": now.get("queue_depth"),
        "handlers_connected": now.get("handlers_connected"),
        "totals": dict(now["codes"]),
        "requests": now["count"],
    }
    change = difference(now, before) if before is not None and seconds > 0 else None
    if change is None:
        return out
    out["per_second"] = {k: round(v / seconds, 2) for k, v in change["classes"].items()}
    for q, key in ((0.5, "p50_ms"), (0.99, "p99_ms")):
        value = quantile(q, change["buckets"])
        out[key] = None if value is None else round(value * 1000, 1)
    return out


class Rates:
    """The last sample of each (host, app), to rate the next one against."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.last: dict[tuple[str, str], tuple[float, dict]] = {}

    def update(self, host: str, app: str, now_sample: dict) -> dict:
        now = self.clock()
        before = self.last.get((host, app))
        self.last[(host, app)] = (now, now_sample)
        if before is None:
            return rates(now_sample, None, 0)
        return rates(now_sample, before[1], now - before[0])
