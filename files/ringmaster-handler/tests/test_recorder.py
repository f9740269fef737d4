"""The access log and metrics' own process: what the loop ships, and what the recorder makes of it.

The loop's part (observe.Observer) and the recorder's (recorder.Recorder) are joined here
through marshal, as they are through the pipe; RecorderLink is tried with real child
processes: one that never reads (the loop must not wait) and one that dies (started again).
"""

import datetime
import json
import marshal
import os
import subprocess
import sys
import time

import pytest

from dispatch_harness import _env
from ringmaster_handler import recorder_link
from ringmaster_handler.credit import HEAD_LEN
from ringmaster_handler.observe import HEAD_MAX, AccessLog, Metrics, Observer, message_head
from ringmaster_handler.recorder import (
    Recorder,
    declared_body_length,
    frames,
    reply_request_id,
)
from ringmaster_handler.recorder_link import RecorderLink


def m2(conn: int, headers: dict, body: bytes = b"") -> bytes:
    h = json.dumps(headers, separators=(",", ":")).encode()  # (as Mongrel2 writes it)
    return b"S %d /p %d:%s,%d:%s," % (conn, len(h), h, len(body), body)


def prefix_of(conn: int) -> bytes:
    return b"S %d:%d, " % (len(str(conn)), conn)


def frame(prefix: bytes, data: bytes) -> bytes:
    return b"D" + b"\0" * (HEAD_LEN - 1) + prefix + data


HEADERS = {"METHOD": "GET", "URI": "/p?x=1", "host": "h", "REMOTE_ADDR": "10.0.0.1"}


@pytest.mark.parametrize(
    ("msg", "length"),
    [
        (m2(1, HEADERS), 0),
        (m2(1, HEADERS, b"hello"), 5),
        (message_head(m2(1, HEADERS, b"x" * (HEAD_MAX * 2))), HEAD_MAX * 2),
        (b"S 1 /p 3:{}],0:,", 0),  # (headers netstring not closed by ",")
        (b"S 1 /p 99:{}", 0),  # (cut inside the headers)
        (b"S 1 /p 2:{},12a:,", 0),
        (None, 0),
    ],
)
def test_declared_body_length(msg, length):
    assert declared_body_length(msg) == length


def test_message_head_keeps_small_messages_and_cuts_bodies():
    small = m2(1, HEADERS, b"x" * 100)
    assert message_head(small) is small
    big = m2(1, HEADERS, b"x" * (HEAD_MAX * 4))
    head = message_head(big)
    assert len(head) < 200 and big.startswith(head)


@pytest.mark.parametrize(
    ("head", "rid"),
    [
        (b"HTTP/1.1 200 OK\r\nX-Request-Id: abc-1\r\nContent-Length: 2", "abc-1"),
        (b"HTTP/1.1 200 OK\r\nx-request-id:abc-2", "abc-2"),
        (b"HTTP/1.1 200 OK\r\nX-Request-Id: a b\r\n", None),  # (not a safe id)
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2", None),
        (None, None),
    ],
)
def test_reply_request_id(head, rid):
    assert reply_request_id(head) == rid


