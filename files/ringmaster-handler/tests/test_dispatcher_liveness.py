"""Every request gets exactly one answer: the scheduling core against handlers that follow the
protocol (as worker.py does), with random arrivals, prefetch, steals, expiry and handlers that die.

A handler here reads the dispatcher's frames in order, keeps prefetched requests in a FIFO, runs one
at a time, answers a cancel of a request it has not started with F (and ignores one it has), and
answers every request it ran with D. A dead handler's connection is reported gone. After the run the
survivors work until nothing moves; then each request must have had one answer with a body (a reply,
502, 503): none lost, none answered twice.
"""

import logging
import random

import pytest

from ringmaster_handler.credit import HEAD_LEN, reply_prefix_of
from test_dispatcher_core import Core, request


class Handler:
    def __init__(self, ident: bytes, fd: int) -> None:
        self.ident, self.fd = ident, fd
        self.inbox: list[bytes] = []
        self.pending: list[tuple[bytes, bytes]] = []
        self.current: tuple[bytes, bytes] | None = None
        self.alive = True


class Fleet:
    def __init__(self, core: Core, size: int) -> None:
        self.core = core
        self.handlers: dict[bytes, Handler] = {}
        self.read = 0
        for fd in range(1, size + 1):
            h = Handler(f"w{fd}".encode(), fd)
            self.handlers[h.ident] = h
            core.join(h.ident, fd)

    def deliver(self) -> None:
        """Frames the dispatcher sent reach the inboxes of the handlers still alive."""
        sent = self.core.sent
        while self.read < len(sent):
            ident, frame = sent[self.read]
            self.read += 1
            h = self.handlers.get(ident)
            if h is not None and h.alive:
                h.inbox.append(frame)

    def live(self) -> list[Handler]:
        return [h for h in self.handlers.values() if h.alive]

    def read_one(self, h: Handler) -> bool:
        if not h.inbox:
            return False
        frame = h.inbox.pop(0)
        kind, rid = frame[:1], frame[1:HEAD_LEN]
        if kind == b"Q":
            h.pending.append((rid, frame[HEAD_LEN:]))
        elif kind == b"C":
            for item in h.pending:
                if item[0] == rid:
                    h.pending.remove(item)
                    self.core.on_worker_frame(h.ident, b"F" + rid)
                    break
        return True

    def work(self, h: Handler) -> bool:
        """Start the next request, or finish the one running."""
        if h.current is None:
            if not h.pending:
                return False
            h.current = h.pending.pop(0)
            return True
        rid, msg = h.current
        h.current = None
        self.core.on_worker_frame(h.ident, b"D" + rid + reply_prefix_of(msg) + b"ok")
        return True

    def kill(self, h: Handler) -> None:
        h.alive = False
        h.inbox.clear()
        self.core.on_disconnect(h.fd)

    def settle(self) -> None:
        for _ in range(100_000):
            self.deliver()
            moved = False
            for h in self.live():
                moved |= self.read_one(h)
                if not h.inbox:
                    moved |= self.work(h)
            if not moved:
                return
        raise AssertionError("the fleet never settled")


def answers_per_request(core: Core, requests: list[bytes]) -> list[int]:
    counts: dict[bytes, int] = {}
    for payload in core.to_m2:
        prefix, _, body = payload.partition(b", ")
        if body:  # an empty body only closes the connection
            counts[prefix] = counts.get(prefix, 0) + 1
    return [counts.get(reply_prefix_of(msg).split(b", ")[0], 0) for msg in requests]


def simulate(
    seed: int, *, prefetch: int, handlers: int, deaths: int, ticks: bool
) -> tuple[Core, list[bytes]]:
    rnd = random.Random(seed)
    core = Core(
        prefetch=prefetch, steal_after=0.01 if ticks else 1e9, queue_timeout=0.5 if ticks else 0
    )
    fleet = Fleet(core, handlers)
    requests: list[bytes] = []
    died = 0
    for _ in range(300):
        fleet.deliver()
        roll = rnd.random()
        live = fleet.live()
        if roll < 0.35:
            msg = request("GET" if rnd.random() < 0.8 else "POST", len(requests) + 1)
            requests.append(msg)
            core.on_request(msg)
        elif roll < 0.6 and live:
            fleet.read_one(rnd.choice(live))
        elif roll < 0.9 and live:
            fleet.work(rnd.choice(live))
        elif roll < 0.97 and ticks:
            core.clock_.now += 0.02
            core.steal()
            core.expire()
        elif died < deaths and len(live) > 1:
            died += 1
            fleet.kill(rnd.choice(live))
    fleet.settle()
    return core, requests


@pytest.fixture(autouse=True)
def _quiet():
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


@pytest.mark.parametrize(
    ("prefetch", "handlers", "deaths", "ticks"),
    [(2, 3, 2, False), (8, 2, 1, False), (0, 3, 2, False), (2, 3, 2, True), (8, 4, 3, True)],
    ids=[
        "prefetch-2",
        "prefetch-8",
        "no-prefetch",
        "steals-and-expiry",
        "prefetch-8-steals-expiry",
    ],
)
def test_every_request_is_answered_exactly_once(prefetch, handlers, deaths, ticks):
    for seed in range(150):
        core, requests = simulate(
            seed, prefetch=prefetch, handlers=handlers, deaths=deaths, ticks=ticks
        )
        counts = answers_per_request(core, requests)
        lost = [n + 1 for n, c in enumerate(counts) if c == 0]
        twice = [n + 1 for n, c in enumerate(counts) if c > 1]
        assert not lost and not twice, f"seed {seed}: lost {lost}, answered twice {twice}"
        assert core.pending() == 0 and core.waiting == 0, f"seed {seed}"
