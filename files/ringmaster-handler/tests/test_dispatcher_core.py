"""The dispatcher's scheduling, driven directly: no network, a fake clock."""

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from ringmaster_handler.credit import HEAD_LEN, hello_frame, reply_prefix_of
from ringmaster_handler.dispatcher import Dispatcher
from ringmaster_handler.scheduler import RETRY_LIMIT, Scheduler


def request(method: str = "GET", conn: int = 1, path: str = "/") -> bytes:
    headers = f'{{"PATH":"{path}","host":"x","METHOD":"{method}","VERSION":"HTTP/1.1"}}'
    return f"sender {conn} {path} {len(headers)}:{headers},0:,".encode()


DISCONNECT = b'sender 7 @* 17:{"METHOD":"JSON"},21:{"type":"disconnect"},'


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Core(Scheduler):
    """The scheduling core with its outputs recorded instead of sent."""

    def __init__(self, **kw):
        self.clock_ = Clock()
        super().__init__(clock=self.clock_, **kw)
        self.to_m2: list[bytes] = []
        self.sent: list[tuple[bytes, bytes]] = []
        self.unreachable: set[bytes] = set()

    def _to_m2(self, payload):
        self.to_m2.append(bytes(payload))

    def _to_worker(self, ident, frame):
        if ident in self.unreachable:
            return False
        self.sent.append((ident, frame))
        return True

    # helpers
    def join(self, ident: bytes, fd: int) -> None:
        self.on_worker_frame(ident, hello_frame({"pid": fd}), fd)

    def jobs_of(self, ident: bytes) -> list[tuple[bytes, bytes]]:
        """(rid, request) of every request sent to ``ident``."""
        return [(f[1:HEAD_LEN], f[HEAD_LEN:]) for i, f in self.sent if i == ident and f[:1] == b"Q"]

    def request_of(self, rid: bytes) -> bytes:
        return next(f[HEAD_LEN:] for _, f in self.sent if f[1:HEAD_LEN] == rid and f[:1] in b"QS")

    def addressed(self, rid: bytes, reply: bytes) -> bytes:
        """``reply`` with the Mongrel2 address of request ``rid`` in front, as handlers send."""
        return reply_prefix_of(self.request_of(rid)) + reply

    def done(self, ident: bytes, rid: bytes, reply: bytes = b"reply") -> None:
        self.on_worker_frame(ident, b"D" + rid + self.addressed(rid, reply))

    def more(self, ident: bytes, rid: bytes, reply: bytes) -> None:
        self.on_worker_frame(ident, b"M" + rid + self.addressed(rid, reply))

    def bodies(self) -> list[bytes]:
        """What went to Mongrel2, without the addresses."""
        return [p.split(b", ", 1)[1] if b", " in p else p for p in self.to_m2]


@pytest.fixture
def core():
    return Core(prefetch=2, steal_after=0.01)


def test_free_workers_get_requests_least_recently_freed_first(core):
    core.join(b"a", 1)
    core.join(b"b", 2)
    core.on_request(request(conn=1))
    core.on_request(request(conn=2))
    assert [len(core.jobs_of(w)) for w in (b"a", b"b")] == [1, 1]
    (rid_a, _), (rid_b, _) = core.jobs_of(b"a")[0], core.jobs_of(b"b")[0]
    core.done(b"b", rid_b)
    core.done(b"a", rid_a)
    core.on_request(request(conn=3))
    assert len(core.jobs_of(b"b")) == 2  # b was freed first
    assert core.to_m2 == [b"sender 1:2, reply", b"sender 1:1, reply"]


def test_disconnect_notices_never_reach_handlers(core):
    core.join(b"a", 1)
    core.on_request(DISCONNECT)
    assert core.jobs_of(b"a") == []


def test_requests_wait_here_until_a_handler_joins(core):
    for conn in range(3):
        core.on_request(request("POST", conn))
    assert len(core.queue) == 3
    core.join(b"a", 1)
    assert len(core.jobs_of(b"a")) == 1  # a POST only goes to a free handler
    rid, _ = core.jobs_of(b"a")[0]
    core.done(b"a", rid)
    assert len(core.jobs_of(b"a")) == 2


