"""The front trust boundary, dispatcher side: bookkeeping driven directly, with a fake clock.

Reply addresses, per-connection order, request deadlines, silent finishes, streamed uploads
and per-key caps. Real sockets and real Mongrel2 are in the other test_trust_* files.
"""

import pytest

from ringmaster_handler import credit
from ringmaster_handler.credit import CONSUMED_LEN, HEAD_LEN, UPLOAD_WINDOW, hello_frame
from ringmaster_handler.scheduler import CANCEL_DELAY, PIPELINE_LIMIT
from test_dispatcher_core import Core, request


def kinds(core: Core, ident: bytes) -> list[bytes]:
    return [f[:1] for i, f in core.sent if i == ident]


def frames(core: Core, ident: bytes, kind: bytes) -> list[bytes]:
    return [f for i, f in core.sent if i == ident and f[:1] == kind]


def rids(core: Core, ident: bytes, kind: bytes = b"Q") -> list[bytes]:
    return [f[1:HEAD_LEN] for f in frames(core, ident, kind)]


def statuses(core: Core) -> list[bytes]:
    return [p.split(b", ", 1)[1][:12] for p in core.to_m2 if b", HTTP/1.1 " in p]


# -- 1. a handler can only answer the requests it holds ---------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        b"sender 2:42, ",  # another client's connection
        b"sender 4:7 42, ",  # its own and another
        b"sender 5:42 7, ",
        b"sender 3:X 7, ",  # an extended (ctl) message for its own connection
        b"other 1:7, ",  # another sender
        b"sender 1:7,",  # no space: not the same address
        b"sender 2:07, ",
        b"",
        b"garbage",
    ],
)
@pytest.mark.parametrize("kind", [b"D", b"M"])
def test_a_reply_to_any_other_address_is_dropped_and_the_request_failed(address, kind):
    core = Core()
    core.join(b"a", 1)
    core.on_request(request("POST", conn=7))
    [rid] = rids(core, b"a")
    core.on_worker_frame(b"a", kind + rid + address + b"HTTP/1.1 200 OK\r\n\r\nforged")
    assert not any(b"forged" in p for p in core.to_m2)
    assert core.stats["forged"] == 1
    assert core.to_m2[0].startswith(b"sender 1:7, HTTP/1.1 502 Bad Gateway")
    assert core.to_m2[1] == b"sender 1:7, "  # closed
    # Whatever it sends later for that request is dropped too; the worker is still counted.
    core.on_worker_frame(b"a", b"D" + rid + b"sender 1:7, late")
    assert not any(p.endswith(b"late") for p in core.to_m2)
    assert core.workers[b"a"].jobs == {} and core.free


def test_a_forged_reply_after_part_of_the_reply_went_out_closes_the_connection():
    core = Core()
    core.join(b"a", 1)
    core.on_request(request("GET", conn=7))
    [rid] = rids(core, b"a")
    core.more(b"a", rid, b"HTTP/1.1 200 OK\r\n\r\npart")
    core.on_worker_frame(b"a", b"M" + rid + b"sender 2:42, stolen")
    assert core.to_m2 == [b"sender 1:7, HTTP/1.1 200 OK\r\n\r\npart", b"sender 1:7, "]


def test_the_right_address_goes_out_untouched():
    core = Core()
    core.join(b"a", 1)
    core.on_request(request("GET", conn=12345))
    [rid] = rids(core, b"a")
    core.on_worker_frame(b"a", b"D" + rid + b"sender 5:12345, HTTP/1.1 200 OK\r\n\r\nok")
    assert core.to_m2 == [b"sender 5:12345, HTTP/1.1 200 OK\r\n\r\nok"]
    assert core.stats["forged"] == 0


# -- 5. F without any reply ----------------------------------------------------------------


def test_finished_without_a_reply_is_answered_502():
    core = Core()
    core.join(b"a", 1)
    core.on_request(request("POST", conn=3))
    [rid] = rids(core, b"a")
    core.on_worker_frame(b"a", b"F" + rid)
    assert core.to_m2[0].startswith(b"sender 1:3, HTTP/1.1 502")


def test_finished_after_a_cancel_or_a_streamed_reply_is_legitimate():
    core = Core(prefetch=2, steal_after=0.01)
    core.join(b"slow", 1)
    core.on_request(request("GET", conn=1))
    core.on_request(request("GET", conn=2))  # waits inside "slow"
    core.join(b"free", 2)
    core.clock_.now += 0.02
    core.steal()
    first, stolen = rids(core, b"slow")
    core.on_worker_frame(b"slow", b"F" + stolen)  # skipped after the C: fine
    core.more(b"slow", first, b"HTTP/1.1 200 OK\r\n\r\nall of it")
    core.on_worker_frame(b"slow", b"F" + first)  # nothing more to send: fine
    assert not any(b" 502 " in p for p in core.to_m2)


