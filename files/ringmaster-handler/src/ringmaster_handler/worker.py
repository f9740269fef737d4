"""Dispatcher mode: take requests from ringmaster-dispatchers instead of straight from Mongrel2.

One DEALER socket per dispatcher (front). Requests are served one at a time, in the order
they arrived, from a local queue; replies go back on the socket the request came from (see
credit.py for the messages). On every (re)connection the handler says hello, so a restarted
dispatcher learns about it without anyone's help.

A request whose body streams (protocol v2: S, then U frames, then E) waits in the queue while
its body is collected (body.py): every chunk is credited with a K frame as soon as it is
stored, other frames keep being handled, and it runs, in its turn, once the body is complete.

On SIGTERM/SIGINT the handler finishes the current request, says bye to every dispatcher,
serves whatever they sent before acknowledging the bye, and exits: nothing is left queued
for it anywhere.

With ``--threads N`` (threads.py) a process runs N of these loops, one per thread, each with
sockets of its own: to a dispatcher each thread is one handler asking for one request at a
time, so the process's credit is N. Their hellos carry the same ``proc`` token, so a
dispatcher that times out one of them stops giving work to all (the process is about to end
by SIGALRM).
"""

import contextlib
import logging
import os
import socket
import time
from collections import deque
from functools import partial

import zmq

from ringmaster_handler import __version__
from ringmaster_handler.body import StreamedBody
from ringmaster_handler.credit import (
    BYE,
    CONSUMED,
    CONSUMED_LEN,
    DONE,
    FINISHED,
    HEAD_LEN,
    K_ABORT,
    K_BYE_ACK,
    K_CANCEL,
    K_REQUEST,
    K_STREAM_REQUEST,
    K_UPLOAD_DATA,
    K_UPLOAD_END,
    K_WHO,
    MAX_FRAME,
    MORE,
    hello_frame,
    monitor_event,
    wire_limit,
)
from ringmaster_handler.curve import ClientSide
from ringmaster_handler.loop import (
    COPY_BELOW,
    SEND_SLICE_MS,
    SEND_TIMEOUT,
    HandlerLoop,
    SendTimeout,
    _backend_recv,
    _backend_send,
)
from ringmaster_handler.request import parse_message
from ringmaster_handler.stopsignals import drain_fd

log = logging.getLogger("ringmaster_handler.worker")

