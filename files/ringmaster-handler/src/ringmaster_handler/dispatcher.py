"""ringmaster-dispatcher: take requests from Mongrel2, hand each to a handler that has room.

Mongrel2's PUSH socket deals requests round-robin into every connected handler's queue, so a
handler that stops (or is slow) strands what was queued for it. The dispatcher is the only
PULL peer of Mongrel2: requests wait here, and a handler gets one when it has room. Replies
come back through the dispatcher too (see DISPATCHER.md for why): it always knows which
requests a handler holds and whether any reply bytes left, so a handler that goes away can
have its requests retried (GET/HEAD with nothing sent yet) or answered 502.

Who gets which request is decided in scheduler.py; this module is the ZeroMQ side.

Liveness: libzmq's ZMTP heartbeats run on its I/O threads, so a handler busy in a long
request still answers them; a dead process or host closes the connection, which the
ROUTER's socket monitor reports by file descriptor. A worker whose connection is gone is
forgotten at once and its requests retried or failed.
"""

import contextlib
import errno
import logging
import os
import socket
import sys
import time
from functools import partial

import zmq

from ringmaster_handler.credit import monitor_event, wire_limit
from ringmaster_handler.curve import ServerSide
from ringmaster_handler.observe import Observer, bind_metrics, open_log
from ringmaster_handler.recorder_link import RecorderLink
from ringmaster_handler.scheduler import Scheduler
from ringmaster_handler.stopsignals import drain_fd, stop_signals
from ringmaster_handler.zap import DOMAIN, DenialLog, KeyGate

log = logging.getLogger("ringmaster_handler.dispatcher")

# Connection events and Mongrel2's subscriptions are checked this often (ms).
HOUSEKEEPING_MS = 50
# Messages taken from one socket before looking at the others again (fairness).
BATCH = 64
# Replies waiting for Mongrel2 beyond this many, or this many bytes, make us stop reading
# handlers (backpressure).
BACKLOG_PAUSE = 10_000
BACKLOG_PAUSE_BYTES = 32 << 20
# libzmq's queues count messages, not bytes, and a message may be MAX_FRAME long: these
# counts keep what libzmq holds for us bounded in bytes too. Replies beyond REPLY_PIPE
# wait in self.backlog, which is counted in bytes; a handler's frames beyond HANDLER_PIPE
# wait in its own process (TCP pushes back). So the replies this process holds stay under
# REPLY_PIPE * MAX_FRAME + BACKLOG_PAUSE_BYTES + BATCH_BYTES, and what it holds from each
# handler connection under HANDLER_PIPE * MAX_FRAME, however fast handlers send.
REPLY_PIPE = 128
HANDLER_PIPE = 16
# A batch of handler messages ends early when its replies hold this many bytes: they are
# sent before more are read, so large streamed replies do not pile up here.
BATCH_BYTES = 4 << 20

# Plain ints: pyzmq's constants are enums, and enum arithmetic costs microseconds per call.
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE) | int(zmq.NOBLOCK)
_backend_send = zmq.backend.Socket.send
# Messages smaller than this are copied into ZeroMQ (cheaper than zero-copy).
COPY_BELOW = 65536


