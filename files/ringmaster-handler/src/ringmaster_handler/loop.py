"""The serving loop: ZeroMQ sockets, message dispatch, graceful shutdown."""

import contextlib
import logging
import socket
import time
from functools import partial
from io import BytesIO

import zmq

from ringmaster_handler import uploads
from ringmaster_handler.alarm import SoloAlarm
from ringmaster_handler.body import StreamedBody
from ringmaster_handler.environ import EnvironBuilder
from ringmaster_handler.errors import ProtocolError
from ringmaster_handler.exchange import DEFAULT_STREAM_RATE, Exchange
from ringmaster_handler.request import Request, parse_message, raw_reply_prefix
from ringmaster_handler.requestid import _SAFE_ID, new_request_id
from ringmaster_handler.response import simple_response, single_reply_prefix, wants_keep_alive
from ringmaster_handler.specs import Endpoint
from ringmaster_handler.stopsignals import drain_fd, stop_signals

log = logging.getLogger("ringmaster_handler.loop")

IDLE_POLL_MS = 1000
# A blocked send is retried in slices this long so a stop request is noticed.
SEND_SLICE_MS = 200
# Give up on a reply after this long without Mongrel2 taking it (it is gone or wedged).
SEND_TIMEOUT = 30.0
# Bounds what a stream can hold in our reply queue (streamed messages are up to 1 MiB).
REPLY_HWM = 64


# Messages smaller than this are copied into ZeroMQ (pyzmq's own copy threshold).
COPY_BELOW = 65536
# Plain ints: pyzmq's constants are enums, and enum arithmetic costs microseconds per call.
NOBLOCK = int(zmq.NOBLOCK)
_backend_send = zmq.backend.Socket.send
_backend_recv = zmq.backend.Socket.recv
_UPLOAD_START = uploads.UPLOAD_START
_UPLOAD_DONE = uploads.UPLOAD_DONE

# Reply messages of one request leave together when it is done (a reply and Mongrel2's
# close message: one wake-up of libzmq's I/O threads, ours and Mongrel2's, not two). Never
# across requests: a finished reply must not wait while the next request runs, which may be
# slow (head-of-line blocking). Streamed responses push each paced message themselves; this
# only bounds what one request can queue otherwise.
OUTBOX_MAX = 16

# --request-timeout: the alarm fires this long after the dispatcher's own timeout, so the
# dispatcher has answered the client (504) before the process goes.
TIMEOUT_GRACE = 2.0

# How every disconnect notice ends, in both header protocols (the body is fixed JSON).
_DISCONNECT_TAIL = b'21:{"type":"disconnect"},'


class SendTimeout(Exception):
    pass