def test_finished_for_a_spooled_upload_start_notice_is_legitimate(fixture_bytes):
    core = Core()
    core.join(b"a", 1)
    core.on_request(fixture_bytes("upload_start"))
    [rid] = rids(core, b"a")
    core.on_worker_frame(b"a", b"F" + rid)
    assert core.to_m2 == []


# -- 8. one request per client connection in flight -------------------------------------------


def test_pipelined_requests_of_one_connection_go_one_at_a_time_in_order():
    core = Core(prefetch=4)
    core.join(b"a", 1)
    core.join(b"b", 2)
    burst = [request(m, conn=9, path=f"/{n}") for n, m in enumerate(["GET", "POST", "GET"])]
    for msg in burst:
        core.on_request(msg)
    core.on_request(request("GET", conn=10))  # another client is not held up
    assert len(core.jobs_of(b"a")) + len(core.jobs_of(b"b")) == 2
    seen = []
    for n in range(3):
        [(ident, rid)] = [
            (w.ident, r)
            for w in core.workers.values()
            for r, j in w.jobs.items()
            if b" 1:9, " in j.prefix
        ]
        seen.append(core.request_of(rid))
        core.done(ident, rid, b"answer %d" % n)
    assert seen == burst
    assert [b for b in core.bodies() if b.startswith(b"answer ")] == [
        b"answer 0",
        b"answer 1",
        b"answer 2",
    ]
    assert core.conns == {b"sender 2:10, ": None}


def test_a_disconnect_drops_the_requests_waiting_behind_the_current_one():
    core = Core()
    core.join(b"a", 1)
    for n in range(3):
        core.on_request(request("POST", conn=7, path=f"/{n}"))
    core.on_request(b'sender 7 @* 17:{"METHOD":"JSON"},21:{"type":"disconnect"},')
    [rid] = rids(core, b"a")
    core.done(b"a", rid)
    assert len(rids(core, b"a")) == 1  # nothing more for that connection
    assert core.conns == {}


def test_a_connection_cannot_pipeline_without_bound():
    core = Core()
    core.join(b"a", 1)
    for n in range(PIPELINE_LIMIT + 2):
        core.on_request(request("GET", conn=7, path=f"/{n}"))
    assert core.to_m2 == [b"sender 1:7, "]  # closed, not answered out of turn
    assert core.conns == {}
    [rid] = rids(core, b"a")
    core.done(b"a", rid)  # the one in flight still ends quietly
    assert len(rids(core, b"a")) == 1


def test_answering_a_request_ourselves_drops_the_ones_behind_it():
    core = Core(queue_limit=1)
    core.on_request(request("POST", conn=1))  # waits: no worker
    core.on_request(request("POST", conn=1))  # behind it
    core.on_request(request("POST", conn=2))  # queue full: 503, closed
    assert statuses(core) == [b"HTTP/1.1 503"]
    core.queue_timeout = 1.0
    core.clock_.now += 2
    core.expire()
    assert core.conns == {} and not core.queue


# -- 4. per-request deadline ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "expect"),
    [
        # (seconds after start, what happens) ... -> answer, or None
        ([(2.9, "tick")], None),
        ([(3.0, "tick")], b"504"),
        ([(2.0, "more"), (4.9, "tick")], None),  # a reply message is progress
        ([(2.0, "more"), (5.0, "tick")], b"close"),  # something went out: close
        ([(1.0, "done"), (10.0, "tick")], None),
    ],
)
def test_a_started_request_without_progress_gets_504(events, expect):
    core = Core(prefetch=2, request_timeout=3.0)
    core.join(b"a", 1)
    core.on_request(request("GET", conn=1))
    [rid] = rids(core, b"a")
    start = core.clock_.now
    for at, what in events:
        core.clock_.now = start + at
        if what == "more":
            core.more(b"a", rid, b"HTTP/1.1 200 OK\r\n\r\npart")
        elif what == "done":
            core.done(b"a", rid)
        core.check_timeouts()
    answered = [p for p in core.to_m2 if not p.endswith(b"part") and not p.endswith(b"reply")]
    if expect is None:
        assert answered == [] and core.stats["timeouts"] == 0
    elif expect == b"504":
        assert answered[0].startswith(b"sender 1:1, HTTP/1.1 504 Gateway Timeout")
        assert answered[1] == b"sender 1:1, "
    else:
        assert answered == [b"sender 1:1, "]