IDLE_POLL_MS = 1000
# A request queued here may have been given to another handler (the dispatcher does that
# after it waited ``--steal-after``, default 10 ms): before starting one, look for such
# cancels if the socket was last emptied longer ago than this.
CANCEL_CHECK_AFTER = 0.002
HEARTBEAT_MS = 1000
RECONNECT_MS = 100
RECONNECT_MAX_MS = 1000
# Seconds between attempts at a dispatcher that refused our CURVE key: slow, since it will
# only say yes once an operator has authorised the key.
REFUSED_RETRY = 5.0
# libzmq never reconnects a connection it dropped for a protocol error (a frame above
# MAXMSGSIZE included); a link still down this long after a disconnect is reconnected by us.
STALLED_RETRY = 3.0
_NOBLOCK = int(zmq.NOBLOCK)  # a plain int: enum arithmetic is slow
_HANDSHAKE_FAILED = int(
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
# The most messages queued before they are sent (see loop.OUTBOX_MAX: they leave when each
# request is done, and before the next one starts).
WORKER_OUTBOX_MAX = 16


class Link:
    """The connection to one dispatcher."""

    __slots__ = ("acked", "connected", "epoch", "monitor", "refused", "retry_at", "sock", "url")

    def __init__(self, url: str, sock: zmq.Socket, monitor: zmq.Socket) -> None:
        self.url = url
        self.sock = sock
        self.monitor = monitor
        # Bumped on every (dis)connection: requests from an older epoch belong to a
        # dispatcher that has forgotten us (and retried or failed them already).
        self.epoch = 0
        self.connected = False
        self.acked = False
        # A refused CURVE handshake: warn once until one succeeds.
        self.refused = False
        # libzmq does not reconnect after the dispatcher refused our key; we do, at this time.
        self.retry_at = 0.0


class WorkerLoop(HandlerLoop):
    def __init__(
        self,
        app,
        dispatchers: list[str],
        *,
        app_name: str = "",
        curve: ClientSide | None = None,
        proc_id: str = "",
        threads: int = 1,
        **kwargs,
    ) -> None:
        super().__init__(app, [], **kwargs)
        # Said in every hello: which handlers are threads of one process (see threads.py).
        self.proc_id = proc_id or os.urandom(8).hex()
        self.threads = threads
        self.dispatcher_urls = dispatchers
        self.curve = curve
        # With CURVE a TCP connection is not yet a link: only a completed handshake (the
        # dispatcher knows our key, we know its key) is, so hello waits for that.
        self._up_event = zmq.EVENT_HANDSHAKE_SUCCEEDED if curve else zmq.EVENT_CONNECTED
        self.app_name = app_name
        self.links: list[Link] = []
        # (link, epoch, rid, message, body), not started yet, answered in this order. body:
        # None for Q, the StreamedBody of an S (the request waits until it is ready).
        self.pending: deque = deque()
        # Streamed bodies still arriving, by (link, rid).
        self.bodies: dict[tuple[Link, bytes], StreamedBody] = {}
        self._last_drained = 0.0
        self._retrying = False  # some link has a retry_at
        self._link: Link | None = None
        self._rid = b""
        self._epoch = 0
        self._done = True
        self.outbox_max = WORKER_OUTBOX_MAX

    # -- sockets ---------------------------------------------------------------------------

    def _open_sockets(self, ctx: zmq.Context) -> None:
        for url in self.dispatcher_urls:
            sock = ctx.socket(zmq.DEALER)
            # The last replies must still leave when we exit.
            sock.setsockopt(zmq.LINGER, self.linger_ms)
            sock.setsockopt(zmq.SNDTIMEO, SEND_SLICE_MS)
            # libzmq answers heartbeats on its own thread, even while the app is busy; a
            # dispatcher host that vanished is noticed and reconnected to.
            sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * HEARTBEAT_MS)
            sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)
            # Protocol v2: no frame is larger (a dispatcher that sends one is dropped, and
            # reconnected to, rather than letting it make us allocate without bound).
            sock.setsockopt(zmq.MAXMSGSIZE, wire_limit(self.curve is not None))
            events = self._up_event | zmq.EVENT_DISCONNECTED
            if self.curve is not None:
                sock.setsockopt(zmq.CURVE_SERVERKEY, self.curve.server_keys[url])
                sock.setsockopt(zmq.CURVE_PUBLICKEY, self.curve.keypair.public)
                sock.setsockopt(zmq.CURVE_SECRETKEY, self.curve.keypair.secret)
                events |= _HANDSHAKE_FAILED
            monitor = sock.get_monitor_socket(events)
            monitor.setsockopt(zmq.LINGER, 0)
            sock.connect(url)
            self.links.append(Link(url, sock, monitor))
        log.info(
            "serving %s via dispatcher %s%s",
            self.app_name,
            ", ".join(self.dispatcher_urls),
            f" (CURVE, key {self.curve.keypair.public.decode()})" if self.curve else "",
        )

    def _close_sockets(self) -> None:
        for link in self.links:
            with contextlib.suppress(zmq.ZMQError):
                link.sock.disable_monitor()
            link.monitor.close()
            link.sock.close()

    # -- the loop --------------------------------------------------------------------------

    def _serve(self, wake_r: socket.socket) -> None:
        self._setup_poller(wake_r)
        pending = self.pending
        run = self._run
        clock = time.monotonic
        single = self.links[0] if len(self.links) == 1 else None
        single_recv = partial(_backend_recv, single.sock) if single is not None else None
        while not self.stopping:
            if pending:
                body = pending[0][4]
                if body is not None and not body.ready:
                    # Its body is still arriving: keep taking frames (more of it, and
                    # everything else) until it is complete; requests keep their order.
                    if self.outbox:
                        self.push_quietly()
                    self._idle_wait()
                    continue
                if clock() - self._last_drained >= CANCEL_CHECK_AFTER:
                    self._wait(0)
                    if not pending:
                        continue
                if self.outbox:
                    self.push_quietly()  # (cancel answers): nothing waits while the app runs
                run(pending.popleft())
            elif single is not None:
                # The common case, under load: the next request is already here.
                try:
                    frame = single_recv(_NOBLOCK)
                except zmq.Again:
                    if self.outbox:
                        self.push_quietly()
                        continue
                    self._idle_wait()
                    continue
                self._on_frame(single, frame)
            else:
                if self.outbox:
                    self.push_quietly()
                    continue
                self._idle_wait()

    def _drain(self) -> None:
        """After a stop: say bye, serve what the dispatchers sent before they heard it."""
        self.push_quietly()  # (replies first: the bye must come after them)
        for link in self.links:
            if link.connected:
                try:
                    link.sock.send(BYE, _NOBLOCK)
                except zmq.ZMQError:
                    link.acked = True
            else:
                link.acked = True
        deadline = time.monotonic() + self.stop_timeout
        while True:
            if self.pending:
                body = self.pending[0][4]
                if body is None or body.ready:
                    self._run(self.pending.popleft())
                    continue
            self.push_quietly()
            # (A body still arriving is waited for, within the deadline, even after the
            # acknowledgements: its request was ours before the bye.)
            if not self.pending and all(link.acked for link in self.links):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("no bye acknowledgement from %s; exiting", self._unacked())
                return
            self._wait(min(left, 0.05) * 1000)

    def _unacked(self) -> str:
        return ", ".join(link.url for link in self.links if not link.acked)

    def _setup_poller(self, wake_r: socket.socket) -> None:
        poller = zmq.Poller()
        self._by_sock = {}
        for link in self.links:
            poller.register(link.sock, zmq.POLLIN)
            poller.register(link.monitor, zmq.POLLIN)
            self._by_sock[link.sock] = (link, False)
            self._by_sock[link.monitor] = (link, True)
        poller.register(wake_r, zmq.POLLIN)
        self._poller = poller
        self._wake = wake_r

    def _idle_wait(self) -> None:
        self._wait(IDLE_POLL_MS)
        if self.recycler is not None:
            self.recycler.idle_check()

    def _wait(self, timeout_ms: float) -> None:
        """Take everything that has arrived (waiting up to ``timeout_ms`` for something)."""
        for sock, _ in self._poller.poll(timeout_ms):
            found = self._by_sock.get(sock)
            if found is None:
                drain_fd(self._wake)
            elif found[1]:
                self._link_events(found[0])
            else:
                self._read_link(found[0])
        self._last_drained = now = time.monotonic()
        if self._retrying:
            for link in self.links:
                if link.retry_at and now >= link.retry_at:
                    # (Kept set: if this attempt fails silently too, the next one follows.)
                    link.retry_at = now + STALLED_RETRY
                    with contextlib.suppress(zmq.ZMQError):
                        link.sock.disconnect(link.url)
                    link.sock.connect(link.url)

    def _read_link(self, link: Link) -> None:
        recv = link.sock.recv
        for _ in range(64):
            try:
                frame = recv(_NOBLOCK)
            except zmq.Again:
                return
            self._on_frame(link, frame)

    def _on_frame(self, link: Link, frame: bytes) -> None:
        kind = frame[0] if frame else 0
        if kind == K_REQUEST:
            self.pending.append((link, link.epoch, frame[1:HEAD_LEN], frame[HEAD_LEN:], None))
        elif kind == K_UPLOAD_DATA:
            self._upload_data(link, frame[1:HEAD_LEN], frame[HEAD_LEN:])
        elif kind == K_STREAM_REQUEST:
            self._stream_request(link, frame[1:HEAD_LEN], frame[HEAD_LEN:])
        elif kind == K_UPLOAD_END:
            body = self.bodies.pop((link, frame[1:HEAD_LEN]), None)
            if body is not None:
                body.finish()
        elif kind in (K_CANCEL, K_ABORT):
            self._cancel(link, frame[1:HEAD_LEN])
        elif kind == K_BYE_ACK:
            link.acked = True
        elif kind == K_WHO:
            if self.stopping:
                link.acked = True  # it does not know us, so it will send nothing
            else:
                self._hello(link)
        else:
            log.debug("ignored a message from %s: %r", link.url, frame[:40])

    # -- streamed request bodies (protocol v2) --------------------------------------------

    def _stream_request(self, link: Link, rid: bytes, msg: bytes) -> None:
        body = StreamedBody(self.max_body_size)
        try:
            req = parse_message(msg)
        except Exception:  # (ProtocolError, or a parser bug: the frame loop must go on)
            body.finish()  # dispatch answers 400 when its turn comes; the rest is dropped
        else:
            body.check_announced(req)
            if req.body:
                self._take(link, rid, body, req.body)
        if not body.ready:
            self.bodies[link, rid] = body
        self.pending.append((link, link.epoch, rid, msg, body))

    def _upload_data(self, link: Link, rid: bytes, data: bytes) -> None:
        body = self.bodies.get((link, rid))
        if body is None:
            return  # aborted, refused or unknown: dropped
        self._take(link, rid, body, data)
        if body.ready:  # (refused or failed: nothing more is taken)
            del self.bodies[link, rid]

    def _take(self, link: Link, rid: bytes, body: StreamedBody, data: bytes) -> None:
        if body.feed(data):
            # The credit: the dispatcher lets Mongrel2 read this much more. None for a
            # refused body, so its client stops sending (at most UPLOAD_WINDOW is in flight).
            self._send_now(link, CONSUMED + rid + CONSUMED_LEN.pack(len(data)))

    def _send_now(self, link: Link, frame: bytes) -> None:
        """Send a control frame at once if the socket takes it, else queue it in order."""
        if not self.outbox:
            try:
                _backend_send(link.sock, frame, _NOBLOCK, True)
                return
            except zmq.Again:
                pass
        self.outbox.append((link, link.epoch, frame))

    def _cancel(self, link: Link, rid: bytes) -> None:
        body = self.bodies.pop((link, rid), None)
        if body is not None:
            body.close()
        for item in self.pending:
            if item[0] is link and item[2] == rid:
                self.pending.remove(item)
                if item[4] is not None:
                    item[4].close()
                self._send_frame(link, item[1], FINISHED + rid)
                if self._debug:
                    log.debug("request %s went to another handler", rid.hex())
                return
        # Not here any more: it already ran (the dispatcher drops the duplicate reply).

    def _link_events(self, link: Link) -> None:
        while True:
            try:
                frames = link.monitor.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return
            event, _ = monitor_event(frames)
            if event == self._up_event:
                self._new_epoch(link)
                link.connected = True
                self._set_retry(link, 0.0)
                link.refused = False
                if self.stopping:
                    link.acked = True  # a new dispatcher: it owes us nothing
                else:
                    self._hello(link)
                    log.info("connected to dispatcher %s", link.url)
            elif event == zmq.EVENT_DISCONNECTED:
                was_up = link.connected
                self._new_epoch(link)
                link.connected = False
                if not link.retry_at:
                    self._set_retry(link, time.monotonic() + STALLED_RETRY)
                if self.stopping:
                    link.acked = True
                # (A refused handshake also ends in a disconnect: that was never a link.)
                if was_up:
                    log.warning("lost dispatcher %s; reconnecting", link.url)
            elif event & _HANDSHAKE_FAILED:
                if self.stopping:
                    link.acked = True
                if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                    self._set_retry(link, time.monotonic() + REFUSED_RETRY)
                if not link.refused:
                    link.refused = True
                    log.warning(
                        "dispatcher %s refused the CURVE handshake (%s); retrying quietly",
                        link.url,
                        "our key is not authorised there, or its key is not the one we have"
                        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH
                        else "it does not speak CURVE, or the keys do not match",
                    )

    def _set_retry(self, link: Link, at: float) -> None:
        link.retry_at = at
        self._retrying = any(lk.retry_at for lk in self.links)

    def _new_epoch(self, link: Link) -> None:
        link.epoch += 1
        for key in [key for key in self.bodies if key[0] is link]:
            self.bodies.pop(key).close()
        stale = [item for item in self.pending if item[0] is link]
        for item in stale:
            if item[4] is not None:
                item[4].close()
        if stale:
            # The dispatcher that sent these has forgotten us and retried or failed them.
            self.pending = deque(item for item in self.pending if item[0] is not link)
            log.warning("dropped %d requests from a previous connection", len(stale))

    def _hello(self, link: Link) -> None:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "app": self.app_name,
            "version": __version__,
            "proc": self.proc_id,
            "threads": self.threads,
        }
        with contextlib.suppress(zmq.ZMQError):
            link.sock.send(hello_frame(info), _NOBLOCK)

    # -- one request -----------------------------------------------------------------------

    def _run(self, item: tuple) -> None:
        link, epoch, rid, msg, body = item
        if epoch != link.epoch:
            if body is not None:
                body.close()
            return
        self._link, self._rid, self._epoch, self._done = link, rid, epoch, False
        self.dispatch(msg, body)
        if not self._done:
            self._done = True
            self._send_frame(link, epoch, FINISHED + rid)
        if self.outbox:
            self.push_quietly()

    def max_payload(self, prefix: bytes) -> int:
        return MAX_FRAME - HEAD_LEN - len(prefix)

    def send(self, data: bytes) -> None:
        if self._done:
            log.debug("dropped a reply message after the response was finished")
            return
        if self._armed:
            self.arm_timeout()  # the request makes progress
        self._send_frame(self._link, self._epoch, MORE + self._rid + data)

    def send_last(self, data: bytes) -> None:
        if self._done:
            log.debug("dropped a reply message after the response was finished")
            return
        self._done = True
        if self._armed:
            self.arm_timeout()
        self._send_frame(self._link, self._epoch, DONE + self._rid + data)

    def _send_frame(self, link: Link, epoch: int, data: bytes) -> None:
        """Queue a message for a dispatcher; it leaves when its request is done (``push``)."""
        outbox = self.outbox
        outbox.append((link, epoch, data))
        if len(outbox) >= self.outbox_max:
            self.push()

    def push(self) -> None:
        """Send the queued messages in order, waiting (bounded) while a dispatcher is behind."""
        outbox = self.outbox
        if not outbox:
            return
        items = outbox[:]
        outbox.clear()
        for link, epoch, data in items:
            if link.epoch != epoch:
                continue  # the connection the request came on is gone, and with it the request
            try:
                _backend_send(link.sock, data, _NOBLOCK, len(data) < COPY_BELOW)
            except zmq.Again:
                self._send_slowly_to(link, epoch, data)

    def _send_slowly_to(self, link: Link, epoch: int, data: bytes) -> None:
        copy = len(data) < COPY_BELOW
        started = time.monotonic()
        while link.epoch == epoch:
            try:
                _backend_send(link.sock, data, 0, copy)  # (SNDTIMEO: blocks for a slice)
                return
            except zmq.Again:
                pass
            now = time.monotonic()
            if self.stopping and now > self._stop_deadline:
                raise SendTimeout("stopping and the dispatcher is not taking replies")
            if now - started > SEND_TIMEOUT:
                raise SendTimeout(f"the dispatcher took no reply for {SEND_TIMEOUT:.0f}s")