class HandlerLoop:
    # Dispatcher mode sets this to the sender of a response's last message.
    send_last = None

    def __init__(
        self,
        app,
        fronts: list[tuple[Endpoint, Endpoint]],
        *,
        upload_root: str = "/var/lib/mongrel2",
        script_name_from_route: bool = True,
        subscribe_timeout: float = 5.0,
        linger_ms: int = 1000,
        drain_timeout: float = 1.0,
        stop_timeout: float = 3.5,
        stream_rate: float = DEFAULT_STREAM_RATE,
        upload_store: str = uploads.DEFAULT_TEMP_STORE,
        request_timeout: float = 0.0,
        max_body_size: int = 0,
        alarm=None,
        multithread: bool = False,
        recycler=None,
        trusted_proxies=None,
    ) -> None:
        # --max-requests/--max-age/--max-rss (recycle.py), shared by a process's threads.
        self.recycler = recycler if recycler is not None and recycler.active else None
        self.stream_rate = stream_rate
        self.upload_store = upload_store
        self.request_timeout = request_timeout
        # --request-timeout: the process's alarm (alarm.py; a slot of a shared one with threads).
        self.alarm = alarm if alarm is not None else SoloAlarm(request_timeout + TIMEOUT_GRACE)
        self.max_body_size = max_body_size
        self._exchange: Exchange | None = None  # the current request's, once it has one
        self._armed = False  # the request timeout runs (the app has a request)
        self.app = app
        self.fronts = fronts
        self.upload_root = upload_root
        self.environ = EnvironBuilder(
            script_name_from_route=script_name_from_route,
            multithread=multithread,
            trusted_proxies=trusted_proxies,
        )
        self.build_environ = self.environ.build
        self.subscribe_timeout = subscribe_timeout
        self.linger_ms = linger_ms
        self.drain_timeout = drain_timeout
        self.stop_timeout = stop_timeout
        self.stopping = False
        self._stop_deadline = 0.0
        self._debug = log.isEnabledFor(logging.DEBUG)
        self.served = 0
        # Reply messages not sent yet (see OUTBOX_MAX and push).
        self.outbox: list = []
        self.outbox_max = OUTBOX_MAX

    # -- lifecycle ----------------------------------------------------------------------------

    def request_stop(self, *_args) -> None:
        # Runs as a signal handler: only set flags, the loop does the rest.
        if not self.stopping:
            self.stopping = True
            self._stop_deadline = time.monotonic() + self.stop_timeout

    def run(self) -> int:
        with stop_signals(self.request_stop) as wake_r:
            ctx = zmq.Context(io_threads=1)
            try:
                self.serve_on(ctx, wake_r)
            finally:
                ctx.term()
        log.info("stopped after %d requests", self.served)
        return 0

    def serve_on(self, ctx: zmq.Context, wake_r: socket.socket) -> None:
        """Open this loop's own sockets in ``ctx``, serve until stopped, drain, close them.
        ``wake_r`` becomes readable when the loop should look at ``stopping``."""
        try:
            self._open_sockets(ctx)
            self._serve(wake_r)
            self._drain()
        finally:
            self._close_sockets()

    def _open_sockets(self, ctx: zmq.Context) -> None:
        idents = {send.ident for send, _ in self.fronts if send.ident}
        reply = ctx.socket(zmq.XPUB)
        reply.setsockopt(zmq.LINGER, self.linger_ms)
        # Report every subscription (not only the first per topic) so each front is counted.
        reply.setsockopt(zmq.XPUB_VERBOSE, 1)
        # Block instead of silently dropping replies when Mongrel2 falls behind.
        reply.setsockopt(zmq.XPUB_NODROP, 1)
        reply.setsockopt(zmq.SNDHWM, REPLY_HWM)
        reply.setsockopt(zmq.SNDTIMEO, SEND_SLICE_MS)
        if len(idents) == 1:
            reply.setsockopt(zmq.IDENTITY, next(iter(idents)).encode())
        for _, recv in self.fronts:
            reply.connect(recv.url)
        self.reply = reply
        self._wait_for_subscriptions()

        pull = ctx.socket(zmq.PULL)
        # Requests still queued here when we exit are lost either way; don't linger on them.
        pull.setsockopt(zmq.LINGER, 0)
        if len(idents) == 1:
            pull.setsockopt(zmq.IDENTITY, next(iter(idents)).encode())
        for send, _ in self.fronts:
            pull.connect(send.url)
        self.pull = pull
        log.info(
            "serving %s",
            ", ".join(f"{send} -> {recv}" for send, recv in self.fronts),
        )

    def _wait_for_subscriptions(self) -> None:
        # PUB drops replies until the subscriber's subscription has arrived (slow joiner),
        # so requests are only taken once every front has subscribed.
        wanted = len(self.fronts)
        seen = 0
        deadline = time.monotonic() + self.subscribe_timeout
        while seen < wanted and not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning(
                    "only %d of %d Mongrel2 fronts subscribed within %.1fs; serving anyway",
                    seen,
                    wanted,
                    self.subscribe_timeout,
                )
                return
            if self.reply.poll(min(left, 0.25) * 1000, zmq.POLLIN):
                msg = self.reply.recv()
                if msg[:1] == b"\x01":
                    seen += 1
                    log.debug("subscription %r", msg[1:])

    def _close_sockets(self) -> None:
        for name in ("pull", "reply"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close()

    # -- receiving -------------------------------------------------------------------------------

    def _serve(self, wake_r: socket.socket) -> None:
        pull = self.pull
        recv = partial(_backend_recv, pull)
        dispatch = self.dispatch
        poller = zmq.Poller()
        poller.register(pull, zmq.POLLIN)
        poller.register(self.reply, zmq.POLLIN)
        poller.register(wake_r.fileno(), zmq.POLLIN)
        noblock = NOBLOCK
        again = zmq.Again
        while not self.stopping:
            try:
                msg = recv(noblock)
            except again:
                if self.outbox:
                    self.push_quietly()
                    continue
                for sock, _ in poller.poll(IDLE_POLL_MS):
                    if sock is self.reply:
                        self._drain_subscriptions()
                    elif sock == wake_r.fileno():
                        drain_fd(wake_r)
                if self.recycler is not None:
                    self.recycler.idle_check()
                continue
            dispatch(msg)

    def _drain_subscriptions(self) -> None:
        # Mongrel2 re-subscribes after a restart; read those notices so they don't pile up.
        while True:
            try:
                msg = self.reply.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if self._debug:
                log.debug("subscription notice %r", msg)

    def _drain(self) -> None:
        """After a stop: take no new work, but serve what is already queued here."""
        for send, _ in self.fronts:
            with contextlib.suppress(zmq.ZMQError):
                self.pull.disconnect(send.url)
        deadline = time.monotonic() + self.drain_timeout
        while True:
            self.push_quietly()
            left = deadline - time.monotonic()
            if left <= 0 or not self.pull.poll(min(left, 0.05) * 1000, zmq.POLLIN):
                return
            try:
                msg = self.pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                continue
            self.dispatch(msg)

    # -- dispatch --------------------------------------------------------------------------------

    def dispatch(self, msg: bytes, body: StreamedBody | None = None) -> None:
        """Handle one message; nothing a message contains may end the loop.

        Every request gets an answer, whatever goes wrong: a 400 when the message cannot be
        understood, a 500 (and a closed connection when part of a reply already left) when
        anything raises. ``body``: the collected body of a streamed request (dispatcher mode).
        """
        if body is None and msg.endswith(_DISCONNECT_TAIL):
            # Every closed client connection sends one of these; with Connection: close
            # clients that is one per request, so skip parsing what needs no answer.
            if self._debug:
                log.debug("disconnect: %r", msg[:80])
            return
        self._exchange = None
        try:
            req = parse_message(msg)
        except Exception as exc:  # ProtocolError, or a bug in the parser: same answer
            log.warning("dropped a malformed message (%d bytes): %r", len(msg), exc)
            if body is not None:
                body.close()
            self._answer_raw(msg, 400)
            return
        h = req.headers
        try:
            if body is not None:
                self._streamed(req, body)
            elif h["METHOD"] == "JSON":  # (parse_message made sure there is a METHOD)
                self._control(req)
            elif _UPLOAD_START in h or _UPLOAD_DONE in h:
                self._upload(req)
            else:
                self.serve(req, BytesIO(req.body), None)
            if self.outbox:
                self.push()
        except SendTimeout as exc:
            log.error("reply to %r conn %s abandoned: %s", req.sender, req.conn_id, exc)
        except Exception:
            log.exception("internal error handling %r", req)
            self._answer_failure(single_reply_prefix(req.sender, req.conn_id))

    def _answer_raw(self, msg: bytes, code: int) -> None:
        """Answer a message we could not parse, if it at least says whom to answer."""
        prefix = raw_reply_prefix(msg)
        if prefix is None:
            return  # not even a sender and connection id: nobody to answer
        self._answer(prefix, code)

    def _answer(self, prefix: bytes, code: int) -> None:
        """A small error response of our own, then close (the body may not have been read)."""
        try:
            self.send(prefix + simple_response(code, False))
            self.send(prefix)
            if self.outbox:
                self.push()
        except SendTimeout as exc:
            log.error("error reply abandoned: %s", exc)

    def _answer_failure(self, prefix: bytes) -> None:
        # Nothing of a response left yet: a whole 500. Otherwise the framing is unknown to the
        # client, so only closing the connection is safe.
        exchange = self._exchange
        if exchange is None or exchange.messages == 0:
            self._answer(prefix, 500)
        else:
            try:
                self.send(prefix)
                self.push()
            except SendTimeout as exc:
                log.error("close message abandoned: %s", exc)

    def _control(self, req: Request) -> None:
        try:
            data = req.control_data()
        except ProtocolError as exc:
            log.warning("bad control message from %r: %s", req.sender, exc)
            return
        if self._debug:
            log.debug("control %r for %r conn %s", data.get("type"), req.sender, req.conn_id)

    def _upload(self, req: Request) -> None:
        prefix = single_reply_prefix(req.sender, req.conn_id)
        try:
            notice = uploads.classify(req)
        except uploads.UploadError as exc:
            # X-Mongrel2-Upload-* headers on a request Mongrel2 cannot have spooled: a client
            # wrote them. Refused, and no file is touched.
            log.warning("refused forged upload headers from conn %s: %s", req.conn_id, exc)
            self._answer(prefix, 400)
            return
        if notice is uploads.Notice.STARTED:
            if self._debug:
                log.debug("upload started for conn %s", req.conn_id)
            return
        try:
            stream, path, size = uploads.open_spooled(req, self.upload_root, self.upload_store)
        except uploads.UploadError as exc:
            log.error("rejected spooled upload for conn %s: %s", req.conn_id, exc)
            self._answer(prefix, 400)
            return
        # Unlink first: the open file stays readable, and nothing is left behind even if
        # this process dies while the app reads it.
        uploads.remove_spooled(path, stream)
        with stream:
            if self.max_body_size and size > self.max_body_size:
                log.warning(
                    "refused a spooled body of %d bytes (--max-body-size %d) from conn %s",
                    size,
                    self.max_body_size,
                    req.conn_id,
                )
                self._answer(prefix, 413)
                return
            self.serve(req, stream, str(size))

    def _streamed(self, req: Request, body: StreamedBody) -> None:
        try:
            if body.refused:
                log.warning(
                    "refused a streamed body above --max-body-size (%d bytes) from conn %s",
                    body.max_size,
                    req.conn_id,
                )
                self._answer(single_reply_prefix(req.sender, req.conn_id), 413)
                return
            if body.failed:
                log.error("could not store the streamed body of conn %s", req.conn_id)
                self._answer(single_reply_prefix(req.sender, req.conn_id), 500)
                return
            self.serve(req, body.file, str(body.length))
        finally:
            body.close()

    # -- serving ---------------------------------------------------------------------------------

    def serve(self, req: Request, wsgi_input, content_length: str | None) -> None:
        """Run the app for one request. ``content_length``: the body's real length when we
        collected it ourselves (spooled or streamed: any chunked encoding is gone)."""
        h = req.headers
        version = h.get("VERSION", "HTTP/1.0")
        prefix = b"%s %d:%s, " % (req.sender, len(req.conn_id), req.conn_id)
        connection = h.get("connection")
        self._exchange = exchange = Exchange(
            self.send,
            version,
            version == "HTTP/1.1" if connection is None else wants_keep_alive(version, connection),
            h["METHOD"] == "HEAD",
            self.stream_rate,
            prefix,
            self.send_last,
            self.push,
            self.max_payload(prefix),
        )
        try:
            environ = self.build_environ(req, wsgi_input, content_length)
            if content_length is not None:
                # The app reads a plain body of CONTENT_LENGTH bytes, not a chunked one.
                environ.pop("HTTP_TRANSFER_ENCODING", None)
        except Exception:
            log.exception("cannot build an environ for %r", req)
            self._answer(prefix, 400)
            return
        # The client's X-Request-Id if it is a safe token, else a new one (requestid.py):
        # the app gets it, and the response returns it.
        rid = environ.get("HTTP_X_REQUEST_ID")
        if rid is None or _SAFE_ID.fullmatch(rid) is None:
            rid = new_request_id()
        environ["HTTP_X_REQUEST_ID"] = environ["ringmaster.request_id"] = exchange.request_id = rid
        self.served += 1
        timeout = self.request_timeout
        if timeout:
            self._armed = True
            self.arm_timeout()
        try:
            exchange.run(self.app, environ)
        except SendTimeout:
            raise
        except Exception as exc:
            log.exception(
                "app failed on %r %r", environ["REQUEST_METHOD"], environ.get("PATH_INFO")
            )
            exchange.fail(exc)
        finally:
            if timeout:
                self._armed = False
                self.alarm.clear()
            if self.recycler is not None:
                self.recycler.request_done()

    def max_payload(self, prefix: bytes) -> int:
        """The largest reply payload one message may carry (0: no limit)."""
        return 0

    def arm_timeout(self) -> None:
        # (No SIGALRM handler: its default action ends the process, see alarm.py.)
        self.alarm.arm()

    def send(self, data: bytes) -> None:
        """Queue one reply message; it leaves when its request is done (see ``push``)."""
        if self._armed:
            self.arm_timeout()  # the request makes progress
        outbox = self.outbox
        outbox.append(data)
        if len(outbox) >= self.outbox_max:
            self.push()

    def push(self) -> None:
        """Send the queued reply messages in order, waiting (bounded) while Mongrel2 is behind.

        Raises SendTimeout (the messages not sent yet are dropped)."""
        outbox = self.outbox
        if not outbox:
            return
        sock = self.reply
        try:
            for i, data in enumerate(outbox):  # noqa: B007 (i is used after the loop)
                # The unwrapped send with plain-int flags: pyzmq's wrapper and enum flags
                # cost microseconds per call. Small messages are copied (cheaper).
                _backend_send(sock, data, 0, len(data) < COPY_BELOW)
        except zmq.Again:
            rest = outbox[i:]
        else:
            outbox.clear()
            return
        outbox.clear()
        for data in rest:
            self._send_slowly(data)

    def push_quietly(self) -> None:
        """``push`` between requests: a timeout is logged, not raised."""
        try:
            self.push()
        except SendTimeout as exc:
            log.error("dropped reply messages: %s", exc)

    def _send_slowly(self, data: bytes) -> None:
        copy = len(data) < COPY_BELOW
        started = time.monotonic()
        while True:
            try:
                _backend_send(self.reply, data, 0, copy)
                return
            except zmq.Again:
                pass
            now = time.monotonic()
            if self.stopping and now > self._stop_deadline:
                raise SendTimeout("stopping and Mongrel2 is not taking replies")
            if now - started > SEND_TIMEOUT:
                raise SendTimeout(f"Mongrel2 took no reply for {SEND_TIMEOUT:.0f}s")


def describe_fronts(fronts: list[tuple[Endpoint, Endpoint]]) -> str:
    return ",".join(send.ident or send.address for send, _ in fronts)