class Pipe:
    """Stands in for RecorderLink: keeps what would go down the pipe."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, payload: bytes) -> None:
        self.sent.append(payload)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run_requests(tmp_path, access: bool = True):
    clock, pipe = Clock(), Pipe()
    gauges = {"queue_depth": ("q", 7)}
    obs = Observer(clock, access, pipe, lambda: (gauges, {"requests": 5}))
    # 1: answered by a handler with its request id, in two reply frames.
    obs.begin(prefix_of(1), m2(1, {**HEADERS, "x-request-id": "c-1"}))
    clock.now += 0.002
    obs.reply(prefix_of(1), frame(prefix_of(1), b"HTTP/1.1 200 OK\r\nX-Request-Id: c-1\r\n\r\nab"))
    obs.reply(prefix_of(1), frame(prefix_of(1), b"cde"))
    obs.end(prefix_of(1))
    # 2: a POST with a body, retried once, then answered 504 by the dispatcher.
    obs.begin(prefix_of(2), m2(2, {**HEADERS, "METHOD": "POST"}, b"0123456789"))
    obs.retried(prefix_of(2))
    clock.now += 1.0
    rid = obs.answered(prefix_of(2), 504)
    # 3: a spooled upload's first notice, finished silently: not a request of its own.
    obs.begin(prefix_of(3), m2(3, HEADERS))
    obs.end(prefix_of(3))
    # 4: the client went away (499), with 1,000 streamed body bytes.
    obs.begin(prefix_of(4), m2(4, HEADERS))
    obs.upload_bytes += 1000
    obs.end(prefix_of(4), 499)
    obs.ship()
    log_path = tmp_path / "access.log"
    rec = Recorder(AccessLog(str(log_path), "json", "shop") if access else None, Metrics(), "shop")
    for payload in pipe.sent:
        rec.apply(marshal.loads(payload))
    rec.close()
    return rid, rec, log_path


def test_what_the_loop_ships_is_what_the_recorder_logs(tmp_path):
    rid, rec, log_path = run_requests(tmp_path)
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [line["status"] for line in lines] == [200, 504, 499]
    ok, timeout, gone = lines
    assert ok["request_id"] == "c-1" and ok["bytes"] == 5 and ok["duration_ms"] == 2.0
    assert ok["method"] == "GET" and ok["path"] == "/p?x=1" and ok["client"] == "10.0.0.1"
    assert ok["app"] == "shop" and ok["time"].endswith("Z")
    # (the loop's clock turned into wall time)
    when = datetime.datetime.fromisoformat(ok["time"].replace("Z", "+00:00")).timestamp()
    assert abs(when - time.time()) < 5
    assert timeout["request_id"] == rid and len(rid) == 32 and timeout["retries"] == 1
    assert timeout["method"] == "POST" and timeout["duration_ms"] == 1000.0
    assert len(gone["request_id"]) == 32
    m = rec.metrics
    assert m.by_class == [0, 0, 1, 0, 1, 1] and m.by_code[504] == 1 and m.by_code[499] == 1
    assert m.upload_bytes == 10 + 1000
    assert rec.gauges == {"queue_depth": ("q", 7)}
    assert 'ringmaster_dispatcher_queue_depth{app="shop"} 7' in rec.page()


def test_metrics_only_ships_no_reply_heads(tmp_path):
    rid, rec, log_path = run_requests(tmp_path, access=False)
    assert rid is None and not log_path.exists()
    assert rec.metrics.by_class == [0, 0, 1, 0, 1, 1]


def test_idle_loop_ships_gauges_once_a_second():
    clock, pipe = Clock(), Pipe()
    obs = Observer(clock, False, pipe, lambda: ({}, {}))
    for _ in range(30):  # 1.5 s of housekeeping every 50 ms
        obs.ship()
        clock.now += 0.05
    assert len(pipe.sent) == 2


def write_frames(fd: int, payloads: list[bytes], cut: int = 0) -> None:
    data = b"".join(len(p).to_bytes(4, "big") + p for p in payloads)
    os.write(fd, data[: len(data) - cut])
    os.close(fd)


@pytest.mark.parametrize(("cut", "read"), [(0, 3), (1, 2), (6, 2)])
def test_frames_stop_at_the_end_or_a_frame_cut_short(cut, read):
    r, w = os.pipe()
    write_frames(w, [b"one", b"", b"three"], cut)
    assert list(frames(r)) == [b"one", b"", b"three"][:read]
    os.close(r)


def test_a_recorder_that_does_not_read_never_blocks_the_loop(monkeypatch):
    monkeypatch.setattr(recorder_link, "MAX_PENDING", 4 << 20)
    link = RecorderLink([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        began = time.monotonic()
        for _ in range(100):
            link.send(b"x" * (256 << 10))
        assert time.monotonic() - began < 2
        assert 0 < link.dropped < 100 and len(link.pending) <= 4 << 20
    finally:
        link.proc.kill()
        link.close(0.5)


def test_a_recorder_that_died_is_started_again(monkeypatch):
    monkeypatch.setattr(recorder_link, "RESPAWN_EVERY", 0.2)
    link = RecorderLink([sys.executable, "-c", "pass"])
    try:
        link.proc.wait(10)
        first = link.proc.pid
        link.send(b"a" * 100)  # EPIPE: gone, and this batch with it
        assert link.fd < 0 and link.dropped == 1
        time.sleep(0.3)
        link.send(b"b")
        assert link.started == 2 and link.proc.pid != first and link.fd >= 0
    finally:
        link.close(1)


def test_the_recorder_writes_everything_shipped_before_stdin_ends(tmp_path):
    """A real recorder process: the last batch, shipped as the dispatcher stops, is written
    even when the recorder got SIGTERM with the rest of its process group."""
    log_path = tmp_path / "a.log"
    clock, pipe = Clock(), Pipe()
    obs = Observer(clock, True, pipe, lambda: ({}, {}))
    for conn in range(1, 201):
        obs.begin(prefix_of(conn), m2(conn, HEADERS))
        obs.reply(prefix_of(conn), frame(prefix_of(conn), b"HTTP/1.1 200 OK\r\n\r\nok"))
        obs.end(prefix_of(conn))
    obs.ship()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ringmaster_handler.recorder", "--access-log", str(log_path)],
        stdin=subprocess.PIPE,
        env=_env(),
    )
    time.sleep(0.5)
    proc.terminate()
    proc.stdin.write(b"".join(len(p).to_bytes(4, "big") + p for p in pipe.sent))
    proc.stdin.close()
    assert proc.wait(10) == 0
    assert len(log_path.read_text().splitlines()) == 200


def record(msg: bytes, reply_head: bytes | None = None) -> list:
    return [msg, 10.0, 200, 5, reply_head, 1, None, 10.0123456]


@pytest.mark.parametrize(
    ("headers", "plain"),
    [
        (HEADERS, True),
        ({**HEADERS, "user-agent": "curl/8", "x-request-id": "r-1"}, True),
        ({"METHOD": "GET", "URI": "/"}, True),  # (no host, client or agent: null)
        ({**HEADERS, "user-agent": 'say "hi"'}, False),  # (an escape)
        ({**HEADERS, "user-agent": "caf\xe9"}, False),  # (\u00e9)
        ({**HEADERS, "user-agent": "a\tb"}, False),
        ({**HEADERS, "x-forwarded-for": ["1.1.1.1", "2.2.2.2"]}, False),  # (repeated)
        ({"URI": "/"}, False),  # (no method: read the slow way)
    ],
)
def test_plain_lines_are_the_json_lines(headers, plain):
    from ringmaster_handler.credit import headers_span
    from ringmaster_handler.observe import format_json
    from ringmaster_handler.recorder import access_fields, plain_fields, plain_json_line

    msg = m2(7, headers)
    rec = record(msg, b"HTTP/1.1 200 OK\r\nX-Request-Id: fixed-id")
    fields = plain_fields(msg, headers_span(msg))
    assert (fields is not None) == plain
    slow = access_fields(list(rec), 0.5)
    slow["app"] = 'a"pp'
    if plain:
        line = plain_json_line(access_fields(list(rec), 0.5, fields), json.dumps('a"pp'))
        assert line == format_json(slow)
        assert json.loads(line) == {k: slow[k] for k in json.loads(line)}


def test_any_app_name_is_written_as_json_dumps_writes_it(tmp_path):
    app = 'shop, "eu"\u00e9'
    pipe = Pipe()
    obs = Observer(Clock(), True, pipe, lambda: ({}, {}))
    obs.begin(prefix_of(1), m2(1, HEADERS))
    obs.reply(prefix_of(1), frame(prefix_of(1), b"HTTP/1.1 200 OK\r\n\r\nok"))
    obs.end(prefix_of(1))
    obs.ship()
    log_path = tmp_path / "a.log"
    rec = Recorder(AccessLog(str(log_path), "json", app), None, app)
    rec.apply(marshal.loads(pipe.sent[0]))
    rec.close()
    line = json.loads(log_path.read_text())
    assert line["app"] == app and line["path"] == "/p?x=1"