def test_a_timed_out_handler_gets_no_more_work_and_its_waiting_requests_move():
    core = Core(prefetch=2, request_timeout=3.0)
    core.join(b"stuck", 1)
    core.on_request(request("GET", conn=1))  # runs forever
    core.on_request(request("GET", conn=2))  # wait inside "stuck"
    core.on_request(request("HEAD", conn=3))
    core.on_request(request("POST", conn=4))  # waits here
    assert core.timeout_due() == pytest.approx(103.0)
    core.clock_.now += 3
    core.check_timeouts()
    hung, *waiting = rids(core, b"stuck")
    assert frames(core, b"stuck", b"C") == [b"C" + r for r in waiting]
    assert core.waiting == 0 and len(core.queue) == 3
    assert core.workers[b"stuck"].stopping
    core.join(b"fresh", 2)  # takes the moved requests, in their order
    moved = [core.request_of(r) for r in rids(core, b"fresh")]
    assert moved[0] == request("GET", conn=2)
    # A late answer from the stuck handler is dropped, and it still gets nothing new.
    core.done(b"stuck", hung, b"late")
    for r in waiting:
        core.on_worker_frame(b"stuck", b"F" + r)
    assert not any(p.endswith(b"late") for p in core.to_m2)
    core.on_request(request("GET", conn=9))
    assert len(rids(core, b"stuck")) == 3
    # Nothing was lost: the three moved ones and the new one are with "fresh" or waiting.
    assert core.pending() == 4


def test_waiting_in_a_prefetch_queue_does_not_count():
    core = Core(prefetch=2, request_timeout=3.0)
    core.join(b"a", 1)
    core.on_request(request("GET", conn=1))
    core.on_request(request("GET", conn=2))  # waits inside a
    first, _second = rids(core, b"a")
    core.clock_.now += 2.5
    core.done(b"a", first)  # the second starts now
    core.clock_.now += 2.5
    core.check_timeouts()
    assert core.stats["timeouts"] == 0


# -- 3. streamed uploads ------------------------------------------------------------------------


def stream_first(conn: int = 5, length: int | None = 1_000_000, first: bytes = b"abc") -> bytes:
    cl = f',"content-length":"{length}"' if length is not None else ',"transfer-encoding":"chunked"'
    headers = (
        f'{{"PATH":"/up","UPLOAD_STREAM":"0"{cl},"host":"x","METHOD":"POST","VERSION":"HTTP/1.1"}}'
    ).encode()
    return b"sender %d /up %d:%s,%d:%s," % (conn, len(headers), headers, len(first), first)


def stream_more(conn: int, offset: int, body: bytes, done: bool = False) -> bytes:
    h = b'{"UPLOAD_STREAM":"%d"' % offset + (b',"UPLOAD_STREAM_DONE":"1"' if done else b"") + b"}"
    return b"sender %d /up %d:%s,%d:%s," % (conn, len(h), h, len(body), body)


def join_v(core: Core, ident: bytes, fd: int, v: int) -> None:
    frame = credit.HELLO + b'{"pid": %d, "v": %d}' % (fd, v)
    core.on_worker_frame(ident, frame, fd)


def ctl(prefix_conn: int, credits: int = 0, cancel: bool = False) -> bytes:
    return credit.ctl_message(
        b"sender %d:%d, " % (len(str(prefix_conn)), prefix_conn), credits=credits, cancel=cancel
    )


def test_a_streamed_body_flows_with_credits():
    core = Core()
    join_v(core, b"old", 1, 1)
    join_v(core, b"new", 2, 2)
    first = stream_first(conn=5)
    core.on_request(first)
    assert frames(core, b"old", b"S") == []  # protocol 1 handlers never get one
    [s] = frames(core, b"new", b"S")
    rid = s[1:HEAD_LEN]
    assert s[HEAD_LEN:] == first
    assert core.to_m2 == [ctl(5, credits=UPLOAD_WINDOW)]
    core.on_request(request("GET", conn=6))  # others still go to "old"
    assert len(core.jobs_of(b"old")) == 1
    core.on_request(stream_more(5, 3, b"x" * 20000))
    core.on_request(stream_more(5, 20003, b"y" * 5, done=True))
    assert frames(core, b"new", b"U") == [b"U" + rid + b"x" * 20000, b"U" + rid + b"y" * 5]
    assert frames(core, b"new", b"E") == [b"E" + rid]
    # Credits follow what the handler consumed, never beyond what it was given.
    core.to_m2.clear()
    core.uploads[b"sender 1:5, "] = core.workers[b"new"].jobs[rid].upload  # (pretend: still coming)
    core.on_worker_frame(b"new", b"K" + rid + CONSUMED_LEN.pack(1000))
    core.on_worker_frame(b"new", b"K" + rid + CONSUMED_LEN.pack(2**32 - 1))
    assert core.to_m2 == [ctl(5, credits=1000), ctl(5, credits=UPLOAD_WINDOW + 3)]
    del core.uploads[b"sender 1:5, "]
    core.done(b"new", rid, b"HTTP/1.1 201 Created\r\n\r\n")
    assert core.to_m2[-1] == b"sender 1:5, HTTP/1.1 201 Created\r\n\r\n"
    assert core.conns == {b"sender 1:6, ": None}


