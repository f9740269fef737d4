"""Access log, request ids, Prometheus metrics and journal priorities (observe.py,
requestid.py, logs.py): pure functions table-driven, the rest through real Mongrel2, a real
dispatcher and real handler processes."""

import datetime
import json
import logging
import os
import shutil
import socket
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import free_port, wait_for
from loadclient import Load
from ringmaster_handler import dispatcher_cli
from ringmaster_handler.logs import SafeFormatter, syslog_priority
from ringmaster_handler.observe import (
    FIELDS,
    Metrics,
    clf_escape,
    format_common,
    format_json,
    iso_millis,
    render,
    request_fields,
)
from ringmaster_handler.requestid import new_request_id, request_id_for, safe_request_id
from test_dispatcher import Stack

needs_mongrel2 = pytest.mark.skipif(
    not (shutil.which("mongrel2") and shutil.which("m2sh")), reason="needs mongrel2 and m2sh"
)
HEX32 = set("0123456789abcdef")


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("abc-123", True),
        ("A.b_c:d-9", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("a b", False),
        ("a;b", False),
        ("id\r\nX-Evil: 1", False),
        ("caf\xe9", False),
        ("../../etc", False),  # ('/' is not in the set)
        (["one"], True),
        (["one", "two"], False),
        (None, False),
        (42, False),
    ],
)
def test_request_ids(value, kept):
    assert (safe_request_id(value) is not None) == kept
    rid = request_id_for(value)
    if kept:
        assert rid == (value[0] if type(value) is list else value)
    else:
        assert len(rid) == 32 and set(rid) <= HEX32


def test_new_request_ids_are_distinct():
    assert len({new_request_id() for _ in range(10_000)}) == 10_000


@pytest.mark.parametrize(
    ("value", "logged"),
    [
        (None, "-"),
        ("", "-"),
        ("plain/path?q=1", "plain/path?q=1"),
        ('say "hi"', 'say \\"hi\\"'),
        ("back\\slash", "back\\\\slash"),
        ("line\nbreak", "line\\x0abreak"),
        ("cr\rnul\x00del\x7f", "cr\\x0dnul\\x00del\\x7f"),
        ("c1\x85end", "c1\\x85end"),
        ("caf\xe9", "caf\xe9"),
    ],
)
def test_common_log_fields_cannot_break_lines(value, logged):
    assert clf_escape(value) == logged


def test_common_log_line():
    when = datetime.datetime(2026, 12, 1, 15, 4, 5, tzinfo=datetime.UTC)
    rec = {
        "time_dt": when, "client": "10.0.0.1", "method": "GET", "path": "/a b\n",
        "status": 200, "bytes": 13, "user_agent": 'ua"x', "host": "h", "request_id": "r1",
        "duration_ms": 1.5, "retries": 0,
    }  # fmt: skip
    assert format_common(rec) == (
        '10.0.0.1 - - [01/Dec/2026:15:04:05 +0000] "GET /a b\\x0a" 200 13 "ua\\"x" h r1 1.5 0\n'
    )


@pytest.mark.parametrize(
    "rec",
    [
        {
            "time": "2026-12-01T15:04:05.123Z",
            "app": "app",
            "path": "/",
            "status": 200,
            "bytes": 13,
            "duration_ms": 1.5,
            "retries": 0,
        },
        {"path": 'q"uote\\back\nline\x01ctl\x7fdel', "user_agent": "caf\xe9 \u2028 \U0001f600"},
        {"status": 0, "bytes": 10**12, "duration_ms": 0.001, "host": None},
        {},
    ],
    ids=["plain", "escapes", "numbers", "empty"],
)
def test_json_lines_are_what_json_dumps_writes(rec):
    # The fast path must not change a byte: tools parse these lines.
    assert format_json(rec) == json.dumps({k: rec.get(k) for k in FIELDS}, ensure_ascii=True) + "\n"


@pytest.mark.parametrize(
    ("wall", "text"),
    [(0.0, "1970-01-01T00:00:00.000Z"), (1796137445.1239, "2026-12-01T15:04:05.123Z"),
     (1796137445.9999, "2026-12-01T15:04:05.999Z"), (1796137446.0, "2026-12-01T15:04:06.000Z")],
)  # fmt: skip
def test_log_times_are_iso_utc_with_milliseconds(wall, text):
    assert iso_millis(wall) == text


