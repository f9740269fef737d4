"""Plain HTTP to https, for the host names a TLS certificate covers (``ringmaster-redirect``).

Mongrel2 has no redirect route: its plain-HTTP server routes those hosts to this small handler,
which answers every request it gets with a redirect to the same path and query over https.

The host in ``Location`` comes only from the configured names: the client's Host header is used
when it is one of them (or matches one of their ``*.domain`` wildcards, one label deep, as a
certificate would), else the configured fallback (the default host), else the request gets 421.
So the redirect can never send a client to a host the operator did not list. Path and query are
percent-encoded to printable ASCII, so nothing the client sent can end the header line.

Everything that decides an answer is pure (``answer``); the loop only moves bytes.
"""

import re
import time
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import quote

from ringmaster_handler.credit import STREAM_FIRST, STREAM_MORE, ctl_message, upload_stream_kind
from ringmaster_handler.errors import ProtocolError
from ringmaster_handler.request import UPLOAD_DONE, UPLOAD_START, parse_message, raw_reply_prefix
from ringmaster_handler.response import date_line, wants_keep_alive

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
NAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
PATTERN = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")
# RFC 3986 pchar without '%' (kept: PATH is still percent-encoded) plus '/'.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE = _PATH_SAFE + "?"
# Methods a 301 may turn into GET without harm; any other keeps its method and body with 308.
_SAFE_METHODS = frozenset({"GET", "HEAD"})
# See scheduler.CANCEL_DELAY: a cancel right after the answer would drop the answer.
CANCEL_DELAY = 0.05


@dataclass(frozen=True, slots=True)
class Rules:
    """Where to send clients: ``names`` exact host names or ``*.domain`` wildcards (lower case),
    the https ``port`` (443 is left out of the URL), and ``fallback``, an exact name for requests
    whose Host is none of them (None: answer 421)."""

    names: tuple[str, ...]
    port: int = 443
    fallback: str | None = None

    def __post_init__(self) -> None:
        bad = [n for n in self.names if not PATTERN.match(n)]
        if not self.names or bad:
            raise ValueError(f"host names must be lower-case DNS names or *.domain, got {bad!r}")
        if self.fallback is not None and not NAME.match(self.fallback):
            raise ValueError(
                f"the fallback host must be an exact lower-case name: {self.fallback!r}"
            )
        if not 0 < self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")


@dataclass(frozen=True, slots=True)
class Answer:
    """Messages for Mongrel2: ``now``, and ``later`` (after CANCEL_DELAY)."""

    now: tuple[bytes, ...] = ()
    later: tuple[bytes, ...] = ()


def _covers(pattern: str, name: str) -> bool:
    if pattern == name:
        return True
    if pattern.startswith("*."):
        head, dot, rest = name.partition(".")
        return bool(head) and bool(dot) and rest == pattern[2:]
    return False


def host_of(header: object) -> str | None:
    """The host name of a Host header value, lower case, without port or final dot; None when
    it is missing, repeated, or not a DNS name (an address, a stray character)."""
    if type(header) is not str:
        return None
    host = header.strip().lower()
    name, colon, port = host.rpartition(":")
    if colon:
        if not port.isdigit() or not port.isascii():
            return None
        host = name
    if host.endswith("."):
        host = host[:-1]
    return host if NAME.match(host) else None


def target_host(header: object, rules: Rules) -> str | None:
    """The configured name to send this client to, or None."""
    host = host_of(header)
    if host is not None and any(_covers(p, host) for p in rules.names):
        return host
    return rules.fallback


def location(headers: dict, rules: Rules) -> str | None:
    """``https://host[:port]/path?query`` for a request's headers, or None (no host of ours)."""
    host = target_host(headers.get("host"), rules)
    if host is None:
        return None
    path = headers.get("PATH")
    if type(path) is not str or not path.startswith("/"):
        path = "/"  # "*", an absolute URI or nothing: the site's root
    url = "https://" + host + ("" if rules.port == 443 else f":{rules.port}")
    url += quote(path.encode("latin-1", "replace"), safe=_PATH_SAFE)
    query = headers.get("QUERY")
    if type(query) is str and query:
        url += "?" + quote(query.encode("latin-1", "replace"), safe=_QUERY_SAFE)
    return url


