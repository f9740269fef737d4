"""What the dispatcher tells operators about requests: the access log and Prometheus metrics.

Both live in the dispatcher, not in the handler: it is the one place that sees every request
of an app on a front and its *final* outcome, including the answers it makes itself (413,
502 when a handler dies or forges a reply, 503 when nobody takes a request, 504 on the
request timeout) and retries on another handler, none of which a handler ever sees. It also
sees every reply byte (they pass through it), so status and bytes come from what really went
to Mongrel2. The handler's part is the request id: it gives the app one and returns it in
``X-Request-Id``, where the dispatcher reads it back for the log line.

Request ids: a client's ``X-Request-Id`` is kept only if it is a safe bounded token
(``[A-Za-z0-9._:-]``, 1-64 characters), otherwise replaced by 32 random hex digits; either
way the app, the response and the log line carry the same id (``request_id_for``).

The loop's part is ``Observer``: a few list stores per request, batches shipped to the
recorder process (recorder.py), where the rest of this module runs: parsing headers,
formatting lines, the histogram, and ``MetricsServer``, a thread serving the page. The
Prometheus text format is written here (30 lines) instead of depending on prometheus-client:
the package's only runtime dependency stays pyzmq.
"""

import datetime
import http.server
import json
import logging
import marshal
import os
import re
import socket
import sys
import threading
import time
from bisect import bisect_left

from ringmaster_handler.credit import HEAD_LEN, headers_span
from ringmaster_handler.request import _read_headers as read_headers
from ringmaster_handler.requestid import request_id_for

log = logging.getLogger("ringmaster_handler.dispatcher")

# -- access log lines -----------------------------------------------------------------------

_CONTROL = re.compile(r'[\x00-\x1f\x7f-\x9f"\\]')


def _escape_char(m: re.Match) -> str:
    c = m.group()
    return "\\" + c if c in '"\\' else f"\\x{ord(c):02x}"


def clf_escape(value: object) -> str:
    """A field for the common log format: quotes, backslashes and control characters
    escaped (nginx style), "-" when empty, so a field never ends a line or a quoted field."""
    if value is None or value == "":
        return "-"
    return _CONTROL.sub(_escape_char, str(value))


FIELDS = (
    "time", "app", "host", "method", "path", "status", "bytes", "duration_ms", "client",
    "user_agent", "request_id", "retries",
)  # fmt: skip


# Printable ASCII without '"' and '\\': written as it is; anything else goes through json.dumps.
_JSON_PLAIN = re.compile(r"[ !#-\[\]-~]*")


def _json_value(value: object) -> str:
    if value is None:
        return "null"
    if type(value) is str:
        if _JSON_PLAIN.fullmatch(value):
            return f'"{value}"'
        return json.dumps(value, ensure_ascii=True)
    if type(value) in (int, float):
        return repr(value)
    return json.dumps(value, ensure_ascii=True)


def format_json(rec: dict) -> str:
    """One JSON line, as json.dumps writes it (every control character and non-ASCII one
    escaped), without its cost for the plain values most lines hold: the dispatcher writes
    one per request, in its loop."""
    get = rec.get
    return "{" + ", ".join(f'"{k}": {_json_value(get(k))}' for k in FIELDS) + "}\n"


def format_common(rec: dict) -> str:
    """NCSA common log format, then host, request id, duration and retries:
    ``client - - [time] "METHOD path" status bytes "user agent" host id ms retries``."""
    when_dt = rec.get("time_dt") or datetime.datetime.fromtimestamp(rec["epoch"], datetime.UTC)
    when = when_dt.strftime("%d/%b/%Y:%H:%M:%S +0000")
    return (
        f"{clf_escape(rec.get('client'))} - - [{when}] "
        f'"{clf_escape(rec.get("method"))} {clf_escape(rec.get("path"))}" '
        f"{rec.get('status') or '-'} {rec.get('bytes') or '-'} "
        f'"{clf_escape(rec.get("user_agent"))}" {clf_escape(rec.get("host"))} '
        f"{clf_escape(rec.get('request_id'))} {rec.get('duration_ms')} {rec.get('retries')}\n"
    )


FORMATS = {"json": format_json, "common": format_common}

_second: list = [None, ""]  # (whole second, its ISO text): one strftime per second, not per line