def test_large_continuation_messages_are_split_into_frames():
    core = Core()
    join_v(core, b"new", 2, 2)
    core.on_request(stream_first(conn=5))
    big = bytes(range(256)) * 10_000  # 2.5 MB in one Mongrel2 message
    core.on_request(stream_more(5, 3, big, done=True))
    us = frames(core, b"new", b"U")
    assert all(len(f) <= credit.MAX_FRAME for f in us) and len(us) == 3
    assert b"".join(f[HEAD_LEN:] for f in us) == big


def test_the_request_timeout_counts_from_the_end_of_the_body():
    core = Core(request_timeout=3.0)
    join_v(core, b"new", 2, 2)
    core.on_request(stream_first(conn=5))
    core.clock_.now += 10
    core.check_timeouts()
    assert core.stats["timeouts"] == 0
    core.on_request(stream_more(5, 3, b"z", done=True))
    core.clock_.now += 3
    core.check_timeouts()
    assert core.stats["timeouts"] == 1


@pytest.mark.parametrize(
    ("length", "chunks", "expect_413_after"),
    [
        (1_000_001, [], 0),  # Content-Length says too much: refused before any credit
        (None, [400_000, 400_000, 300_000], 3),  # chunked: refused when the count passes
        (None, [400_000, 600_000], None),  # exactly the limit is fine
        (1_000_000, [500_000, 499_997], None),
    ],
)
def test_bodies_above_max_body_size_are_refused(length, chunks, expect_413_after):
    core = Core(max_body_size=1_000_000)
    join_v(core, b"new", 2, 2)
    core.on_request(stream_first(conn=5, length=length))
    sent_s = rids(core, b"new", b"S")
    for n, size in enumerate(chunks, 1):
        if b"sender 1:5, " not in core.uploads:
            break
        done = n == len(chunks)
        core.on_request(stream_more(5, 0, b"q" * (size - (3 if n == 1 else 0)), done))
        if expect_413_after == n:
            break
    refused = [p for p in core.to_m2 if b" 413 " in p]
    if expect_413_after is None:
        assert refused == [] and frames(core, b"new", b"E")
        return
    assert len(refused) == 1 and b"Connection: close" in refused[0]
    assert core.to_m2[-1] == refused[0]  # no close message: Mongrel2 would ignore the cancel
    if expect_413_after == 0:
        assert sent_s == [] and core.to_m2 == refused  # no credits were ever granted
    else:
        assert frames(core, b"new", b"X") == [b"X" + sent_s[0]]
    core.clock_.now += CANCEL_DELAY
    core.send_cancels()
    assert core.to_m2[-1] == ctl(5, credits=1, cancel=True)
    assert core.uploads == {} and core.conns == {}
    # The handler's F for it is legitimate; a late continuation from Mongrel2 is dropped.
    for rid in sent_s:
        core.on_worker_frame(b"new", b"F" + rid)
    core.on_request(stream_more(5, 0, b"late"))
    assert [p for p in core.to_m2 if b" 502 " in p] == []
    assert len(rids(core, b"new", b"S")) == len(sent_s)


def test_a_client_gone_mid_upload_aborts_it_in_the_handler():
    core = Core()
    join_v(core, b"new", 2, 2)
    core.on_request(stream_first(conn=5))
    [rid] = rids(core, b"new", b"S")
    core.on_request(b'sender 5 @* 17:{"METHOD":"JSON"},21:{"type":"disconnect"},')
    assert frames(core, b"new", b"X") == [b"X" + rid]
    core.on_worker_frame(b"new", b"F" + rid)
    assert [p for p in core.to_m2 if b"HTTP/1.1" in p] == []
    assert core.uploads == {} and core.free


