"""Reply framing and keep-alive decisions, with a fake send that records messages."""

import sys
import time

import pytest

from ringmaster_handler.exchange import BURST_MESSAGES, MIN_MESSAGE_GAP, AppError, Exchange
from ringmaster_handler.response import (
    MAX_CONN_IDS,
    chunk,
    reply_prefix,
    wants_keep_alive,
)


def app_list(body=b"hello", headers=()):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), *headers])
        return [body]

    return app


def app_stream(*parts, headers=()):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), *headers])
        return iter(parts)

    return app


def app_status(status):
    def app(environ, start_response):
        start_response(status, [])
        return [b""]

    return app


def run(app, version="HTTP/1.1", connection=None, method="GET"):
    sent = []
    ex = Exchange(sent.append, version, wants_keep_alive(version, connection), method == "HEAD")
    ex.run(app, {"REQUEST_METHOD": method})
    return sent


def split(msg):
    head, _, body = msg.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return lines[0], {k.lower(): v for k, v in (ln.split(": ", 1) for ln in lines[1:])}, body


# (app, version, Connection header, method) ->
#   (framing header, its value, body as received, whether a close message follows)
CASES = [
    ("list 1.1", app_list(), "HTTP/1.1", None, "GET", "content-length", "5", b"hello", False),
    ("list 1.1 close", app_list(), "HTTP/1.1", "close", "GET", "content-length", "5", b"hello",
     True),
    ("list 1.0", app_list(), "HTTP/1.0", None, "GET", "content-length", "5", b"hello", True),
    ("list 1.0 keep-alive", app_list(), "HTTP/1.0", "keep-alive", "GET", "content-length", "5",
     b"hello", False),
    ("stream 1.1", app_stream(b"ab", b"", b"cd"), "HTTP/1.1", None, "GET", "transfer-encoding",
     "chunked", chunk(b"ab") + chunk(b"cd") + b"0\r\n\r\n", False),
    ("stream 1.0", app_stream(b"ab", b"cd"), "HTTP/1.0", "keep-alive", "GET", "connection",
     "close", b"abcd", True),
    ("stream 1.1 with length", app_stream(b"ab", b"cd", headers=[("Content-Length", "4")]),
     "HTTP/1.1", None, "GET", "content-length", "4", b"abcd", False),
    ("head list", app_list(), "HTTP/1.1", None, "HEAD", "content-length", "5", b"", False),
    ("head stream", app_stream(b"ab"), "HTTP/1.1", None, "HEAD", "transfer-encoding", None, b"",
     False),
    ("204", app_status("204 No Content"), "HTTP/1.1", None, "GET", "content-length", None, b"",
     False),
    ("304", app_status("304 Not Modified"), "HTTP/1.1", None, "GET", "transfer-encoding", None,
     b"", False),
    ("empty stream", app_stream(), "HTTP/1.1", None, "GET", "content-length", "0", b"", False),
    ("app says close", app_list(headers=[("Connection", "close")]), "HTTP/1.1", None, "GET",
     "connection", "close", b"hello", True),
    ("app sets hop-by-hop", app_list(headers=[("Transfer-Encoding", "gzip")]), "HTTP/1.1", None,
     "GET", "transfer-encoding", None, b"hello", False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("app", "version", "connection", "method", "header", "value", "body", "closes"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_framing(app, version, connection, method, header, value, body, closes):
    sent = run(app, version, connection, method)
    closes_now = sent[-1] == b""
    assert closes_now == closes
    payload = b"".join(sent[:-1] if closes_now else sent)
    status, headers, got_body = split(payload)
    assert status.startswith("HTTP/1.1 ")
    assert headers.get(header) == value
    assert got_body == body
    assert "date" in headers


def test_single_message_for_a_list_body():
    assert len(run(app_list())) == 1


def test_exception_before_start_gives_500_and_keeps_the_connection():
    def app(environ, start_response):
        raise ValueError("nope")

    sent = []
    ex = Exchange(sent.append, "HTTP/1.1", True, False)
    with pytest.raises(ValueError):
        ex.run(app, {})
    ex.fail(sys.exc_info()[1])
    status, headers, body = split(sent[0])
    assert status == "HTTP/1.1 500 Internal Server Error"
    assert headers["content-length"] == str(len(body))
    assert len(sent) == 1


def test_exception_after_body_started_closes_the_connection():
    def app(environ, start_response):
        start_response("200 OK", [])
        yield b"partial"
        raise ValueError("late")

    sent = []
    ex = Exchange(sent.append, "HTTP/1.1", True, False)
    with pytest.raises(ValueError):
        ex.run(app, {})
    ex.fail(sys.exc_info()[1])
    assert sent[-1] == b""
    assert b"partial" in b"".join(sent)


def test_start_response_with_exc_info_replaces_headers_before_sending():
    def app(environ, start_response):
        start_response("200 OK", [("X-A", "1")])
        try:
            raise KeyError("x")
        except KeyError:
            start_response("503 Service Unavailable", [("X-B", "2")], sys.exc_info())
        return [b"sorry"]

    status, headers, _body = split(run(app)[0])
    assert status == "HTTP/1.1 503 Service Unavailable"
    assert "x-a" not in headers and headers["x-b"] == "2"


def test_start_response_with_exc_info_after_headers_reraises():
    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"x")
        try:
            raise KeyError("inner")
        except KeyError:
            start_response("500 Oops", [], sys.exc_info())
        return []

    with pytest.raises(KeyError):
        run(app)


def test_close_is_called_even_when_iteration_fails():
    closed = []

    class Body:
        def __iter__(self):
            yield b"a"
            raise RuntimeError("x")

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [])
        return Body()

    with pytest.raises(RuntimeError):
        run(app)
    assert closed == [True]


def test_write_callable_then_iterable():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Length", "6")])
        write(b"abc")
        return [b"def"]

    sent = run(app)
    assert split(b"".join(sent))[2] == b"abcdef"


def test_content_length_overrun_is_truncated_and_closes():
    sent = run(app_stream(b"abcdef", headers=[("Content-Length", "3")]))
    assert split(b"".join(sent[:-1]))[2] == b"abc"
    assert sent[-1] == b""


def test_content_length_shortfall_closes():
    sent = run(app_stream(b"ab", headers=[("Content-Length", "5")]))
    assert sent[-1] == b""


@pytest.mark.parametrize(
    "headers",
    [[("X-Bad", "a\r\nInjected: 1")], [("X-Bad", 1)], [("Bad Name:", "x")], ("X", "y")],
)
def test_bad_headers_are_app_errors(headers):
    def app(environ, start_response):
        start_response("200 OK", headers)
        return [b"x"]

    with pytest.raises(AppError):
        run(app)


def test_non_bytes_body_is_an_app_error():
    def app(environ, start_response):
        start_response("200 OK", [])
        return ["text"]

    with pytest.raises(AppError):
        run(app)


def test_fast_stream_is_paced_and_coalesced():
    # Mongrel2 drops a connection when a burst of messages piles up for it (see exchange.py).
    times, sizes = [], []

    def send(payload):
        times.append(time.monotonic())
        sizes.append(len(payload))

    ex = Exchange(send, "HTTP/1.1", True, False, stream_rate=50 * 1024 * 1024)
    ex.run(app_stream(*[b"x" * 100] * 20000), {})
    assert sum(sizes) > 20000 * 100
    assert len(sizes) < 2000  # coalesced
    pairs = list(zip(zip(times, sizes, strict=False), times[1:], strict=False))
    # The first BURST_MESSAGES go back to back; every later one waits its share of the rate.
    for (t1, size), t2 in pairs[BURST_MESSAGES - 1 :]:
        assert t2 - t1 >= max(MIN_MESSAGE_GAP, size / (50 * 1024 * 1024)) * 0.95


def test_a_body_of_a_few_pieces_goes_out_without_pacing_sleeps():
    # 3 MiB returned at once, in 1 MiB messages: at 1 MiB/s pacing would take 3 s.
    sent = []
    ex = Exchange(sent.append, "HTTP/1.1", True, False, stream_rate=1 << 20, max_payload=1 << 20)
    started = time.monotonic()
    ex.run(app_stream(b"x" * (3 << 20)), {})
    assert time.monotonic() - started < 0.5
    assert sum(map(len, sent)) > 3 << 20 and max(map(len, sent)) <= 1 << 20


def test_slow_producer_chunks_go_out_at_once():
    times = []

    def gen():
        for _ in range(3):
            yield b"tick"
            time.sleep(0.02)

    def app(environ, start_response):
        start_response("200 OK", [])
        return gen()

    ex = Exchange(lambda p: times.append(time.monotonic()), "HTTP/1.1", True, False)
    ex.run(app, {})
    assert len(times) == 4  # three chunks and the chunked terminator


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([b"1"], b"uuid 1:1, "),
        ([b"1", b"22", b"333"], b"uuid 8:1 22 333, "),
        ([str(i).encode() for i in range(MAX_CONN_IDS)], None),
    ],
)
def test_reply_prefix(ids, expected):
    prefix = reply_prefix(b"uuid", ids)
    if expected is not None:
        assert prefix == expected
    ids_part = b" ".join(ids)
    assert prefix == b"uuid %d:%s, " % (len(ids_part), ids_part)