def iso_millis(wall: float) -> str:
    """``wall`` (seconds since the epoch) as ISO 8601 UTC with milliseconds and a Z."""
    sec = int(wall)
    if _second[0] != sec:
        _second[0], _second[1] = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{_second[1]}.{int((wall - sec) * 1000):03d}Z"


def request_fields(msg: bytes) -> dict:
    """method, path (with ?query), host, client address, user agent and the client's
    X-Request-Id of a Mongrel2 request message (values None when absent or unreadable)."""
    span = headers_span(msg)
    h: dict = {}
    if span is not None:
        # (from the length prefix through the JSON netstring's "," or the tnetstring's "}")
        length_at = msg.rfind(b" ", 0, span[0]) + 1
        try:
            h, _ = read_headers(msg[length_at : span[1] + 1])
        except Exception:  # (a message the handler will answer 400 to)
            h = {}
    get = h.get
    path = get("URI")
    if path is None:
        sp = msg.find(b" ", msg.find(b" ") + 1)
        end = msg.find(b" ", sp + 1, sp + 2050)
        path = msg[sp + 1 : end].decode("latin-1") if 0 < sp < end else None
    ua = get("user-agent")
    return {
        "method": get("METHOD"),
        "path": path,
        "host": get("host"),
        "client": get("REMOTE_ADDR"),  # (Mongrel2's; X-Forwarded-For is the client's word)
        "user_agent": ", ".join(ua) if type(ua) is list else ua,
        "x_request_id": get("x-request-id"),
    }