def test_gets_wait_inside_busy_handlers_posts_do_not(core):
    core.join(b"a", 1)
    core.on_request(request("GET", 1))
    core.on_request(request("GET", 2))
    core.on_request(request("HEAD", 3))
    core.on_request(request("GET", 4))  # beyond the prefetch of 2
    core.on_request(request("POST", 5))
    assert len(core.jobs_of(b"a")) == 3
    assert len(core.queue) == 2
    assert core.waiting == 2


def test_prefetch_goes_to_the_handler_whose_request_started_last(core):
    core.join(b"slow", 1)
    core.join(b"fast", 2)
    core.on_request(request(conn=1))
    core.clock_.now += 1
    core.on_request(request(conn=2))
    core.on_request(request(conn=3))
    assert len(core.jobs_of(b"fast")) == 2
    assert len(core.jobs_of(b"slow")) == 1


def test_a_request_stuck_behind_a_slow_one_moves_to_a_free_handler(core):
    core.join(b"slow", 1)
    core.on_request(request(conn=1))  # the slow one
    core.on_request(request(conn=2))  # waits inside "slow"
    stuck_rid, stuck = core.jobs_of(b"slow")[1]
    core.join(b"free", 2)
    assert core.jobs_of(b"free") == []  # it has not waited long enough yet
    assert core.steal_due() == pytest.approx(100.01)
    core.clock_.now += 0.02
    core.steal()
    assert (b"slow", b"C" + stuck_rid) in core.sent
    [(new_rid, moved)] = core.jobs_of(b"free")
    assert moved == stuck and new_rid != stuck_rid
    # Whatever the slow handler still sends for it is dropped; the new one's reply goes out.
    core.done(b"slow", stuck_rid, b"duplicate")
    core.done(b"free", new_rid, b"answer")
    assert core.bodies() == [b"answer"]
    assert core.stats["steals"] == 1 and core.waiting == 0


def test_streamed_replies_pass_through_in_order(core):
    core.join(b"a", 1)
    core.on_request(request())
    rid, _ = core.jobs_of(b"a")[0]
    core.more(b"a", rid, b"part1")
    core.more(b"a", rid, b"part2")
    core.on_worker_frame(b"a", b"F" + rid)
    assert core.to_m2 == [b"sender 1:1, part1", b"sender 1:1, part2"]
    assert core.free and core.workers[b"a"].jobs == {}


def test_a_dead_handlers_gets_are_retried_and_others_answered(core):
    core.join(b"a", 1)
    core.on_request(request("POST", 1))
    core.join(b"b", 2)
    core.on_request(request("GET", 2))
    core.on_request(request("GET", 3))  # waits inside a (a tie goes to the first)
    core.on_request(request("GET", 4))
    [(rid_post, _)] = core.jobs_of(b"a")[:1]
    core.more(b"a", rid_post, b"partial")  # not for a POST, but let's see
    core.join(b"c", 3)
    core.on_disconnect(1)
    core.on_disconnect(2)
    # The POST had started replying: only closing its connection is safe.
    assert b"sender 1:1, " in core.to_m2
    # Every GET goes to the survivor.
    assert [req for _, req in core.jobs_of(b"c")] == [request("GET", n) for n in (3, 4)]
    assert [item[0] for item in core.queue] == [request("GET", 2)]
    for rid, _ in core.jobs_of(b"c"):
        core.done(b"c", rid)
    assert core.jobs_of(b"c")[-1][1] == request("GET", 2)
    assert core.stats["retries"] == 3


def test_a_dead_handlers_post_gets_502(core):
    core.join(b"a", 1)
    core.on_request(request("POST", 9))
    core.on_disconnect(1)
    assert core.to_m2[0].startswith(b"sender 1:9, HTTP/1.1 502 Bad Gateway")
    assert core.to_m2[1] == b"sender 1:9, "


def test_an_unreachable_handler_is_forgotten_and_the_request_kept(core):
    core.join(b"a", 1)
    core.join(b"b", 2)
    core.unreachable.add(b"a")
    core.on_request(request("POST"))
    assert b"a" not in core.workers
    assert len(core.jobs_of(b"b")) == 1


def test_bye_is_acknowledged_and_no_more_work_is_given(core):
    core.join(b"a", 1)
    core.on_request(request())
    rid, _ = core.jobs_of(b"a")[0]
    core.on_worker_frame(b"a", b"B")
    assert (b"a", b"A") in core.sent
    core.on_request(request(conn=2))
    core.done(b"a", rid)
    assert len(core.jobs_of(b"a")) == 1
    assert len(core.queue) == 1
    core.on_disconnect(1)
    assert core.workers == {}