def test_common_log_line_from_an_epoch():
    rec = {"epoch": 1796137445.5, "status": 200}
    assert "[01/Dec/2026:15:04:05 +0000]" in format_common(rec)


def m2(path: bytes, headers: bytes) -> bytes:
    """A Mongrel2 request: JSON headers in a netstring, or a tnetstring dict ("...}")."""
    if headers.endswith(b"}") and not headers.startswith(b"{"):
        return b"S 3 %s %d:%s0:," % (path, len(headers) - 1, headers)
    return b"S 3 %s %d:%s,0:," % (path, len(headers), headers)


@pytest.mark.parametrize(
    ("msg", "expect"),
    [
        (
            m2(b"/p", b'{"PATH":"/p","METHOD":"GET","URI":"/p?q=1","host":"h:1",'
                      b'"REMOTE_ADDR":"1.2.3.4","user-agent":"curl","x-request-id":"abc",'
                      b'"x-forwarded-for":"6.6.6.6"}'),
            {"method": "GET", "path": "/p?q=1", "host": "h:1", "client": "1.2.3.4",
             "user_agent": "curl", "x_request_id": "abc"},
        ),
        (
            m2(b"/tns/x", b"6:METHOD,4:POST,3:URI,6:/tns/x,11:REMOTE_ADDR,9:127.0.0.1,"
                          b"4:host,1:h,}"),
            {"method": "POST", "path": "/tns/x", "host": "h", "client": "127.0.0.1",
             "user_agent": None, "x_request_id": None},
        ),
        (
            m2(b"/bad", b"{nope"),
            {"method": None, "path": "/bad", "host": None, "client": None,
             "user_agent": None, "x_request_id": None},
        ),
    ],
)  # fmt: skip
def test_request_fields(msg, expect):
    assert request_fields(msg) == expect


@pytest.mark.parametrize(
    ("level", "priority"),
    [(logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3),
     (logging.CRITICAL, 2), (25, 6), (35, 4)],
)  # fmt: skip
def test_syslog_priorities(level, priority):
    assert syslog_priority(level) == priority
    record = logging.LogRecord("x", level, __file__, 1, "one\ntwo", None, None)
    assert SafeFormatter("%(message)s", syslog_prefix=True).format(record) == (
        f"<{priority}>one\\ntwo"  # (the message's newline is escaped: one line)
    )
    assert SafeFormatter("%(message)s").format(record) == "one\\ntwo"