def open_log(path: str) -> int:
    """The access log file, for appending (created 0640: paths may carry tokens)."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)


class AccessLog:
    """Lines go to a file (``path``; reopened when logrotate moved or removed it, checked
    every ``CHECK_EVERY`` seconds by inode: no signal needed) or to stdout (``-``).

    Lines are buffered and written by ``flush``, which the dispatcher calls every 50 ms:
    one ``write`` to a file opened with O_APPEND (page cache, no fsync)."""

    CHECK_EVERY = 1.0
    MAX_BUFFERED = 512

    def __init__(self, path: str, fmt: str = "json", app: str = "") -> None:
        self.path = path
        self.format = FORMATS[fmt]
        self.app = app
        self.lines: list[str] = []
        self.fd = -1
        self._checked = 0.0
        self._ident: tuple[int, int] | None = None
        self.reopened = 0
        self._open()

    def _open(self) -> None:
        if self.path == "-":
            self.fd = sys.stdout.fileno()
            return
        fd = open_log(self.path)
        st = os.fstat(fd)
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self._ident = fd, (st.st_dev, st.st_ino)

    def add(self, rec: dict) -> None:
        rec["app"] = self.app
        self.add_line(self.format(rec))

    def add_line(self, line: str) -> None:
        self.lines.append(line)
        if len(self.lines) >= self.MAX_BUFFERED:
            self.flush()

    def _rotated(self, now: float) -> bool:
        if self.path == "-" or now - self._checked < self.CHECK_EVERY:
            return False
        self._checked = now
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self._ident

    def flush(self, now: float | None = None) -> None:
        if self._rotated(time.monotonic() if now is None else now):
            try:
                self._open()
                self.reopened += 1
            except OSError as exc:
                log.error("cannot reopen the access log %s: %s", self.path, exc)
        if not self.lines:
            return
        data = "".join(self.lines).encode("utf-8", "backslashreplace")
        self.lines.clear()
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError as exc:
            log.error("cannot write the access log %s: %s", self.path, exc)

    def close(self) -> None:
        self.flush()
        if self.path != "-" and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# -- metrics -------------------------------------------------------------------------------

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CLASSES = ("closed", "1xx", "2xx", "3xx", "4xx", "5xx")


class Metrics:
    """Counters the loop increments; ``render`` (any thread) writes the text format."""

    def __init__(self) -> None:
        self.by_class = [0] * len(CLASSES)  # by status // 100 (0: closed without a response)
        self.by_code = {413: 0, 499: 0, 502: 0, 503: 0, 504: 0}
        self.buckets = [0] * (len(BUCKETS) + 1)  # last: +Inf
        self.duration_sum = 0.0
        self.upload_bytes = 0

    def observe(self, status: int, seconds: float) -> None:
        cls = status // 100
        self.by_class[cls if 0 < cls < 6 else 0] += 1
        if status in self.by_code:
            self.by_code[status] += 1
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.duration_sum += seconds


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(metrics: Metrics, gauges: dict[str, float], events: dict[str, int], app: str) -> str:
    """Prometheus text format 0.0.4."""
    a = f'app="{_label(app)}"'
    out = [
        "# HELP ringmaster_dispatcher_requests_total Requests finished, by status class "
        "(closed: connection closed without a response).",
        "# TYPE ringmaster_dispatcher_requests_total counter",
    ]
    for name, n in zip(CLASSES, list(metrics.by_class), strict=True):
        out.append(f'ringmaster_dispatcher_requests_total{{{a},code_class="{name}"}} {n}')
    out += [
        "# HELP ringmaster_dispatcher_responses_total Requests finished with these statuses "
        "(413, 499: client gone, 502, 503, 504), whoever answered.",
        "# TYPE ringmaster_dispatcher_responses_total counter",
    ]
    for code, n in sorted(dict(metrics.by_code).items()):
        out.append(f'ringmaster_dispatcher_responses_total{{{a},code="{code}"}} {n}')
    name = "ringmaster_dispatcher_request_duration_seconds"
    out += [
        f"# HELP {name} From Mongrel2 handing the request over to its last reply message.",
        f"# TYPE {name} histogram",
    ]
    counts = list(metrics.buckets)
    total = 0
    for le, n in zip([*map(repr, BUCKETS), "+Inf"], counts, strict=True):
        total += n
        out.append(f'{name}_bucket{{{a},le="{le}"}} {total}')
    out.append(f"{name}_sum{{{a}}} {metrics.duration_sum!r}")
    out.append(f"{name}_count{{{a}}} {total}")
    out += [
        "# HELP ringmaster_dispatcher_upload_bytes_total Request body bytes received from "
        "Mongrel2.",
        "# TYPE ringmaster_dispatcher_upload_bytes_total counter",
        f"ringmaster_dispatcher_upload_bytes_total{{{a}}} {metrics.upload_bytes}",
    ]
    for gauge, (help_text, value) in gauges.items():
        out += [
            f"# HELP ringmaster_dispatcher_{gauge} {help_text}",
            f"# TYPE ringmaster_dispatcher_{gauge} gauge",
            f"ringmaster_dispatcher_{gauge}{{{a}}} {value}",
        ]
    out += [
        "# HELP ringmaster_dispatcher_events_total The dispatcher's own counters (forged: "
        "replies a handler addressed to another connection; see DISPATCHER.md).",
        "# TYPE ringmaster_dispatcher_events_total counter",
    ]
    for event, n in sorted(events.items()):
        out.append(f'ringmaster_dispatcher_events_total{{{a},event="{_label(event)}"}} {n}')
    return "\n".join(out) + "\n"


def bind_metrics(address: str, port: int) -> socket.socket:
    """The metrics listener, bound by the dispatcher (so a port in use stops it at start)
    and served by its recorder process, which inherits it (and a respawned one after it)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return socket.create_server((address, port), family=family, backlog=64)


