"""ringmaster-dispatcher's recorder: its access log and its /metrics, in a process of their own.

The dispatcher starts it (``python -m ringmaster_handler.recorder``) when it has an access log
or metrics, and ships it every request that finished, in batches (observe.Observer.ship;
recorder_link.RecorderLink). Here the request's headers are parsed, the log line formatted
and written, the histogram kept and the metrics page served, on whichever core is free, so the
dispatcher's loop keeps only a few list stores per request.

It ends when its stdin ends, that is, after the dispatcher's last batch: SIGTERM and SIGINT
(a stop of the whole process group) are ignored so that the lines of the requests the
dispatcher is still draining are written too.
"""

import argparse
import json
import logging
import marshal
import os
import signal
import socket
import sys

from ringmaster_handler.credit import headers_span, parse_length
from ringmaster_handler.observe import (
    BYTES,
    END,
    HEAD,
    REPLY_HEAD,
    RETRIES,
    RID,
    START,
    STATUS,
    AccessLog,
    Metrics,
    MetricsServer,
    format_json,
    iso_millis,
    render,
    request_fields,
)
from ringmaster_handler.options import add_log_level, log_to_stderr
from ringmaster_handler.requestid import request_id_for, safe_request_id

log = logging.getLogger("ringmaster_handler.recorder")

# Larger than any batch the dispatcher sends (SHIP_AT records of at most HEAD_MAX bytes).
MAX_FRAME = 256 << 20
_RID = b"\r\nx-request-id:"


def declared_body_length(head: bytes | None, span: tuple[int, int] | None = None) -> int:
    """The body length a Mongrel2 request message declares (its body netstring's prefix,
    read even when the body itself was cut off); 0 when unreadable. ``span``: its headers'
    (headers_span), when already known."""
    if not head:
        return 0
    if span is None:
        span = headers_span(head)
    if span is None or head[span[1] : span[1] + 1] != b",":
        return 0
    colon = head.find(b":", span[1] + 1, span[1] + 13)
    n = parse_length(head[span[1] + 1 : colon]) if colon > 0 else None
    return n or 0


# The keys of Mongrel2's JSON headers the log reads (header names come lowercased).
_PLAIN_KEYS = (
    ("method", b'"METHOD":"'), ("path", b'"URI":"'), ("host", b'"host":"'),
    ("client", b'"REMOTE_ADDR":"'), ("user_agent", b'"user-agent":"'),
    ("x_request_id", b'"x-request-id":"'),
)  # fmt: skip
# Printable ASCII (what bytes.translate deletes: anything left is not plain); a 3 us regex
# did the same.
_PRINTABLE = bytes(range(0x20, 0x7F))


def plain_fields(head: bytes, span: tuple[int, int] | None) -> dict | None:
    """request_fields, fast, for JSON headers of printable ASCII with no escape and no
    repeated header (a quote then only ever delimits a key or a value, so a key is found
    with ``find``); None for anything else, which request_fields reads instead."""
    if span is None or head[span[0] : span[0] + 1] != b"{":
        return None
    hdrs = head[span[0] : span[1]]
    # (not printable ASCII, a backslash: an escape, '":[': a list, i.e. a repeated header)
    if hdrs.translate(None, _PRINTABLE) or b"\\" in hdrs or b'":[' in hdrs:
        return None
    fields: dict = {}
    for name, key in _PLAIN_KEYS:
        i = hdrs.find(key)
        if i < 0:
            fields[name] = None
            continue
        i += len(key)
        fields[name] = hdrs[i : hdrs.find(b'"', i)].decode("ascii")
    return fields if fields["method"] and fields["path"] else None


def _plain(value: str | None) -> str:
    return "null" if value is None else f'"{value}"'


def plain_json_line(fields: dict, app_json: str) -> str:
    """format_json's line for plain_fields' values (no character to escape: json.dumps
    would write each as it is), without its per-field work."""
    return (
        f'{{"time": "{fields["time"]}", "app": {app_json}, "host": {_plain(fields["host"])}, '
        f'"method": "{fields["method"]}", "path": "{fields["path"]}", '
        f'"status": {fields["status"]}, "bytes": {fields["bytes"]}, '
        f'"duration_ms": {fields["duration_ms"]!r}, "client": {_plain(fields["client"])}, '
        f'"user_agent": {_plain(fields["user_agent"])}, "request_id": "{fields["request_id"]}", '
        f'"retries": {fields["retries"]}}}\n'
    )


