"""Dispatcher mode, protocol v2: streamed request bodies, aborts, limits, frame sizes, timeouts.

A real handler process (``ringmaster-wsgi --dispatcher``) against a test ROUTER speaking the
dispatcher's side of the protocol (v2peer.py).
"""

import contextlib
import hashlib
import json
import os
import signal
import time

import pytest

from dispatch_harness import Worker
from harness import running, wait_for
from ringmaster_handler.credit import MAX_FRAME, UPLOAD_WINDOW
from v2peer import SENDER, V2Peer, m2_request

MB = 1 << 20


def start(tmp_path, *args: str, peers: int = 1):
    ps = [V2Peer() for _ in range(peers)]
    worker = Worker(tmp_path, "apps:router", ",".join(p.url for p in ps), *args)
    return ps, worker


def deleted_files(pid: int) -> list[str]:
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # (closed meanwhile)
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return [link for link in links if link.endswith("(deleted)")]


def test_hello_says_protocol_2(tmp_path):
    (peer,), worker = start(tmp_path)
    with running(peer, worker.start()):
        assert peer.wait_hello()["v"] == 2


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_streamed_body_reaches_the_app_with_bounded_credit(tmp_path, chunked):
    (peer,), worker = start(tmp_path)
    data = os.urandom(3 * MB + 7)
    headers = {"transfer-encoding": "chunked"} if chunked else {"content-length": str(len(data))}
    with running(peer, worker.start()):
        peer.wait_hello()
        rid = peer.stream(m2_request(5, "/digest", "POST", headers, data[:10000]))
        peer.upload(rid, data[10000 : 2 * MB])
        # More than fits in memory has arrived: it sits in an unlinked file.
        peer.wait(lambda: peer.credits.get(rid, 0) >= 2 * MB - UPLOAD_WINDOW, 10, "credits")
        assert deleted_files(worker.proc.pid), "the spooled body is not in an unlinked file"
        peer.upload(rid, data[2 * MB :])
        peer.end(rid)
        status, _, body, closed = peer.answer(rid).http(5)
    assert (status, closed) == (200, False)
    result = json.loads(body)
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    assert result["length"] == len(data) and result["cl"] == str(len(data))
    assert result["te"] is None  # the app reads a plain body of CONTENT_LENGTH bytes
    assert peer.credits[rid] == len(data)  # every byte taken was credited, none twice


def test_other_frames_keep_working_while_a_body_arrives(tmp_path):
    (a, b), worker = start(tmp_path, peers=2)
    with running(a, b, worker.start()):
        a.wait_hello()
        b.wait_hello()
        up = a.stream(m2_request(1, "/digest", "POST", {"content-length": "300000"}, b"x" * 1000))
        a.upload(up, b"y" * 100000)
        behind_a = a.request(m2_request(2, "/"))
        behind_b = b.request(m2_request(3, "/"))
        cancelled = a.request(m2_request(4, "/"))
        a.send(b"C" + cancelled)
        assert a.answer(cancelled).end == b"F"  # a cancel is answered at once
        b.send(b"W")
        b.wait(lambda: len(b.hellos) == 2, 5, "a second hello")  # so is a who-are-you
        a.pump(0.3)
        b.pump(0.3)
        # Requests are answered in the order they came: nothing before the upload is done.
        assert behind_a not in a.answers and behind_b not in b.answers
        a.upload(up, b"z" * 199000)
        a.end(up)
        status, _, body, _ = a.answer(up).http(1)
        assert status == 200 and json.loads(body)["length"] == 300000
        assert a.answer(behind_a).http(2)[:3:2] == (200, b"Hello, World!")
        assert b.answer(behind_b).http(3)[:3:2] == (200, b"Hello, World!")
        assert a.finished == [cancelled, up, behind_a]