class MetricsServer:
    """``GET /metrics`` on its own thread, on the listening socket ``sock``; ``collect()``
    returns the page's text."""

    def __init__(self, sock: socket.socket, collect) -> None:
        collect_ = collect

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = collect_().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args) -> None:
                pass

        class Server(http.server.HTTPServer):
            address_family = sock.family

        Handler.timeout = 5  # a client that stalls cannot hold the thread forever
        self.httpd = Server(sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.httpd.socket.close()
        self.httpd.socket = sock
        self.port = sock.getsockname()[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    def start(self) -> "MetricsServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- the dispatcher's view of each request ----------------------------------------------------


# Fields of the record the loop keeps per request, shipped as it is to the recorder.
HEAD, START, STATUS, BYTES, REPLY_HEAD, RETRIES, RID, END = range(8)
# Messages up to this size are shipped whole (marshal copies them in C); a longer one (an
# upload) only up to its body's length prefix, which is all the recorder reads of it.
HEAD_MAX = 16384
# Entries are keyed by connection (one request in flight per connection); a bug that never
# ends one must not grow this without bound.
MAX_OPEN = 200_000
# Records shipped at once when requests end faster than the loop's housekeeping ships them.
SHIP_AT = 4096
# With nothing finished, the gauges still go out this often (seconds): a scrape of an idle
# dispatcher is at most this old, and an idle recorder wakes once a second.
IDLE_SHIP_EVERY = 1.0


def message_head(msg: bytes) -> bytes:
    """``msg`` without the bytes of its body (kept: the body's length prefix)."""
    if len(msg) <= HEAD_MAX:
        return msg
    span = headers_span(msg)
    return msg[:HEAD_MAX] if span is None else msg[: span[1] + 1 + 12]


class Observer:
    """The loop's part: a few list stores per request (begin, reply, end), finished records
    batched and shipped to the recorder process (recorder.py) by ``ship``, which the loop's
    housekeeping calls every 50 ms. Parsing headers, formatting lines, the histogram and the
    metrics page all happen there, on another core: the loop is the one Python thread every
    request of the app passes through, so each microsecond spent in it is the stack's (the
    log line cost 7.5 us when it was formatted here; bench/observe_cost.py)."""

    def __init__(self, clock, access: bool, link, snapshot) -> None:
        self.clock = clock
        self.access = access
        self.link = link
        self.snapshot = snapshot  # () -> the gauges and the dispatcher's counters
        self.open: dict[bytes, list] = {}
        self.batch: list[list] = []
        self.upload_bytes = 0  # bytes of streamed bodies (uploads that came in pieces)
        self._shipped = 0.0

    def begin(self, prefix: bytes, msg: bytes) -> None:
        if len(self.open) >= MAX_OPEN:
            self.open.clear()
        self.open[prefix] = [message_head(msg), self.clock(), 0, 0, None, 0, None, 0.0]

    def drop(self, prefix: bytes) -> None:
        self.open.pop(prefix, None)

    def retried(self, prefix: bytes) -> None:
        entry = self.open.get(prefix)
        if entry is not None:
            entry[RETRIES] += 1

    def reply(self, prefix: bytes, frame: bytes) -> None:
        """A reply message (D or M frame) that went to Mongrel2."""
        entry = self.open.get(prefix)
        if entry is None:
            return
        at = HEAD_LEN + len(prefix)
        if not entry[STATUS] and frame.startswith(b"HTTP/1.", at):
            code = frame[at + 9 : at + 12]
            entry[STATUS] = int(code) if code.isdigit() else 0
            end = frame.find(b"\r\n\r\n", at)
            if end > 0:
                if self.access:
                    entry[REPLY_HEAD] = frame[at:end]  # (the recorder reads X-Request-Id)
                entry[BYTES] += len(frame) - end - 4
                return
        entry[BYTES] += len(frame) - at

    def answered(self, prefix: bytes, code: int) -> str | None:
        """The dispatcher answers ``code`` itself (0: closes the connection); the request id
        for its response, or None (no response, or nothing is logged)."""
        entry = self.open.get(prefix)
        if entry is None:
            return None
        rid = None
        if code and self.access:
            rid = entry[RID] = request_id_for(request_fields(entry[HEAD])["x_request_id"])
        self.end(prefix, code)
        return rid

    def end(self, prefix: bytes, code: int | None = None) -> None:
        """The request is over: with the dispatcher's own answer ``code``, else as replied."""
        entry = self.open.pop(prefix, None)
        if entry is None:
            return
        if code:
            entry[STATUS] = code
        elif code is None and not entry[STATUS] and not entry[BYTES]:
            return  # (a spooled upload's first notice, finished silently by design)
        entry[END] = self.clock()
        batch = self.batch
        batch.append(entry)
        if len(batch) >= SHIP_AT:
            self.ship()

    def ship(self, force: bool = False) -> None:
        """Send what finished, with the gauges, to the recorder (every 50 ms while requests
        finish, every IDLE_SHIP_EVERY seconds otherwise)."""
        now = self.clock()
        if not (self.batch or force) and now - self._shipped < IDLE_SHIP_EVERY:
            return
        self._shipped = now
        batch, self.batch = self.batch, []
        gauges, counters = self.snapshot()
        # (marshal: our own process at the other end of a pipe; it is the fastest format)
        self.link.send(
            marshal.dumps((batch, time.time() - now, gauges, counters, self.upload_bytes))
        )