def test_queue_limit_answers_503():
    core = Core(queue_limit=2)
    for conn in range(3):
        core.on_request(request(conn=conn))
    assert len(core.queue) == 2
    assert core.to_m2[0].startswith(b"sender 1:2, HTTP/1.1 503 Service Unavailable")


def test_nothing_expires_without_a_queue_timeout(core):
    core.on_request(request("POST"))
    core.clock_.now += 3600
    core.expire()
    assert core.to_m2 == [] and len(core.queue) == 1
    assert core.expire_due() is None


def is_502(payload: bytes) -> bool:
    return b" HTTP/1.1 502 " in payload


def is_503(payload: bytes) -> bool:
    return b" HTTP/1.1 503 Service Unavailable" in payload


@pytest.mark.parametrize(
    ("workers", "requests", "waited", "expired", "left"),
    [
        # No handler at all: everything that waited long enough gets 503, the rest waits on.
        ([], [("POST", 0.0), ("GET", 0.0), ("GET", 1.5)], 2.0, 2, 1),
        ([], [("GET", 0.0)], 1.99, 0, 1),
        # One handler busy with a slow POST: the queued POST and the GETs waiting inside
        # the handler expire; the POST it is running does not.
        (["a"], [("POST", 0.0), ("GET", 0.0), ("GET", 0.0), ("POST", 0.0)], 2.0, 3, 0),
        # A free handler takes everything: nothing expires.
        (["a", "b", "c"], [("GET", 0.0), ("POST", 0.0), ("GET", 0.0)], 5.0, 0, 0),
    ],
)
def test_requests_no_handler_started_in_time_get_503(workers, requests, waited, expired, left):
    core = Core(prefetch=2, queue_timeout=2.0)
    for fd, name in enumerate(workers, 1):
        core.join(name.encode(), fd)
    start = core.clock_.now
    for conn, (method, at) in enumerate(requests):
        core.clock_.now = start + at
        core.on_request(request(method, conn))
    core.clock_.now = start + waited
    core.expire()
    assert sum(map(is_503, core.to_m2)) == expired
    assert core.stats["expired"] == expired
    assert len(core.queue) == left
    assert core.waiting == 0 or expired == 0
    # A handler told to skip a request it held: it is cancelled, and a late reply is dropped.
    cancelled = [f for _, f in core.sent if f[:1] == b"C"]
    for frame in cancelled:
        replies = len(core.to_m2)
        core.done(b"a", frame[1:HEAD_LEN])
        assert len(core.to_m2) == replies


def test_expiry_is_due_at_the_oldest_waiting_request():
    core = Core(prefetch=2, queue_timeout=2.0)
    assert core.expire_due() is None
    core.join(b"a", 1)
    core.on_request(request("POST", 1))  # running: never expires
    core.clock_.now += 0.5
    core.on_request(request("GET", 2))  # waits inside a
    core.clock_.now += 0.5
    core.on_request(request("POST", 3))  # waits here
    assert core.expire_due() == pytest.approx(102.5)


def test_a_retried_request_keeps_its_first_arrival_time():
    core = Core(prefetch=0, queue_timeout=2.0)
    core.join(b"a", 1)
    core.on_request(request("GET", 1))
    core.clock_.now += 1.5
    core.on_disconnect(1)  # retried: back in the queue, no handler left
    core.clock_.now += 0.6
    core.expire()
    assert is_503(core.to_m2[0])


def test_strangers_are_asked_to_say_hello_now_and_then(core):
    core.on_worker_frame(b"x", b"D" + b"\0" * 8 + b"stale reply")
    core.on_worker_frame(b"x", b"D" + b"\0" * 8 + b"stale reply")
    assert core.sent == [(b"x", b"W")]
    assert core.to_m2 == []
    core.clock_.now += 2
    core.on_worker_frame(b"x", b"garbage")
    assert core.sent == [(b"x", b"W"), (b"x", b"W")]