def test_abort_before_the_app_started_drops_the_body(tmp_path):
    (peer,), worker = start(tmp_path)
    with running(peer, worker.start()):
        peer.wait_hello()
        up = peer.stream(m2_request(1, "/digest", "POST", {"content-length": "900000"}, b"a"))
        peer.upload(up, b"b" * 200000)
        peer.send(b"X" + up)
        answer = peer.answer(up)
        assert (answer.end, answer.payloads) == (b"F", [])
        credited = peer.credits.get(up, 0)
        peer.send(b"U" + up + b"c" * 1000)  # late bytes of the aborted body: dropped
        peer.send(b"E" + up)
        after = peer.request(m2_request(2, "/"))
        assert peer.answer(after).http(2)[0] == 200
        assert peer.credits.get(up, 0) == credited
        assert "internal error" not in worker.log_text()


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "chunked"])
def test_a_body_above_max_body_size_gets_413(tmp_path, announced):
    (peer,), worker = start(tmp_path, "--max-body-size", "100000")
    headers = {"content-length": "400000"} if announced else {"transfer-encoding": "chunked"}
    with running(peer, worker.start()):
        peer.wait_hello()
        up = peer.stream(m2_request(1, "/digest", "POST", headers, b"a" * 1000))
        if not announced:
            peer.upload(up, b"b" * 150000, piece=10000)
        status, headers, _, closed = peer.answer(up).http(1)
        assert (status, closed) == (413, True)
        # No credit beyond the limit: the dispatcher stops reading the client's body.
        assert peer.credits.get(up, 0) <= 100000
        after = peer.request(m2_request(2, "/"))
        assert peer.answer(after).http(2)[0] == 200


def test_a_64mb_body_returned_at_once_is_split_into_frames(tmp_path):
    (peer,), worker = start(tmp_path)
    with running(peer, worker.start()):
        peer.wait_hello()
        rid = peer.request(m2_request(1, "/big?mb=64"))
        answer = peer.answer(rid, timeout=60)
        status, headers, body, _ = answer.http(1)
    assert status == 200 and len(body) == 64 * MB == int(headers["content-length"])
    assert len(answer.frame_sizes) >= 64 and max(answer.frame_sizes) <= MAX_FRAME


def test_request_timeout_ends_a_stuck_process_by_sigalrm(tmp_path):
    (peer,), worker = start(tmp_path, "--request-timeout", "1")
    with running(peer, worker.start()):
        peer.wait_hello()
        started = time.monotonic()
        peer.request(m2_request(1, "/sleep?s=60"))
        wait_for(lambda: worker.proc.poll() is not None, 10, "the handler to die")
        took = time.monotonic() - started
    assert worker.proc.returncode == -signal.SIGALRM
    assert 2.5 < took < 1 + 2 + 2  # SECONDS + grace, plus scheduling slack


def test_request_timeout_spares_requests_that_progress(tmp_path):
    (peer,), worker = start(tmp_path, "--request-timeout", "1")
    with running(peer, worker.start()):
        peer.wait_hello()
        # 3.5 s in all, but a chunk every 0.7 s: each reply frame re-arms the alarm.
        rid = peer.request(m2_request(1, "/stream?n=5&size=10&delay=0.7"))
        assert peer.answer(rid, timeout=20).http(1)[0] == 200
        deadline = time.monotonic() + 4  # many fast requests, longer than SECONDS + grace
        while time.monotonic() < deadline:
            rid = peer.request(m2_request(2, "/"))
            assert peer.answer(rid).http(2)[0] == 200
            time.sleep(0.05)
        time.sleep(3.5)  # idle: no alarm is left armed between requests
        assert worker.proc.poll() is None


def test_a_frame_above_max_frame_from_the_dispatcher_is_refused(tmp_path):
    (peer,), worker = start(tmp_path)
    with running(peer, worker.start()):
        peer.wait_hello()
        huge = peer.request(m2_request(1, "/echo", "POST", {"content-length": str(MAX_FRAME)},
                                       b"x" * MAX_FRAME))  # fmt: skip
        # libzmq drops the connection instead of taking the frame; the handler reconnects
        # and says hello again, and the oversized request never reaches the app.
        peer.wait(lambda: len(peer.hellos) >= 2, 10, "a new hello after the refusal")
        peer.pump(0.3)
        assert huge not in peer.answers
        after = peer.request(m2_request(2, "/"))
        assert peer.answer(after).http(2)[0] == 200


def test_unparsable_requests_and_streams_are_answered_400(tmp_path):
    (peer,), worker = start(tmp_path)
    with running(peer, worker.start()):
        peer.wait_hello()
        bad = SENDER + b' 7 / 10:{"METHOD":,0:,'  # headers that are not JSON
        rid = peer.request(bad)
        assert peer.answer(rid).http(7)[::3] == (400, True)
        up = peer.rid()
        peer.send(b"S" + up + SENDER + b' 8 / 10:{"METHOD":,0:,')
        peer.send(b"U" + up + b"late bytes")
        assert peer.answer(up).http(8)[::3] == (400, True)
        assert peer.credits.get(up, 0) == 0