def test_a_worker_dying_mid_upload_means_502_and_a_cancel():
    core = Core()
    join_v(core, b"new", 2, 2)
    core.on_request(stream_first(conn=5))
    core.on_request(stream_more(5, 3, b"x" * 100))
    core.on_disconnect(2)
    assert core.to_m2[-1].startswith(b"sender 1:5, HTTP/1.1 502")
    core.clock_.now += CANCEL_DELAY
    core.send_cancels()
    assert core.to_m2[-1] == ctl(5, credits=1, cancel=True)


def test_a_streamed_upload_waits_for_a_protocol_2_handler_without_blocking_others():
    core = Core()
    join_v(core, b"old", 1, 1)
    core.on_request(request("POST", conn=1))  # old is busy now
    core.on_request(stream_first(conn=5))
    core.on_request(request("POST", conn=6))
    [rid] = rids(core, b"old")
    core.done(b"old", rid)
    assert core.request_of(rids(core, b"old")[1]) == request("POST", conn=6)
    join_v(core, b"new", 2, 2)
    assert len(rids(core, b"new", b"S")) == 1


def test_a_streamed_get_is_never_prefetched():
    core = Core(prefetch=4)
    join_v(core, b"new", 2, 2)
    core.on_request(request("GET", conn=1))
    core.on_request(stream_first(conn=5).replace(b'"METHOD":"POST"', b'"METHOD":"GET"'))
    assert len(core.workers[b"new"].jobs) == 1 and len(core.queue) == 1


# -- 7. handlers per key ------------------------------------------------------------------------


def test_a_key_gets_at_most_its_cap_of_handlers():
    core = Core(max_handlers_per_key=3)
    for n in range(5):
        core.on_worker_frame(b"h%d" % n, hello_frame({"pid": n}), n + 1, "workerkey")
    core.on_worker_frame(b"other", hello_frame({"pid": 9}), 20, "otherkey")
    assert sorted(core.workers) == [b"h0", b"h1", b"h2", b"other"]
    assert core.stats["refused"] == 2
    core.on_disconnect(1)  # one leaves: room for one more
    core.on_worker_frame(b"h4", hello_frame({"pid": 4}), 5, "workerkey")
    assert b"h4" in core.workers and core.per_key == {"workerkey": 3, "otherkey": 1}


# -- 9. errors ------------------------------------------------------------------------------------


def test_an_internal_error_still_answers_the_client():
    core = Core()
    core.join(b"a", 1)
    core.on_request(request("POST", conn=4))
    [rid] = rids(core, b"a")
    core.fail_worker_frame(b"a", b"D" + rid + b"whatever broke")
    assert core.to_m2[0].startswith(b"sender 1:4, HTTP/1.1 502")
    core.done(b"a", rid, b"late")
    assert not any(p.endswith(b"late") for p in core.to_m2)
    core.fail_request(request("GET", conn=8), 500)
    assert core.to_m2[-2].startswith(b"sender 1:8, HTTP/1.1 500")


def test_client_text_in_handler_names_cannot_forge_log_lines():
    info = {"host": "h\nFAKE 2026 CRITICAL owned", "pid": 1, "app": "a\r\nb"}
    name = credit.describe_peer(info)
    assert "\n" not in name and "\r" not in name and "\\n" in name


# -- frames never exceed MAX_FRAME ------------------------------------------------------------


def test_a_request_too_big_for_a_frame_gets_413():
    core = Core()
    core.join(b"a", 1)
    body = b"b" * credit.MAX_FRAME
    headers = b'{"PATH":"/","METHOD":"POST"}'
    core.on_request(b"sender 3 / %d:%s,%d:%s," % (len(headers), headers, len(body), body))
    assert core.to_m2[0].startswith(b"sender 1:3, HTTP/1.1 413 ")
    assert core.jobs_of(b"a") == []


def test_a_streamed_first_message_too_big_for_a_frame_is_split():
    core = Core()
    join_v(core, b"new", 2, 2)
    first = bytes(range(256)) * 5000  # 1.28 MB with the headers (limits.content_length 2 MB)
    core.on_request(stream_first(conn=5, first=first))
    sent = [f for _, f in core.sent]
    assert all(len(f) <= credit.MAX_FRAME for f in sent)
    [s] = frames(core, b"new", b"S")
    msg = s[HEAD_LEN:]
    assert credit.upload_stream_kind(msg) == credit.STREAM_FIRST
    body = bytes(credit.body_of(msg)) + b"".join(f[HEAD_LEN:] for f in frames(core, b"new", b"U"))
    assert body == first