class Dispatcher(Scheduler):
    def __init__(
        self,
        m2_send_url: str | list[str],
        m2_recv_url: str | list[str],
        bind_urls: list[str],
        *,
        heartbeat: float = 1.0,
        drain_timeout: float = 10.0,
        subscribe_timeout: float = 5.0,
        linger_ms: int = 1000,
        curve: ServerSide | None = None,
        name: str = "",
        access_log: str | None = None,
        access_log_format: str = "json",
        metrics_address: str = "127.0.0.1",
        metrics_port: int = 0,
        recorder_args: tuple[str, ...] = (),
        **scheduling,
    ) -> None:
        super().__init__(**scheduling)
        self.name = name
        self.observer = None
        self._observe = (access_log, access_log_format, metrics_address, metrics_port)
        self._recorder_args = recorder_args
        self._metrics_sock: socket.socket | None = None
        if access_log and access_log != "-":
            # A path we cannot open stops us here, before anything else starts (the recorder
            # process opens it again for good).
            os.close(open_log(access_log))
        self.curve = curve
        self._gate: KeyGate | None = None
        self._plain_refusals = DenialLog()
        # One route of each Mongrel2 server the route is on (a TLS one and a plain-HTTP one
        # run as two processes): requests come from all, each reply reaches only the one that
        # subscribed to its prefix (the handler's recv_ident, distinct per server).
        self.m2_send_urls = [m2_send_url] if isinstance(m2_send_url, str) else list(m2_send_url)
        self.m2_recv_urls = [m2_recv_url] if isinstance(m2_recv_url, str) else list(m2_recv_url)
        if len(self.m2_send_urls) != len(self.m2_recv_urls) or not self.m2_send_urls:
            raise ValueError("one recv url per send url")
        self.m2_send_url = ", ".join(self.m2_send_urls)
        self.m2_recv_url = ", ".join(self.m2_recv_urls)
        self.bind_urls = bind_urls
        self.heartbeat = heartbeat
        self.drain_timeout = drain_timeout
        self.subscribe_timeout = subscribe_timeout
        self.linger_ms = linger_ms
        self.stopping = False
        self._paused = False  # watching Mongrel2 for room to send replies
        self.backlog_bytes = 0  # bytes of the replies in self.backlog

    def request_stop(self, *_args) -> None:
        # Runs as a signal handler: only set a flag, the loop does the rest.
        self.stopping = True

    def run(self) -> int:
        with stop_signals(self.request_stop) as wake_r:
            # One I/O thread: connection events and messages then come in the order they happened.
            ctx = zmq.Context(io_threads=1)
            try:
                if self.curve is not None:
                    self._gate = KeyGate(ctx, self.curve.authorized_dir).start()
                self._start_recorder()
                self._open_sockets(ctx, wake_r)
                self._serve()
                self._drain()
            finally:
                self._close_sockets()
                self._stop_recorder()
                if self._gate is not None:
                    self._gate.stop()
                ctx.term()
        log.info("stopped: %s", ", ".join(f"{k} {v}" for k, v in self.stats.items()))
        return 0

    def _open_sockets(self, ctx: zmq.Context, wake_r: socket.socket) -> None:
        self._wake = wake_r
        hb_ms = max(1, int(self.heartbeat * 1000))
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 500)
        # Fail instead of silently dropping a message for a peer that is gone.
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # A handler sending a larger frame is disconnected by libzmq (its requests are then
        # retried or failed like those of any handler that goes away).
        router.setsockopt(zmq.MAXMSGSIZE, wire_limit(self.curve is not None))
        router.setsockopt(zmq.RCVHWM, HANDLER_PIPE)
        router.setsockopt(zmq.HEARTBEAT_IVL, hb_ms)
        router.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * hb_ms)
        router.setsockopt(zmq.HEARTBEAT_TTL, 3 * hb_ms)
        events = zmq.EVENT_DISCONNECTED
        if self.curve is not None:
            router.setsockopt(zmq.CURVE_SERVER, 1)
            router.setsockopt(zmq.CURVE_SECRETKEY, self.curve.keypair.secret)
            router.setsockopt(zmq.ZAP_DOMAIN, DOMAIN)
            # Without a ZAP handler libzmq would let every CURVE client in: fail closed.
            router.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
            # Peers that do not speak CURVE never reach the ZAP handler; these events are
            # the only sign of them.
            events |= zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        self.monitor = router.get_monitor_socket(events)
        self.monitor.setsockopt(zmq.LINGER, 0)
        self.router = router
        for url in self.bind_urls:
            router.bind(url)

        out = ctx.socket(zmq.XPUB)
        out.setsockopt(zmq.LINGER, self.linger_ms)
        out.setsockopt(zmq.XPUB_VERBOSE, 1)
        # Never drop a reply silently; when Mongrel2 is behind, replies wait in self.backlog.
        out.setsockopt(zmq.XPUB_NODROP, 1)
        out.setsockopt(zmq.SNDHWM, REPLY_PIPE)
        for url in self.m2_recv_urls:
            out.connect(url)
        self.m2_out = out
        self._wait_for_subscription()

        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        for url in self.m2_send_urls:
            pull.connect(url)
        self.m2_in = pull
        # The unwrapped send: the pyzmq wrapper adds a Python call per message.
        self._rsend = partial(_backend_send, router)
        self._psend = partial(_backend_send, out)
        log.info(
            "dispatching %s -> %s, replies -> %s (prefetch %d, steal after %.3fs%s)",
            self.m2_send_url, ", ".join(self.bind_urls), self.m2_recv_url,
            self.depth - 1, self.steal_after, self._curve_note(),
        )  # fmt: skip

    def _curve_note(self) -> str:
        if self.curve is None:
            return ""
        names = sorted(self._gate.authorized.values()) if self._gate else []
        return (
            f"; CURVE, server key {self.curve.keypair.public.decode()}, "
            f"{len(names)} handler keys authorised: {', '.join(names) or 'none'}"
        )

    def _wait_for_subscription(self) -> None:
        # PUB drops replies until Mongrel2's subscription has arrived (slow joiner): take no
        # request before every server's has (each subscribes to its own prefix).
        deadline = time.monotonic() + self.subscribe_timeout
        topics: set[bytes] = set()
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning(
                    "%d of %d Mongrel2 servers subscribed within %.1fs; dispatching anyway",
                    len(topics), len(self.m2_recv_urls), self.subscribe_timeout,
                )  # fmt: skip
                return
            ready = self.m2_out.poll(min(left, 0.25) * 1000, zmq.POLLIN)
            if ready:
                notice = self.m2_out.recv()
                if notice[:1] == b"\x01":
                    topics.add(notice[1:])
                    if len(topics) >= len(self.m2_recv_urls):
                        return

    def _close_sockets(self) -> None:
        router = getattr(self, "router", None)
        if router is not None:
            with contextlib.suppress(zmq.ZMQError):
                router.disable_monitor()
        for name in ("monitor", "m2_in", "router", "m2_out"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close()

    def _to_m2(self, payload) -> None:
        # Replies wait in the backlog until the end of the current batch of messages, then
        # leave together (_flush_backlog): one wake-up of the I/O threads, ours and
        # Mongrel2's, for several replies.
        self.backlog.append(payload)
        self.backlog_bytes += len(payload)

    def _flush_backlog(self) -> None:
        backlog = self.backlog
        send = self._psend
        while backlog:
            payload = backlog[0]
            try:
                send(payload, _NOBLOCK, len(payload) < COPY_BELOW)
            except zmq.Again:
                if not self._paused:
                    log.warning("Mongrel2 is not taking replies fast enough; holding them")
                return
            except zmq.ZMQError as exc:
                log.error("cannot send a reply to Mongrel2: %s", exc)
            backlog.popleft()
            self.backlog_bytes -= len(payload)

    def _flush(self) -> None:
        """Send the replies of this batch; watch Mongrel2 for room if some must wait."""
        if self.backlog:
            self._flush_backlog()
        if self.backlog or self._paused:
            if self._paused and not self.backlog:
                log.info("Mongrel2 is taking replies again")
            self._update_interest()

    def _to_worker(self, ident: bytes, frame: bytes) -> bool:
        try:
            self._rsend(ident, _MORE_NOBLOCK)
        except zmq.ZMQError as exc:
            # EHOSTUNREACH: no such peer any more; EAGAIN: it stopped reading.
            if exc.errno not in (errno.EHOSTUNREACH, errno.EAGAIN):
                log.error("cannot send to a handler: %s", exc)
            return False
        self._rsend(frame, _NOBLOCK)  # requests are small: copying is cheaper
        return True

    def _sync_liveness(self) -> None:
        # (Called while a handler message is being handled: the ROUTER cannot be read here.)
        self._read_monitor(read_first=False)

    def _serve(self) -> None:
        router, m2_in = self.router, self.m2_in
        # Only the two busy sockets are polled: every extra ZeroMQ socket in a poll costs
        # system calls per wake-up. Connection events and subscriptions are looked at every
        # HOUSEKEEPING seconds.
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(m2_in, zmq.POLLIN)
        poller.register(self._wake, zmq.POLLIN)
        self._poller = poller
        poll = poller.poll
        clock = self.clock
        read_workers, read_requests = self._read_workers, self._read_requests
        next_house = 0.0
        while not self.stopping:
            timeout = HOUSEKEEPING_MS
            if self.waiting and self.free:
                timeout = self._steal_timeout()
            for sock, events in poll(timeout):
                if sock is router:
                    read_workers()
                elif sock is m2_in:
                    read_requests()
                elif sock is self.m2_out:
                    self._m2_out_ready(events)
                else:
                    drain_fd(self._wake)
            if self.waiting and self.free:
                self.steal()
            now = clock()
            if now >= next_house:
                next_house = now + HOUSEKEEPING_MS / 1000
                self._housekeeping()
            self._flush()

    def _steal_timeout(self) -> int:
        due = self.steal_due()
        if due is None:
            return HOUSEKEEPING_MS
        return max(0, min(HOUSEKEEPING_MS, int((due - self.clock()) * 1000) + 1))

    def _start_recorder(self) -> None:
        """The access log and metrics' own process (recorder.py), when we have either."""
        access_log, access_format, address, port = self._observe
        if not (access_log or port):
            return
        argv = [sys.executable, "-m", "ringmaster_handler.recorder", "--name", self.name,
                *self._recorder_args]  # fmt: skip
        fds: tuple[int, ...] = ()
        if access_log:
            argv += ["--access-log", access_log, "--access-log-format", access_format]
        if port:
            self._metrics_sock = bind_metrics(address, port)
            fds = (self._metrics_sock.fileno(),)
            argv += ["--metrics-fd", str(fds[0])]
            log.info("metrics on http://%s:%d/metrics", address,
                     self._metrics_sock.getsockname()[1])  # fmt: skip
        link = RecorderLink(argv, fds)
        self.observer = Observer(self.clock, bool(access_log), link, self._observed)

    def _stop_recorder(self) -> None:
        if self.observer is not None:
            self.observer.ship(force=True)
            self.observer.link.close()
            if self.observer.link.dropped:
                log.warning("access log and metrics: %d batches were lost (recorder gone or "
                            "behind)", self.observer.link.dropped)  # fmt: skip
        if self._metrics_sock is not None:
            self._metrics_sock.close()

    def _observed(self) -> tuple[dict, dict]:
        """The gauges and the counters the recorder puts on the metrics page."""
        gauges = {
            "queue_depth": (
                "Requests waiting for a handler: here, and queued inside busy handlers.",
                len(self.queue) + self.waiting,
            ),
            "handlers_connected": ("Handler connections (one per thread).", len(self.workers)),
            "replies_backlog": ("Replies waiting for Mongrel2 to take them.", len(self.backlog)),
        }
        return gauges, dict(self.stats)

    def _housekeeping(self) -> None:
        if self.observer is not None:
            self.observer.ship()
            self.observer.link.write()
        if self.queue_timeout and (self.queue or self.waiting):
            self.expire()
        if self.request_timeout:
            self.check_timeouts()
        if self.cancels:
            self.send_cancels()
        if self.monitor.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._read_monitor()
        events = self.m2_out.getsockopt(zmq.EVENTS)
        if events & zmq.POLLIN or self.backlog:
            self._m2_out_ready(events)

    def _read_workers(self) -> bool:
        """Handle up to a batch of handler messages; False once none is left."""
        router = self.router
        recv = router.recv
        handle = self.on_worker_frame
        for _ in range(BATCH):
            try:
                ident = recv(_NOBLOCK)
            except zmq.Again:
                return False
            # As a Frame: its "more" flag is cheaper than getsockopt(RCVMORE), and a
            # newcomer's socket number and key name are on it.
            part = recv(copy=False)
            if part.more:
                self._discard_rest()
                log.debug("dropped a multi-frame message from a handler")
                continue
            fd, key = -1, None
            if ident not in self.workers:
                with contextlib.suppress(zmq.ZMQError):
                    fd = part.get(zmq.SRCFD)
                if self.curve is not None:
                    with contextlib.suppress(zmq.ZMQError):
                        key = part.get("User-Id")  # the key's name, set by our ZAP handler
            frame = part.bytes
            try:
                handle(ident, frame, fd, key)
            except Exception:
                log.exception("internal error on a handler message %r", frame[:40])
                self._after_error(self.fail_worker_frame, ident, frame)
            if self.backlog_bytes > BATCH_BYTES:
                break
        return True

    def _discard_rest(self) -> None:
        while self.router.getsockopt(zmq.RCVMORE):
            self.router.recv()

    def _read_requests(self) -> None:
        sock = self.m2_in
        recv = sock.recv
        handle = self.on_request
        for _ in range(BATCH):
            try:
                msg = recv(_NOBLOCK)
            except zmq.Again:
                break
            try:
                handle(msg)
            except Exception:
                log.exception("internal error on a request %r", msg[:80])
                self._after_error(self.fail_request, msg, 500)

    def _after_error(self, fail, *args) -> None:
        # The books may be half updated; the client must still get an answer.
        try:
            fail(*args)
        except Exception:
            log.exception("internal error while failing a request after an error")

    def _read_monitor(self, read_first: bool = True) -> None:
        monitor = self.monitor
        while True:
            try:
                frames = monitor.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return
            event, fd = monitor_event(frames)
            if event == zmq.EVENT_DISCONNECTED:
                gone = self.by_fd.get(fd)
                if gone is None:
                    continue
                # A handler's last replies are queued on the ROUTER before its disconnect
                # event is; read after it, they would come from a stranger (dropped) and
                # the requests they answer would be retried or failed. (Among them may be
                # the hello of a new handler whose connection got the same fd: the one
                # forgotten is the one looked up first.)
                while read_first and self._read_workers():
                    self._flush_backlog()
                self.on_worker_gone(gone)
            elif event:
                # The event names no peer address (the ZAP handler logs those it sees).
                self._plain_refusals.refused(
                    "a peer", "its handshake failed (no CURVE: a handler without a key?)"
                )

    def _m2_out_ready(self, events: int) -> None:
        if events & zmq.POLLIN:
            # Subscription notices (Mongrel2 re-subscribes after a restart): nothing to do.
            with contextlib.suppress(zmq.Again):
                while True:
                    self.m2_out.recv(_NOBLOCK)
        self._flush()

    def _update_interest(self) -> None:
        """Watch for Mongrel2 taking replies while some wait; stop reading handlers if many do."""
        poller = self._poller
        waiting = bool(self.backlog)
        if waiting:
            poller.register(self.m2_out, zmq.POLLOUT)
        elif self._paused:
            with contextlib.suppress(KeyError):
                poller.unregister(self.m2_out)
        full = len(self.backlog) > BACKLOG_PAUSE or self.backlog_bytes > BACKLOG_PAUSE_BYTES
        poller.modify(self.router, 0 if full else zmq.POLLIN)
        self._paused = waiting

    def _drain(self) -> None:
        """After a stop: take nothing more from Mongrel2, finish what we have, then exit."""
        # What Mongrel2 already pushed to us is lost once we disconnect: take it first.
        self._read_requests_all()
        for url in self.m2_send_urls:
            with contextlib.suppress(zmq.ZMQError):
                self.m2_in.disconnect(url)
        self._read_requests_all()
        self._flush_backlog()
        deadline = time.monotonic() + self.drain_timeout
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        poller.register(self.m2_out, zmq.POLLIN | (zmq.POLLOUT if self.backlog else 0))
        self._poller = poller
        self._paused = bool(self.backlog)
        log.info("stopping: %d requests to finish", self.pending())
        while self.pending() or self.backlog:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            timeout = self._steal_timeout() if self.waiting and self.free else HOUSEKEEPING_MS
            for sock, events in poller.poll(min(left * 1000, timeout)):
                if sock is self.router:
                    self._read_workers()
                elif sock is self.monitor:
                    self._read_monitor()
                else:
                    self._m2_out_ready(events)
            if self.waiting and self.free:
                self.steal()
            self.expire()
            if self.request_timeout:
                self.check_timeouts()
            if self.cancels:
                self.send_cancels()
            self._flush()
        unserved = len(self.queue)
        for _msg, _arrived, prefix in list(self.queue):
            self._answer_prefix(prefix, 503)
        self.queue.clear()
        if unserved or self.pending():
            log.warning(
                "stopped with %d requests no handler took (answered 503) and %d unfinished",
                unserved, self.pending(),
            )  # fmt: skip
        self._flush_backlog()
        if self.cancels:
            # Streamed uploads we answered: their cancels must follow the answers.
            time.sleep(0.1)
            self.send_cancels(everything=True)
            self._flush_backlog()

    def _read_requests_all(self) -> None:
        while self.m2_in.poll(0, zmq.POLLIN):
            self._read_requests()