def reply_request_id(reply_head: bytes | None) -> str | None:
    """The X-Request-Id the handler put in its response head, if it is a safe one."""
    if not reply_head:
        return None
    lower = reply_head.lower()
    i = lower.find(_RID)
    if i < 0:
        return None
    j = lower.find(b"\r\n", i + 2)
    value = reply_head[i + len(_RID) : j if j > 0 else len(reply_head)]
    return safe_request_id(value.strip().decode("latin-1"))


def access_fields(rec: list, wall_offset: float, fields: dict | None = None) -> dict:
    """The access log's fields of one finished request record (observe.Observer);
    ``fields``: its request's, when already read (plain_fields)."""
    if fields is None:
        fields = request_fields(rec[HEAD])
    wall = rec[END] + wall_offset
    fields.update(
        time=iso_millis(wall),
        epoch=wall,
        status=rec[STATUS],
        bytes=rec[BYTES],
        duration_ms=round((rec[END] - rec[START]) * 1000, 3),
        request_id=(
            rec[RID] or reply_request_id(rec[REPLY_HEAD]) or request_id_for(fields["x_request_id"])
        ),
        retries=rec[RETRIES],
    )
    return fields


class Recorder:
    def __init__(self, access: AccessLog | None, metrics: Metrics | None, app: str) -> None:
        self.access = access
        self.metrics = metrics
        self.app = app
        # (as format_json writes it; json.dumps, as a name may hold anything)
        self._app_json = json.dumps(app, ensure_ascii=True)
        self.gauges: dict = {}
        self.counters: dict = {}
        self._bodies = 0

    def apply(self, shipped: tuple) -> None:
        batch, wall_offset, gauges, counters, streamed = shipped
        metrics, access = self.metrics, self.access
        plain = access is not None and access.format is format_json
        for rec in batch:
            head = rec[HEAD]
            span = headers_span(head) if head else None
            if metrics is not None:
                metrics.observe(rec[STATUS], rec[END] - rec[START])
                self._bodies += declared_body_length(head, span)
            if access is None:
                continue
            fields = plain_fields(head, span) if plain else None
            if fields is not None:
                fields = access_fields(rec, wall_offset, fields)
                access.add_line(plain_json_line(fields, self._app_json))
            else:
                access.add(access_fields(rec, wall_offset))
        if metrics is not None:
            metrics.upload_bytes = self._bodies + streamed
        if access is not None:
            access.flush()
        self.gauges, self.counters = gauges, counters

    def page(self) -> str:
        """The metrics page (on the metrics thread)."""
        return render(self.metrics, self.gauges, self.counters, self.app)

    def close(self) -> None:
        if self.access is not None:
            self.access.close()


def read_exactly(fd: int, n: int) -> bytes | None:
    """``n`` bytes from ``fd``; None at its end (a frame cut short counts as the end)."""
    parts, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def frames(fd: int):
    """The payloads of the length-prefixed frames on ``fd``, until it ends."""
    while (prefix := read_exactly(fd, 4)) is not None:
        n = int.from_bytes(prefix, "big")
        if n > MAX_FRAME:
            raise ValueError(f"a frame of {n} bytes from the dispatcher")
        payload = read_exactly(fd, n)
        if payload is None:
            return
        yield payload


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ringmaster-dispatcher recorder",
        description="Started by ringmaster-dispatcher; reads its batches on stdin.",
    )
    p.add_argument("--name", default="")
    p.add_argument("--access-log", metavar="PATH")
    p.add_argument("--access-log-format", choices=["json", "common"], default="json")
    p.add_argument("--metrics-fd", type=int, default=-1, metavar="FD")
    p.add_argument("--syslog-prefix", action="store_true")
    add_log_level(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ringmaster_handler.proctitle import set_title

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    log_to_stderr(args.log_level, args.name, args.syslog_prefix)
    set_title(f"ringmaster-dispatcher recorder {args.name}".rstrip(), b"ringmaster-rec")
    access = None
    if args.access_log:
        access = AccessLog(args.access_log, args.access_log_format, args.name)
    metrics = Metrics() if args.metrics_fd >= 0 else None
    recorder = Recorder(access, metrics, args.name)
    server = None
    if metrics is not None:
        server = MetricsServer(socket.socket(fileno=args.metrics_fd), recorder.page).start()
    try:
        for payload in frames(sys.stdin.fileno()):
            try:
                recorder.apply(marshal.loads(payload))
            except Exception:  # (one bad batch must not end the log and the metrics)
                log.exception("a batch from the dispatcher could not be recorded")
    finally:
        recorder.close()
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
