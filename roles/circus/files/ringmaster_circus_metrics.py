# Copyright (c) 2026, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Prometheus metrics of every circus watcher on a host, served by a circus plugin.

``GET /metrics`` on ``address:port`` answers, per watcher: whether it is active, its live
process count, their resident memory and CPU seconds (with the processes they started, such
as the dispatcher's recorder), the processes circusd started and reaped since the plugin
started, and the flapping plugin's verdict (from its ``state_file``).

Nothing is sampled between scrapes: a scrape asks circusd for its watchers and their PIDs (two
commands plus one per watcher) and reads ``/proc/<pid>/stat`` and ``statm``, so the plugin
costs nothing while nobody scrapes. CPU seconds are a counter: the CPU of a process that ended
stays counted as it was at the last scrape before it ended (a lower bound for short-lived
processes). Starts and exits come from circusd's pub/sub events, counted from the plugin's own
start (Prometheus' ``rate()`` and ``increase()`` handle the reset when it restarts).

Options: ``address`` (default 127.0.0.1), ``port`` (required), ``flapping_state_file``.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable

import zmq
from circus import logger
from circus.plugins import CircusPlugin

# The flapping plugin owns its state file and how circusd is asked (both installed side by side).
from ringmaster_circus_flapping import REPLY_TIMEOUT, call_circusd, read_states
from tornado.httpserver import HTTPServer
from tornado.web import Application, RequestHandler

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# name, type, help; every series is labelled by watcher.
SERIES = (
    ("ringmaster_circus_watcher_active", "gauge", "1 when circusd reports the watcher active."),
    ("ringmaster_circus_watcher_processes", "gauge", "Live processes of the watcher."),
    ("ringmaster_circus_watcher_rss_bytes", "gauge", "Resident memory of the watcher's live processes."),
    (
        "ringmaster_circus_watcher_cpu_seconds_total",
        "counter",
        "CPU seconds (user + system) of the watcher's processes, ended ones as last scraped.",
    ),
    ("ringmaster_circus_watcher_spawns_total", "counter", "Processes circusd started since the plugin started."),
    ("ringmaster_circus_watcher_reaps_total", "counter", "Processes that ended since the plugin started."),
    ("ringmaster_circus_watcher_flapping", "gauge", "1 while the flapping plugin holds the watcher stopped."),
    ("ringmaster_circus_watcher_flapping_gave_up", "gauge", "1 when the flapping plugin gave up on the watcher."),
)


# -- pure parsing ---------------------------------------------------------------------------


def cpu_ticks(stat: str) -> int | None:
    """utime + stime from a /proc/<pid>/stat line (the command may hold spaces and parentheses)."""
    try:
        fields = stat.rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (IndexError, ValueError):
        return None


def rss_pages(statm: str) -> int | None:
    """Resident pages from /proc/<pid>/statm."""
    try:
        return int(statm.split()[1])
    except (IndexError, ValueError):
        return None


def flapping_of(states: dict, name: str, active: bool) -> tuple[int, int]:
    """(held stopped, gave up) for one watcher; a watcher started again since is neither."""
    state = (states.get(name) or {}).get("state") if isinstance(states.get(name), dict) else None
    if state == "retrying":
        return 1, 0
    if state == "stopped" and not active:
        return 1, 1
    return 0, 0


def label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def number(value: float) -> str:
    """Whole numbers in full (no exponent for byte counts), others as Python writes them."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(rows: dict[str, dict[str, float]]) -> str:
    """The exposition text for {watcher: {series name: value}}."""
    lines: list[str] = []
    for name, kind, text in SERIES:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for watcher in sorted(rows):
            value = rows[watcher].get(name)
            if value is not None:
                lines.append(f'{name}{{watcher="{label(watcher)}"}} {number(value)}')
    return "\n".join(lines) + "\n"


class CpuLedger:
    """A CPU counter per watcher that does not go down when its processes end."""

    def __init__(self) -> None:
        self.last: dict[str, dict[int, int]] = {}
        self.ended: dict[str, int] = defaultdict(int)

    def update(self, watcher: str, ticks: dict[int, int]) -> int:
        """Total ticks of the watcher, given the ticks of its live processes now."""
        before = self.last.get(watcher, {})
        for pid, seen in before.items():
            if pid not in ticks:
                self.ended[watcher] += seen
            elif ticks[pid] < seen:
                # The PID was reused by a new process between two scrapes.
                self.ended[watcher] += seen
        self.last[watcher] = dict(ticks)
        return self.ended[watcher] + sum(ticks.values())

    def forget_others(self, watchers: Iterable[str]) -> None:
        keep = set(watchers)
        for gone in [w for w in self.last if w not in keep]:
            del self.last[gone]
            self.ended.pop(gone, None)


# -- the plugin -----------------------------------------------------------------------------


def read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


# Deeper than any helper a watcher's process starts; a loop in /proc is not possible, a bound
# costs nothing.
MAX_DEPTH = 4


def with_descendants(pids: Iterable[int]) -> list[int]:
    """``pids`` and the processes they started (the dispatcher's recorder, an app's own
    helpers), from /proc/<pid>/task/<pid>/children."""
    seen: list[int] = []
    level = list(pids)
    for _ in range(MAX_DEPTH):
        if not level:
            break
        seen += level
        below: list[int] = []
        for pid in level:
            below += [int(c) for c in (read(f"/proc/{pid}/task/{pid}/children") or "").split() if c.isdigit()]
        level = [pid for pid in below if pid not in seen]
    return seen


class MetricsHandler(RequestHandler):
    def initialize(self, scrape) -> None:
        self.scrape = scrape

    def get(self) -> None:
        try:
            body = self.scrape()
        # The scraper gets a 500 and the plugin lives on, whatever went wrong.
        except Exception as exc:
            logger.error("metrics scrape failed: %s", exc)
            self.set_status(500)
            self.finish(f"scrape failed: {exc}\n")
            return
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(body)


class Metrics(CircusPlugin):
    name = "metrics"

    def __init__(self, endpoint, pubsub_endpoint, check_delay, ssh_server, **config):
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server=ssh_server, **config)
        self.address = config.get("address") or "127.0.0.1"
        self.port = int(config["port"])
        self.state_file = config.get("flapping_state_file") or None
        self.ledger = CpuLedger()
        self.events: dict[str, dict[str, int]] = defaultdict(lambda: {"spawn": 0, "reap": 0})
        self.server = None

    def initialize(self) -> None:
        super().initialize()
        self.client.setsockopt(zmq.RCVTIMEO, int(REPLY_TIMEOUT * 1000))

    def call(self, command, **props):
        return call_circusd(self.client, command, props)

    def handle_init(self) -> None:
        # Tornado's access log would write a line per scrape: not wanted.
        app = Application([(r"/metrics", MetricsHandler, {"scrape": self.scrape})], log_function=lambda _: None)
        self.server = HTTPServer(app)
        self.server.listen(self.port, address=self.address)

    def handle_stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def handle_recv(self, data) -> None:
        try:
            watcher, action, _ = self.split_data(data)
        except ValueError:
            return
        if action in ("spawn", "reap"):
            self.events[watcher][action] += 1

    def scrape(self) -> str:
        answer = self.call("status")
        if answer.get("status") != "ok":
            raise RuntimeError(answer.get("reason", "circusd did not answer"))
        statuses = answer.get("statuses", {})
        states = read_states(self.state_file) if self.state_file else {}
        rows: dict[str, dict[str, float]] = {}
        for watcher, status in statuses.items():
            pids = [int(p) for p in self.call("list", name=watcher).get("pids", [])]
            ticks: dict[int, int] = {}
            pages = 0
            for pid in with_descendants(pids):
                t = cpu_ticks(read(f"/proc/{pid}/stat") or "")
                if t is not None:
                    ticks[pid] = t
                pages += rss_pages(read(f"/proc/{pid}/statm") or "") or 0
            active = status == "active"
            held, gave_up = flapping_of(states, watcher, active)
            rows[watcher] = {
                "ringmaster_circus_watcher_active": 1 if active else 0,
                "ringmaster_circus_watcher_processes": len(pids),
                "ringmaster_circus_watcher_rss_bytes": pages * PAGE,
                "ringmaster_circus_watcher_cpu_seconds_total": round(self.ledger.update(watcher, ticks) / TICKS, 2),
                "ringmaster_circus_watcher_spawns_total": self.events[watcher]["spawn"],
                "ringmaster_circus_watcher_reaps_total": self.events[watcher]["reap"],
                "ringmaster_circus_watcher_flapping": held,
                "ringmaster_circus_watcher_flapping_gave_up": gave_up,
            }
        self.ledger.forget_others(rows)
        return render(rows)