@pytest.mark.parametrize("n", [0, MAX_CONN_IDS + 1])
def test_reply_prefix_limits(n):
    with pytest.raises(ValueError):
        reply_prefix(b"uuid", [b"1"] * n)


@pytest.mark.parametrize(
    ("version", "connection", "keep"),
    [
        ("HTTP/1.1", None, True),
        ("HTTP/1.1", "close", False),
        ("HTTP/1.1", "Keep-Alive, Close", False),
        ("HTTP/1.1", ["upgrade", "close"], False),
        ("HTTP/1.0", None, False),
        ("HTTP/1.0", "Keep-Alive", True),
        ("HTTP/0.9", None, False),
    ],
)
def test_wants_keep_alive(version, connection, keep):
    assert wants_keep_alive(version, connection) is keep


def run_like_the_loop(app):
    """What serve() does: run the app, on an exception answer with Exchange.fail."""
    sent = []
    ex = Exchange(sent.append, "HTTP/1.1", True, False)
    try:
        ex.run(app, {"REQUEST_METHOD": "GET"})
    except Exception as exc:
        ex.fail(exc)
    return sent


# (status, headers) the app gives -> whether the response goes out (else: 500, nothing of it)
HEADER_CASES = [
    ("ok", "200 OK", [("X-A", "b")], True),
    ("token punctuation", "200 OK", [("X-!#$%&'*+-.^_`|~", "v")], True),
    ("obs-text value", "200 OK", [("X-A", "caf\xe9")], True),
    ("tab in value", "200 OK", [("X-A", "a\tb")], True),
    ("same length twice", "200 OK", [("Content-Length", "1"), ("content-length", "1")], True),
    ("length with OWS", "200 OK", [("Content-Length", " 1 ")], True),
    ("CRLF in value", "200 OK", [("X-A", "a\r\nSet-Cookie: x=1")], False),
    ("LF in value", "200 OK", [("X-A", "a\nb")], False),
    ("CR in value", "200 OK", [("X-A", "a\rb")], False),
    ("NUL in value", "200 OK", [("X-A", "a\x00b")], False),
    ("space in name", "200 OK", [("Bad Name", "x")], False),
    ("colon in name", "200 OK", [("X:A", "x")], False),
    ("empty name", "200 OK", [("", "x")], False),
    ("LF in name", "200 OK", [("X\nA", "x")], False),
    ("non-ASCII name", "200 OK", [("X-\xe9", "x")], False),
    ("conflicting lengths", "200 OK", [("Content-Length", "1"), ("Content-Length", "2")], False),
    ("non-digit length", "200 OK", [("Content-Length", "1x")], False),
    ("negative length", "200 OK", [("Content-Length", "-1")], False),
    ("superscript length", "200 OK", [("Content-Length", "\xb9")], False),
    ("arabic-indic length", "200 OK", [("Content-Length", "\u0661")], False),
    ("list of lengths", "200 OK", [("Content-Length", "1, 1")], False),
    ("status with LF", "200 OK\nX: y", [], False),
    ("status with NUL", "200 O\x00K", [], False),
    ("superscript status", "\xb200 OK", [], False),
    ("not latin-1", "200 OK", [("X-A", "\u20ac")], False),
]


@pytest.mark.parametrize(
    ("status", "headers", "ok"), [c[1:] for c in HEADER_CASES], ids=[c[0] for c in HEADER_CASES]
)
def test_response_headers_are_validated(status, headers, ok):
    def app(environ, start_response):
        start_response(status, headers)
        return [b"x"]

    sent = run_like_the_loop(app)
    assert len(sent) == 1  # one well-formed message either way (keep-alive)
    first, _headers, body = split(sent[0])
    if ok:
        assert first == f"HTTP/1.1 {status}" and body == b"x"
        assert sent[0].count(b"\r\n\r\n") == 1
        assert sent[0].lower().count(b"content-length") == 1
    else:
        assert first == "HTTP/1.1 500 Internal Server Error"
        assert b"Set-Cookie" not in sent[0] and b"x=1" not in sent[0]