def test_a_new_connection_on_a_known_socket_replaces_the_old_one(core):
    core.join(b"old", 5)
    core.on_request(request("POST"))
    core.join(b"new", 5)  # fd 5 reused: the old connection must be gone
    assert b"old" not in core.workers
    assert core.to_m2[0].startswith(b"sender 1:1, HTTP/1.1 502")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"a", b"b", b"c", b"zz"]),
            st.one_of(
                st.binary(max_size=20),
                st.builds(
                    lambda k, rid, rest: k + rid + rest,
                    st.sampled_from([b"D", b"M", b"F", b"H", b"B", b"Q", b"?"]),
                    st.binary(min_size=0, max_size=9),
                    st.binary(max_size=5),
                ),
                st.just(None),  # a request from Mongrel2
                st.just(b"disconnect"),
                st.just(b"tick"),
            ),
        ),
        max_size=60,
    )
)
def test_garbage_never_breaks_the_books(events):
    core = Core(prefetch=1, steal_after=0.01, queue_timeout=0.05)
    core.join(b"a", 1)
    core.join(b"b", 2)
    for n, (ident, frame) in enumerate(events):
        if frame is None:
            core.on_request(request("GET" if n % 2 else "POST", n))
        elif frame == b"disconnect":
            core.on_disconnect({b"a": 1, b"b": 2}.get(ident, 9))
        elif frame == b"tick":
            core.clock_.now += 0.02
            core.steal()
            core.expire()
        else:
            core.on_worker_frame(ident, frame, 3)
        # Invariants: the waiting count is exact; no worker holds more than its depth
        # (stolen leftovers aside); free workers hold nothing.
        waiting = sum(j.waiting for w in core.workers.values() for j in w.jobs.values())
        assert core.waiting == waiting
        for w in core.workers.values():
            assert sum(not j.stolen for j in w.jobs.values()) <= core.depth
        assert all(not w.jobs for w in core.free if not w.gone and not w.stopping)


def test_replies_wait_in_order_while_mongrel2_is_not_taking_them():
    ctx = zmq.Context()
    d = Dispatcher("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", [])
    d.m2_out, d.router = ctx.socket(zmq.XPUB), ctx.socket(zmq.ROUTER)
    d._poller = zmq.Poller()
    d._poller.register(d.router, zmq.POLLIN)
    sent, full = [], [True]

    def psend(payload, flags, copy):
        if full[0]:
            raise zmq.Again()
        sent.append(payload)

    d._psend = psend
    try:
        d._to_m2(b"one")
        full[0] = False
        d._to_m2(b"two")  # must queue behind "one"
        assert list(d.backlog) == [b"one", b"two"] and sent == []
        d._update_interest()
        assert dict(d._poller.sockets)[d.m2_out] == zmq.POLLOUT
        d._m2_out_ready(zmq.POLLOUT)
        assert sent == [b"one", b"two"] and not d.backlog
        assert d.m2_out not in dict(d._poller.sockets)
    finally:
        d.m2_out.close(0)
        d.router.close(0)
        ctx.term()


def test_a_request_whose_handlers_keep_vanishing_gets_502_after_the_retry_limit():
    # A request that kills whatever runs it goes round no more than RETRY_LIMIT times.
    core = Core(prefetch=2)
    core.on_request(request("GET", 1, "/deadly"))
    for fd in range(1, RETRY_LIMIT + 2):
        core.join(b"h%d" % fd, fd)
        core.on_request(request("GET", 10 + fd))  # waits behind it: an innocent bystander
        assert core.jobs_of(b"h%d" % fd)[0][1] == request("GET", 1, "/deadly")
        assert core.to_m2 == []
        core.on_disconnect(fd)
    assert is_502(core.to_m2[0]) and core.to_m2[0].startswith(b"sender 1:1, ")
    assert core.stats["failed"] == 1
    # The bystanders were only ever prefetched behind it: retried as often as it takes.
    core.join(b"last", 99)
    assert [r for _, r in core.jobs_of(b"last")][:1] == [request("GET", 11)]
    assert core.lost_with == {}


def test_the_retry_count_is_per_request_not_per_connection():
    core = Core(prefetch=0)
    for fd in range(1, RETRY_LIMIT + 1):  # one loss short of the limit
        core.join(b"h%d" % fd, fd)
        if fd == 1:
            core.on_request(request("GET", 1))
        core.on_disconnect(fd)
    core.join(b"ok", 50)
    [(rid, _)] = core.jobs_of(b"ok")
    core.done(b"ok", rid)
    assert core.lost_with == {}
    # The connection's next request starts from zero.
    core.clock_.now += 1
    core.on_request(request("GET", 1))
    core.on_disconnect(50)
    core.join(b"ok2", 51)
    assert len(core.jobs_of(b"ok2")) == 1 and core.to_m2 == [b"sender 1:1, reply"]