def response(headers: dict, rules: Rules, keep_alive: bool) -> bytes:
    """The whole HTTP response to one request."""
    method = headers.get("METHOD")
    url = location(headers, rules)
    if url is None:
        code, extra, body = 421, "", b"421 Misdirected Request: no https site for this host\n"
    else:
        code = 301 if method in _SAFE_METHODS else 308
        extra, body = f"Location: {url}\r\n", f"Moved to {url}\n".encode("ascii")
    head = (
        f"HTTP/1.1 {code} {HTTPStatus(code).phrase}\r\n"
        f"{date_line().decode('ascii')}{extra}"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode("ascii") + (b"" if method == "HEAD" else body)


def _bad_request(prefix: bytes) -> Answer:
    body = b"400 Bad Request\n"
    head = (
        f"HTTP/1.1 400 Bad Request\r\n{date_line().decode('ascii')}"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    return Answer(now=(prefix + head + body, prefix))


def answer(msg: bytes, rules: Rules) -> Answer:
    """What to send Mongrel2 for one message from it: every request gets an answer."""
    prefix = raw_reply_prefix(msg)
    if prefix is None:
        return Answer()  # nothing to address an answer to
    kind = upload_stream_kind(msg)
    if kind == STREAM_MORE:
        return Answer()  # more of a streamed body already answered
    try:
        request = parse_message(msg)
    except ProtocolError:
        return _bad_request(prefix)
    headers = request.headers
    if request.is_control or UPLOAD_DONE in headers:
        return Answer()  # a disconnect notice; the end of a spooled body already answered
    if kind == STREAM_FIRST:
        # Mongrel2 waits for credits before it reads more of the body: answer, close the
        # connection, then end its upload task (a cancel with one credit, see credit.py).
        return Answer(
            now=(prefix + response(headers, rules, False),),
            later=(ctl_message(prefix, credits=1, cancel=True),),
        )
    version = headers.get("VERSION")
    keep = UPLOAD_START not in headers and wants_keep_alive(
        version if type(version) is str else "", headers.get("connection")
    )
    reply = prefix + response(headers, rules, keep)
    # Mongrel2 closes a handler's connection only when told (an empty payload).
    return Answer(now=(reply,) if keep else (reply, prefix))


class Redirector:
    """The loop: a PULL connected to Mongrel2's send_spec, an XPUB to its recv_spec."""

    def __init__(self, send_url: str, recv_url: str, rules: Rules, subscribe_timeout: float = 5.0):
        self.send_url = send_url
        self.recv_url = recv_url
        self.rules = rules
        self.subscribe_timeout = subscribe_timeout
        self.stopping = False
        self.later: deque[tuple[float, bytes]] = deque()

    def stop(self, *_args) -> None:
        self.stopping = True

    def run(self) -> int:
        import logging

        import zmq

        from ringmaster_handler.stopsignals import drain_fd, stop_signals

        log = logging.getLogger("ringmaster.redirect")
        ctx = zmq.Context.instance()
        out = ctx.socket(zmq.XPUB)
        out.setsockopt(zmq.LINGER, 1000)
        out.setsockopt(zmq.XPUB_VERBOSE, 1)
        out.connect(self.recv_url)
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        try:
            with stop_signals(self.stop) as wake:
                # PUB drops replies until Mongrel2 has subscribed: take nothing before that.
                deadline = time.monotonic() + self.subscribe_timeout
                while not self.stopping and time.monotonic() < deadline:
                    if out.poll(250, zmq.POLLIN) and out.recv()[:1] == b"\x01":
                        break
                pull.connect(self.send_url)
                names = ", ".join(self.rules.names)
                log.info(
                    "redirecting %s to https port %d: %s", self.send_url, self.rules.port, names
                )
                poller = zmq.Poller()
                poller.register(pull, zmq.POLLIN)
                poller.register(out, zmq.POLLIN)
                poller.register(wake, zmq.POLLIN)
                while not self.stopping:
                    timeout = None
                    if self.later:
                        timeout = max(0.0, (self.later[0][0] - time.monotonic()) * 1000)
                    for sock, _ in poller.poll(timeout):
                        if sock is pull:
                            self._read(pull, out)
                        elif sock is out:
                            while out.poll(0, zmq.POLLIN):
                                out.recv()  # (re)subscriptions: nothing to do
                        else:
                            drain_fd(wake)
                    self._send_due(out, time.monotonic())
                # What Mongrel2 already pushed is answered before leaving.
                pull.disconnect(self.send_url)
                self._read(pull, out)
                self._send_due(out, float("inf"))
        finally:
            pull.close()
            out.close()
        return 0

    def _read(self, pull, out) -> None:
        import zmq

        while True:
            try:
                msg = pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            result = answer(msg, self.rules)
            for part in result.now:
                out.send(part)
            due = time.monotonic() + CANCEL_DELAY
            self.later.extend((due, part) for part in result.later)

    def _send_due(self, out, now: float) -> None:
        while self.later and self.later[0][0] <= now:
            out.send(self.later.popleft()[1])