def test_metrics_text_parses():
    m = Metrics()
    for status, seconds in [(200, 0.001), (200, 0.2), (404, 0.03), (503, 12.0), (0, 0.5)]:
        m.observe(status, seconds)
    m.upload_bytes = 1234
    text = render(m, {"queue_depth": ("q", 3)}, {"forged": 2, "requests": 5}, 'a"p\\p')
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    by_class = {
        s.labels["code_class"]: s.value for s in fams["ringmaster_dispatcher_requests"].samples
    }
    assert by_class == {"closed": 1, "1xx": 0, "2xx": 2, "3xx": 0, "4xx": 1, "5xx": 1}
    assert all(s.labels["app"] == 'a"p\\p' for s in fams["ringmaster_dispatcher_requests"].samples)
    hist = {
        (s.name, s.labels.get("le")): s.value
        for s in fams["ringmaster_dispatcher_request_duration_seconds"].samples
    }
    assert hist["ringmaster_dispatcher_request_duration_seconds_bucket", "0.005"] == 1
    assert hist["ringmaster_dispatcher_request_duration_seconds_bucket", "0.25"] == 3
    assert hist["ringmaster_dispatcher_request_duration_seconds_bucket", "+Inf"] == 5
    assert hist["ringmaster_dispatcher_request_duration_seconds_count", None] == 5
    assert fams["ringmaster_dispatcher_queue_depth"].samples[0].value == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--metrics-port", "70000"], "--metrics-port must be 0"),
        (["--access-log-format", "xml"], "invalid choice"),
    ],
)
def test_dispatcher_observability_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) if "format" in argv[0] else _noop():
        rc = dispatcher_cli.main([*argv, "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "tcp://*:3"])
        assert rc == 2
    assert message in capsys.readouterr().err


class _noop:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def raw_request(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def header(response: bytes, name: bytes) -> bytes | None:
    for line in response.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def log_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@needs_mongrel2
def test_access_log_request_ids_and_timeout_warning(tmp_path):
    access = tmp_path / "access.log"
    with Stack(
        tmp_path,
        workers=2,
        app="apps:router",
        dispatcher_args=(
            "--name", "shop-app", "--syslog-prefix", "--access-log", str(access),
            "--request-timeout", "1",
        ),
        worker_args=("--request-timeout", "1"),
    ) as stack:  # fmt: skip
        port = stack.m2.port
        # A safe client id is kept: the app sees it, the response and the log carry it.
        r = raw_request(port, b"GET /environ?x=1 HTTP/1.0\r\nX-Request-Id: abc-123\r\n\r\n")
        assert header(r, b"X-Request-Id") == b"abc-123"
        env = json.loads(r.split(b"\r\n\r\n", 1)[1])
        assert env["HTTP_X_REQUEST_ID"] == env["ringmaster.request_id"] == "abc-123"
        # An unsafe one is replaced, the same way everywhere.
        r = raw_request(port, b"GET /environ HTTP/1.0\r\nX-Request-Id: a;b c\r\n\r\n")
        replaced = header(r, b"X-Request-Id").decode()
        assert len(replaced) == 32 and set(replaced) <= HEX32
        assert json.loads(r.split(b"\r\n\r\n", 1)[1])["HTTP_X_REQUEST_ID"] == replaced
        # Control characters in the path and the user agent cannot make a line of their own.
        r = raw_request(
            port,
            b'POST /echo?evil=%0a%22 HTTP/1.0\r\nUser-Agent: ev\x01il"\\\r\n'
            b"Content-Length: 5\r\nX-Request-Id: inj\r\n\r\nhello",
        )
        assert r.startswith(b"HTTP/1.1 200") and r.endswith(b"hello")
        # A request the dispatcher answers itself (504): logged with its status and id.
        r = raw_request(port, b"GET /sleep?s=4 HTTP/1.0\r\nX-Request-Id: slow-1\r\n\r\n")
        assert r.startswith(b"HTTP/1.1 504") and header(r, b"X-Request-Id") == b"slow-1"
        wait_for(lambda: access.exists() and "slow-1" in access.read_text(), 5, "the log")
        # logrotate (create mode): the file is moved away; a new one appears by itself.
        rotated = tmp_path / "access.log.1"
        os.rename(access, rotated)
        time.sleep(1.2)
        r = raw_request(port, b"GET / HTTP/1.0\r\nX-Request-Id: after-rotate\r\n\r\n")
        assert r.startswith(b"HTTP/1.1 200")
        wait_for(lambda: access.exists() and "after-rotate" in access.read_text(), 5, "reopen")
        err = stack.dispatcher.log_text()
    lines = {rec["request_id"]: rec for rec in log_lines(rotated) + log_lines(access)}
    ok = lines["abc-123"]
    assert ok["app"] == "shop-app" and ok["method"] == "GET" and ok["path"] == "/environ?x=1"
    assert ok["status"] == 200 and ok["bytes"] > 100 and ok["client"] == "127.0.0.1"
    assert ok["duration_ms"] > 0 and ok["retries"] == 0 and ok["time"].endswith("Z")
    assert replaced in lines
    evil = lines["inj"]
    assert evil["method"] == "POST" and evil["status"] == 200 and evil["bytes"] == 5
    assert evil["user_agent"] == 'ev\x01il"\\' and evil["path"] == "/echo?evil=%0a%22"
    assert lines["slow-1"]["status"] == 504 and lines["slow-1"]["path"] == "/sleep?s=4"
    assert lines["after-rotate"]["status"] == 200
    assert "after-rotate" not in rotated.read_text()
    for raw_line in (rotated.read_text() + access.read_text()).splitlines():
        assert raw_line.startswith("{") and raw_line.endswith("}")
    # The timeout reaches the journal at warning priority, with the app's name.
    warning = [ln for ln in err.splitlines() if "made no progress" in ln]
    assert len(warning) == 1 and warning[0].startswith("<4>"), warning
    assert "WARNING shop-app " in warning[0] and "b'/sleep'" in warning[0]
    assert all(ln.startswith("<") for ln in err.splitlines())


@needs_mongrel2
def test_common_log_format_to_stdout(tmp_path):
    out = tmp_path / "disp.out"
    with Stack(
        tmp_path,
        workers=1,
        app="apps:router",
        dispatcher_args=("--access-log", "-", "--access-log-format", "common"),
    ) as stack:
        # (the harness sends the dispatcher's stdout nowhere: capture it for this test)
        stack.dispatcher.stop()
        stack.dispatcher.start_stdout = out
        proc_out = open(out, "wb")  # noqa: SIM115
        import subprocess

        from dispatch_harness import _env

        stack.dispatcher.proc = subprocess.Popen(
            stack.dispatcher.argv, cwd=tmp_path, env=_env(), stdout=proc_out,
            stderr=open(tmp_path / "disp.err", "wb"),  # noqa: SIM115
        )  # fmt: skip
        stack.dispatcher.stderr_path = tmp_path / "disp.err"
        stack.dispatcher.stderr = proc_out
        wait_for(lambda: stack.dispatcher.connected() >= 1, 15, "the handler to rejoin")
        r = raw_request(stack.m2.port, b'GET /a%22b HTTP/1.0\r\nUser-Agent: t"ua\r\n\r\n')
        assert r.startswith(b"HTTP/1.1 404") or r.startswith(b"HTTP/1.1 200")
        wait_for(lambda: b"/a%22b" in out.read_bytes(), 5, "the log line")
    line = out.read_text().splitlines()[0]
    assert line.startswith("127.0.0.1 - - [") and '"GET /a%22b"' in line
    assert '"t\\"ua"' in line


@needs_mongrel2
def test_metrics_scraped_during_a_real_run(tmp_path):
    mport = free_port()
    with Stack(
        tmp_path,
        workers=2,
        app="apps:router",
        dispatcher_args=("--name", "web", "--metrics-port", str(mport)),
    ) as stack:
        url = f"http://127.0.0.1:{mport}/metrics"
        scrapes: list[str] = []
        stop = threading.Event()

        def scraper() -> None:
            while not stop.is_set():
                with urllib.request.urlopen(url, timeout=5) as resp:
                    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                    scrapes.append(resp.read().decode())
                time.sleep(0.1)

        t = threading.Thread(target=scraper, daemon=True)
        t.start()
        load = Load(stack.m2.port, clients=6, duration=2.0, timeout=5).start()
        posts = Load(stack.m2.port, clients=2, duration=2.0, timeout=5, method="POST", path="/echo")
        posts.start()
        result, posted = load.join(), posts.join()
        assert stack.get("/status?code=503")[0] == 503  # (the app's own 503 counts too)
        for _ in range(3):
            assert stack.get("/status?code=404")[0] == 404
        time.sleep(0.3)
        stop.set()
        t.join(5)
        with urllib.request.urlopen(url, timeout=5) as resp:
            final = resp.read().decode()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{mport}/other", timeout=5)
    assert len(scrapes) >= 10
    fams = {f.name: f for f in text_string_to_metric_families(final)}
    classes = {
        s.labels["code_class"]: s.value for s in fams["ringmaster_dispatcher_requests"].samples
    }
    total = result.sent + posted.sent + 4
    assert classes["2xx"] == result.ok + posted.ok and classes["4xx"] >= 3, classes
    assert sum(classes.values()) == total
    codes = {s.labels["code"]: s.value for s in fams["ringmaster_dispatcher_responses"].samples}
    assert codes["503"] == 1 and codes["502"] == 0 and codes["504"] == 0
    count = [
        s.value
        for s in fams["ringmaster_dispatcher_request_duration_seconds"].samples
        if s.name.endswith("_count")
    ]
    assert count == [total]
    assert fams["ringmaster_dispatcher_handlers_connected"].samples[0].value == 2
    assert fams["ringmaster_dispatcher_queue_depth"].samples[0].value == 0
    events = {s.labels["event"]: s.value for s in fams["ringmaster_dispatcher_events"].samples}
    assert events["forged"] == 0 and events["requests"] == total
    # Every scrape during the run parsed, and counters only grew.
    seen = []
    for text in scrapes:
        for fam in text_string_to_metric_families(text):
            if fam.name == "ringmaster_dispatcher_request_duration_seconds":
                seen += [s.value for s in fam.samples if s.name.endswith("_count")]
    assert seen == sorted(seen) and seen[-1] > 100
