"""Which handler gets which request: the dispatcher's bookkeeping, without sockets.

Scheduling, per handler ("worker"):

- A worker with no request is *free*; free workers are used least-recently-freed first.
- When no worker is free, a GET/HEAD may wait in a busy worker's own queue (up to
  ``prefetch`` of them), so the worker never idles for a round trip under load. The worker
  whose current request started most recently is chosen (a long-running one is probably
  slow). Other methods wait here until a worker is free.
- If a free worker appears while a request has waited ``steal_after`` in another worker's
  queue, the request moves to the free worker and the first worker is told to skip it: a
  slow request does not hold up fast ones while another worker is free. (If the first
  worker had already started it, it runs twice: hence GET/HEAD only. Its reply is dropped.)
- A worker that is gone has its requests retried (GET/HEAD with no reply bytes sent yet),
  answered 502 (nothing sent yet), or their connections closed (a reply was under way).
  A request whose handler vanishes while running it RETRY_LIMIT + 1 times is answered 502:
  it is probably what kills them, and would otherwise go round until it expires.
- A request that no worker has started within ``queue_timeout`` of its arrival is answered
  503 (``expire``): a client learns at once that nobody can serve it, instead of hanging.

Trust and order (the "front trust boundary"):

- A reply must start with exactly the Mongrel2 address of the request it answers (the
  request's reply prefix, one connection id); anything else is dropped and the request failed.
- One request per client connection is in flight at a time: Mongrel2 hands over pipelined
  requests at once, and two handlers would answer them out of order. Later ones wait in a
  per-connection FIFO (``conns``) until the previous one is finished.
- A started request that shows no progress for ``request_timeout`` is answered 504 and its
  worker gets no more work (the handler kills itself a little later), nor do the other
  threads of its process (``--threads``: workers whose hellos name the same ``proc``, under
  the same CURVE key), which end with it.
- Streamed uploads (Mongrel2 ``upload.stream``) flow with credits: Mongrel2 reads at most
  UPLOAD_WINDOW bytes ahead of what the handler has consumed.
"""

import logging
import os
import time
from collections import deque

from ringmaster_handler.credit import (
    ABORT,
    BYE_ACK,
    CANCEL,
    CONSUMED_LEN,
    DISCONNECT_TAIL,
    HEAD_LEN,
    K_BYE,
    K_CONSUMED,
    K_DONE,
    K_FINISHED,
    K_HELLO,
    K_MORE,
    MAX_FRAME,
    REQUEST,
    STREAM_FIRST,
    STREAM_MORE,
    STREAM_REQUEST,
    UPLOAD_DATA,
    UPLOAD_END,
    UPLOAD_WINDOW,
    WHO,
    body_of,
    content_length_of,
    ctl_message,
    describe_peer,
    headers_span,
    is_idempotent,
    parse_hello,
    reply_prefix_of,
    rid_bytes,
    upload_stream_done,
    upload_stream_kind,
)
from ringmaster_handler.ratelimit import RateLimitedLog
from ringmaster_handler.response import simple_response

log = logging.getLogger("ringmaster_handler.dispatcher")

# How often an unknown peer is asked to say hello again (it may be sending stale replies).
WHO_INTERVAL = 1.0
# Warnings about misbehaving handlers or refused hellos: at most one per this many seconds.
WARN_EVERY = 10.0
# Measured on Mongrel2 1.12.2: a cancel processed right after a response drops that response
# (the connection is closed before its deliver task runs), and a cancel after the close
# message is ignored (the upload task then sleeps on credits until the reaper). So a refused
# upload gets its response now and the cancel this much later.
CANCEL_DELAY = 0.05
# Body bytes per U frame: a frame is at most MAX_FRAME bytes with its kind and request id.
UPLOAD_CHUNK = MAX_FRAME - HEAD_LEN
# Requests one client connection may have pipelined behind the one in flight. Mongrel2 reads
# them all at once, so without a bound one connection could fill the dispatcher's memory;
# beyond it the connection is closed (answering out of turn would break the order).
PIPELINE_LIMIT = 256
# Retries of one request after the handler running it vanished: it runs in at most
# RETRY_LIMIT + 1 handlers. A request that kills every handler it reaches would otherwise go
# round, taking them down one after another, until it expires.
RETRY_LIMIT = 2
# The status logged for a request whose client went away before its response (nginx's).
CLIENT_GONE = 499
# Mongrel2's stream key is looked for this far into a message before parsing its headers.
_STREAM_SCAN = 16384
_STREAM_KEY = b"UPLOAD_STREAM"
_UPLOAD_START = b"x-mongrel2-upload-start"
_UPLOAD_DONE = b"x-mongrel2-upload-done"


def cancel_message(prefix: bytes) -> bytes:
    """The ctl message that ends a streamed upload in Mongrel2 and disconnects its client.

    A cancel alone disconnects the client but leaves Mongrel2's upload task asleep: it only
    looks at the connection when it has credits to read with (measured on 1.12.2 through
    the control port's task list). One credit in the same message (applied before the
    cancel) wakes it to find the connection closed, and it ends.
    """
    return ctl_message(prefix, credits=1, cancel=True)


class Upload:
    """A streamed request body (Mongrel2 ``upload.stream``) that has not ended yet."""

    __slots__ = ("acked", "granted", "job", "msg", "prefix", "received")

    def __init__(self, prefix: bytes, msg: bytes, first: int):
        self.prefix = prefix
        self.msg = msg  # the first message (headers + first body bytes)
        self.job: Job | None = None  # set when a worker takes it
        self.received = first  # body bytes Mongrel2 sent us
        # Bytes the handler may hold unconsumed: the first message's, then credits granted.
        self.granted = first
        self.acked = 0  # bytes the handler said it consumed (K)


class Job:
    """One request handed to a worker."""

    __slots__ = (
        "active_at",
        "arrived",
        "msg",
        "prefix",
        "replied",
        "rid",
        "sent_at",
        "stolen",
        "upload",
        "waiting",
        "worker",
    )

    def __init__(
        self,
        msg: bytes,
        arrived: float,
        rid: bytes,
        worker: "Worker",
        now: float,
        waiting: bool,
        prefix: bytes,
    ):
        self.msg = msg
        self.prefix = prefix  # every reply must start with it (also the connection's key)
        self.arrived = arrived  # when Mongrel2 handed it to us (kept across retries)
        self.rid = rid
        self.worker = worker
        self.sent_at = now
        self.waiting = waiting  # queued behind another request in the worker (not started)
        # Given to another worker, answered by us, or aborted: this one's replies are
        # dropped, and its end does not end the request.
        self.stolen = False
        self.replied = False  # some reply bytes went to Mongrel2
        # When the running request last made progress (start, reply message, end of its
        # body); None while it waits or its streamed body is still coming.
        self.active_at: float | None = None if waiting else now
        self.upload: Upload | None = None


class Worker:
    """A handler process as seen through one connection."""

    __slots__ = (
        "fd",
        "gone",
        "ident",
        "in_free",
        "jobs",
        "key",
        "name",
        "proc",
        "started",
        "stopping",
        "timed_out",
        "version",
    )

    def __init__(self, ident: bytes, fd: int, name: str, now: float, version: int = 1):
        self.ident = ident
        self.fd = fd
        self.name = name
        self.jobs: dict[bytes, Job] = {}  # by request id, in the order the worker got them
        self.started = now  # when its current request started (roughly)
        self.stopping = False  # said bye, or timed out: no more work
        self.timed_out = False
        self.gone = False
        self.in_free = False
        self.version = version  # protocol version from its hello (streamed uploads need 2)
        self.key: str | None = None  # its CURVE key's name (ZAP User-Id), if any
        # (CURVE key name, the hello's proc token): the same for the threads of one process.
        self.proc: tuple | None = None


def _version_of(info: dict) -> int:
    v = info.get("v", 1)
    return v if type(v) is int else 1


def _proc_of(info: dict) -> str | None:
    proc = info.get("proc")
    return proc if type(proc) is str and 0 < len(proc) <= 64 else None


def _path_of(msg: bytes) -> bytes:
    """The request's path (client-controlled: log it with %r only)."""
    sp1 = msg.find(b" ")
    sp2 = msg.find(b" ", sp1 + 1)
    sp3 = msg.find(b" ", sp2 + 1, sp2 + 2 + 2048)
    return msg[sp2 + 1 : sp3] if 0 < sp1 < sp2 < sp3 else b"?"


def _stream_frames(rid: bytes, msg: bytes) -> tuple[bytes, list]:
    """The S frame for a streamed request's first message, and U pieces of its body that do
    not fit in it (Mongrel2 puts up to limits.content_length body bytes in that message)."""
    if HEAD_LEN + len(msg) <= MAX_FRAME:
        return STREAM_REQUEST + rid + msg, []
    span = headers_span(msg)
    body = body_of(msg)
    head = msg[: span[1] + 1]  # through the headers' closing "," or "}"
    keep = max(0, MAX_FRAME - HEAD_LEN - len(head) - 16)
    first = STREAM_REQUEST + rid + head + b"%d:" % keep + bytes(body[:keep]) + b","
    more = [body[at : at + UPLOAD_CHUNK] for at in range(keep, len(body), UPLOAD_CHUNK)]
    return first, more


class Scheduler:
    """Who gets which request: the dispatcher's bookkeeping, without any sockets.

    Subclasses provide the outputs (``_to_m2``, ``_to_worker``) and feed the inputs
    (``on_request``, ``on_worker_frame``, ``on_disconnect``, ``steal``, ``expire``,
    ``check_timeouts``, ``send_cancels``).
    """

    def __init__(
        self,
        *,
        prefetch: int = 8,
        steal_after: float = 0.01,
        queue_limit: int = 10_000,
        queue_timeout: float = 0.0,
        request_timeout: float = 0.0,
        max_body_size: int = 0,
        max_handlers_per_key: int = 64,
        clock=time.monotonic,
    ) -> None:
        self.depth = 1 + max(0, prefetch)
        self.refill_at = self.depth // 2
        self.steal_after = steal_after
        self.queue_limit = queue_limit
        self.queue_timeout = queue_timeout  # 0: requests wait for a worker as long as it takes
        self.request_timeout = request_timeout  # 0: a started request may take forever
        self.max_body_size = max_body_size  # 0: no limit (streamed uploads only)
        self.max_handlers_per_key = max_handlers_per_key  # 0: no limit
        self.clock = clock

        self.workers: dict[bytes, Worker] = {}
        self.by_fd: dict[int, Worker] = {}
        self.free: deque[Worker] = deque()
        # Requests no worker has taken yet: (message, arrival time, reply prefix). Retries go
        # back in front with their first arrival time, so the queue stays ordered by arrival.
        self.queue: deque[tuple[bytes, float, bytes]] = deque()
        self.waiting = 0  # jobs queued inside busy workers, not started
        self.backlog: deque = deque()  # replies Mongrel2 has not taken yet
        # Client connections (by reply prefix) with a request in flight -> the requests that
        # came after it on the same connection (None: none yet), in order.
        self.conns: dict[bytes, deque | None] = {}
        self.uploads: dict[bytes, Upload] = {}  # streamed bodies still coming, by prefix
        self.cancels: deque[tuple[float, bytes]] = deque()  # (due, prefix) ctl cancels
        # Requests whose running handler vanished: prefix -> (arrival time, how many times).
        self.lost_with: dict[bytes, tuple[float, int]] = {}
        self.per_key: dict[str, int] = {}  # connected workers per CURVE key name
        self.warn = RateLimitedLog(log, WARN_EVERY, clock)
        # Request ids start at a random point so a restarted dispatcher never mistakes a
        # stale reply for one of its own requests.
        self._next_rid = int.from_bytes(os.urandom(8), "little")
        self._who_asked: dict[bytes, float] = {}
        # The access log and metrics (observe.py), when the dispatcher has either.
        self.observer = None
        self.stats = {
            "requests": 0,
            "replies": 0,
            "steals": 0,
            "retries": 0,
            "failed": 0,
            "rejected": 0,
            "expired": 0,
            "stray": 0,
            "forged": 0,
            "timeouts": 0,
            "too_large": 0,
            "aborted": 0,
            "refused": 0,
        }

    # -- inputs ---------------------------------------------------------------------------

    def on_request(self, msg: bytes) -> None:
        """A message from Mongrel2."""
        if msg.endswith(DISCONNECT_TAIL):
            self._client_gone(msg)
            return
        prefix = reply_prefix_of(msg)
        if prefix is None:
            self.stats["stray"] += 1
            log.debug("dropped a malformed message from Mongrel2: %r", msg[:80])
            return
        if self.uploads:
            upload = self.uploads.get(prefix)
            if upload is not None:
                self._upload_more(upload, msg)
                return
        conns = self.conns
        if prefix in conns:
            # Pipelined behind a request of the same connection: its turn comes later.
            later = conns[prefix]
            if later is None:
                later = conns[prefix] = deque()
            elif len(later) >= PIPELINE_LIMIT:
                self.stats["rejected"] += 1
                self.warn.warning(
                    "pipeline",
                    "closed a client connection with more than %d pipelined requests",
                    PIPELINE_LIMIT,
                )
                self._close_prefix(prefix)
                return
            later.append(msg)
            return
        conns[prefix] = None
        self._admit(msg, prefix)

    def _admit(self, msg: bytes, prefix: bytes) -> None:
        """A request whose connection has nothing else in flight: schedule it."""
        if self.observer is not None:
            self.observer.begin(prefix, msg)
        if msg.find(_STREAM_KEY, 0, _STREAM_SCAN) >= 0 or len(msg) > _STREAM_SCAN:
            kind = upload_stream_kind(msg)
            if kind == STREAM_FIRST:
                self._stream_first(msg, prefix)
                return
            if kind == STREAM_MORE:
                # The rest of an upload we already gave up on (cancelled or refused).
                self.stats["stray"] += 1
                if self.observer is not None:
                    self.observer.drop(prefix)
                self._release(prefix)
                return
            if len(msg) > UPLOAD_CHUNK:
                # No frame may exceed MAX_FRAME (handlers enforce it with MAXMSGSIZE): a
                # body this big needs upload.stream, or a smaller limits.content_length.
                self.stats["requests"] += 1
                self.stats["too_large"] += 1
                self.warn.warning(
                    "too-large",
                    "answered 413 to a request of %d bytes (more than a frame can hold; "
                    "use upload.stream or a limits.content_length below %d)",
                    len(msg), UPLOAD_CHUNK - 4096,
                )  # fmt: skip
                self._answer_prefix(prefix, 413)
                return
        self.stats["requests"] += 1
        now = self.clock()
        free = self.free
        while free:
            w = free.popleft()
            w.in_free = False
            if not (w.gone or w.stopping or w.jobs):
                w.started = now
                self._send_job(w, msg, now, False, prefix)
                return
        queue = self.queue
        if not queue and self.depth > 1 and is_idempotent(msg):
            w = self._prefetch_target()
            if w is not None:
                self._send_job(w, msg, now, True, prefix)
                return
        if len(queue) >= self.queue_limit:
            self.stats["rejected"] += 1
            self._answer_prefix(prefix, 503)
            return
        queue.append((msg, now, prefix))

    def on_worker_frame(self, ident: bytes, frame: bytes, fd: int = -1, key: str | None = None):
        """One message from a handler (``ident`` is its ROUTER routing id, ``key`` the name
        of its CURVE key)."""
        w = self.workers.get(ident)
        if w is None:
            self._from_stranger(ident, frame, fd, key)
            return
        kind = frame[0] if frame else 0
        if kind in (K_DONE, K_FINISHED):
            job = w.jobs.pop(frame[1:HEAD_LEN], None)
            if job is None:
                self._stray(w, frame)
                return
            if job.waiting:
                job.waiting = False
                self.waiting -= 1
            if not job.stolen:
                if kind == K_DONE:
                    if frame.startswith(job.prefix, HEAD_LEN):
                        # (The close message of a reply that beat its streamed body is left
                        # to the cancel: Mongrel2 ignores a cancel after a close.)
                        if not (
                            job.upload is not None and len(frame) == HEAD_LEN + len(job.prefix)
                        ):
                            self._to_m2(frame[HEAD_LEN:])
                        if self.observer is not None:
                            self.observer.reply(job.prefix, frame)
                        self.stats["replies"] += 1
                        self._finished(job)
                    else:
                        self._forged(w, job, frame)
                elif job.replied or self._may_finish_silently(job):
                    self._finished(job)
                else:
                    # The handler gave up on it without a word: the client must not hang.
                    job.stolen = True
                    self.stats["failed"] += 1
                    self._answer_prefix(job.prefix, 502)
            self._next_for(w)
        elif kind == K_MORE:
            job = w.jobs.get(frame[1:HEAD_LEN])
            if job is None:
                self._stray(w, frame)
            elif not job.stolen:
                if frame.startswith(job.prefix, HEAD_LEN):
                    job.replied = True
                    job.active_at = self.clock()
                    self._to_m2(frame[HEAD_LEN:])
                    if self.observer is not None:
                        self.observer.reply(job.prefix, frame)
                else:
                    self._forged(w, job, frame)
        elif kind == K_CONSUMED:
            self._consumed(w, frame)
        elif kind == K_HELLO:
            w.name = describe_peer(parse_hello(frame))  # said hello again: nothing changes
        elif kind == K_BYE:
            self._bye(w)
        else:
            self._stray(w, frame)

    def on_disconnect(self, fd: int) -> None:
        """The connection on ``fd`` is gone (process exited, host died, heartbeat timeout)."""
        w = self.by_fd.get(fd)
        if w is not None:
            self.on_worker_gone(w)

    def on_worker_gone(self, w: Worker) -> None:
        """``w``'s connection is gone (looked up by its fd before other messages were read)."""
        self._forget(w, "disconnected")

    def send_cancels(self, everything: bool = False) -> None:
        """Send the ctl cancels that are due (see CANCEL_DELAY); all of them when stopping."""
        cancels = self.cancels
        now = float("inf") if everything else self.clock()
        while cancels and cancels[0][0] <= now:
            self._to_m2(cancel_message(cancels.popleft()[1]))

    def timeout_due(self) -> float | None:
        """When the next started request would time out (clock time), or None."""
        if not self.request_timeout:
            return None
        due = None
        for w in self.workers.values():
            job = self._running(w)
            if job is not None and (due is None or job.active_at < due):
                due = job.active_at
        return None if due is None else due + self.request_timeout

    def check_timeouts(self) -> None:
        """504 for started requests that made no progress for ``request_timeout``."""
        if not self.request_timeout:
            return
        cutoff = self.clock() - self.request_timeout
        for w in list(self.workers.values()):
            job = self._running(w)
            if job is not None and job.active_at <= cutoff:
                self._timed_out(w, job)

    def steal_due(self) -> float | None:
        """When the next steal could happen (clock time), or None if none can."""
        if not (self.waiting and self.free):
            return None
        job = self._oldest_waiting()
        return None if job is None else job.sent_at + self.steal_after

    def steal(self) -> None:
        """Move requests that waited too long in a busy worker to free workers."""
        now = self.clock()
        while self.waiting and self.free:
            job = self._oldest_waiting()
            if job is None or now - job.sent_at < self.steal_after:
                return
            thief = self._pop_free()
            if thief is None:
                return
            job.stolen = True
            job.waiting = False
            self.waiting -= 1
            self.stats["steals"] += 1
            owner = job.worker
            log.debug("moving a request that waited %.3fs in %s to %s",
                      now - job.sent_at, owner.name, thief.name)  # fmt: skip
            self._to_worker(owner.ident, CANCEL + job.rid)
            thief.started = now
            self._send_job(thief, job.msg, job.arrived, False, job.prefix)

    def expire_due(self) -> float | None:
        """When the next request would expire (clock time), or None if none can."""
        if not self.queue_timeout:
            return None
        due = None
        if self.queue:
            due = self.queue[0][1]
        if self.waiting:
            job = self._oldest_waiting(by="arrived")
            if job is not None and (due is None or job.arrived < due):
                due = job.arrived
        return None if due is None else due + self.queue_timeout

    def expire(self) -> None:
        """Answer 503 to requests no worker has started within ``queue_timeout``."""
        if not self.queue_timeout:
            return
        cutoff = self.clock() - self.queue_timeout
        expired = 0
        queue = self.queue
        while queue and queue[0][1] <= cutoff:
            self._answer_prefix(queue.popleft()[2], 503)
            expired += 1
        # GET/HEAD waiting behind a long request in a busy worker: the worker is told to
        # skip them, as after a steal, and any reply it sends anyway is dropped.
        while self.waiting:
            job = self._oldest_waiting(by="arrived")
            if job is None or job.arrived > cutoff:
                break
            job.stolen = True
            job.waiting = False
            self.waiting -= 1
            self._to_worker(job.worker.ident, CANCEL + job.rid)
            self._answer_prefix(job.prefix, 503)
            expired += 1
        if expired:
            self.stats["expired"] += expired
            log.warning(
                "answered 503 to %d requests no handler started within %gs (%d connected)",
                expired, self.queue_timeout, len(self.workers),
            )  # fmt: skip

    def pending(self) -> int:
        """Requests not finished yet: queued here or held by workers."""
        return len(self.queue) + sum(
            1 for w in self.workers.values() for j in w.jobs.values() if not j.stolen
        )

    # -- internals ------------------------------------------------------------------------

    def _send_job(self, w: Worker, msg: bytes, arrived: float, waiting: bool, prefix: bytes):
        n = self._next_rid
        self._next_rid = n + 1
        rid = rid_bytes(n)
        upload = self._stream_of(msg, prefix) if self.uploads else None
        rest = None
        if upload is None:
            frame = REQUEST + rid + msg
        else:
            frame, rest = _stream_frames(rid, msg)
        if not self._to_worker(w.ident, frame):
            # It vanished between its last message and now: the request goes back in line.
            self.queue.appendleft((msg, arrived, prefix))
            self._forget(w, "unreachable")
            self._offer()
            return
        job = Job(msg, arrived, rid, w, self.clock(), waiting, prefix)
        w.jobs[rid] = job
        if waiting:
            self.waiting += 1
        if upload is not None:
            # Its deadline counts from the end of the body (E), not from now.
            job.active_at = None
            job.upload = upload
            upload.job = job
            upload.granted += UPLOAD_WINDOW
            for piece in rest or ():
                self._to_worker(w.ident, UPLOAD_DATA + rid + piece)
            self._to_m2(ctl_message(prefix, credits=UPLOAD_WINDOW))

    def _finished(self, job: Job) -> None:
        """``job``'s request is over: its connection's next request may go."""
        if self.observer is not None:
            self.observer.end(job.prefix)
        if job.upload is not None and self.uploads.get(job.prefix) is job.upload:
            # Answered before its whole body arrived: Mongrel2's upload task waits for
            # credits, and only a cancel ends it (after the reply has left: CANCEL_DELAY).
            del self.uploads[job.prefix]
            self.cancels.append((self.clock() + CANCEL_DELAY, job.prefix))
            self.conns.pop(job.prefix, None)
            return
        self._release(job.prefix)

    def _release(self, prefix: bytes) -> None:
        if self.lost_with:
            self.lost_with.pop(prefix, None)
        later = self.conns.pop(prefix, None)
        if later:
            msg = later.popleft()
            self.conns[prefix] = later or None
            self._admit(msg, prefix)

    def _may_finish_silently(self, job: Job) -> bool:
        # A spooled upload's first notice (x-mongrel2-upload-start without -done) is
        # answered with F: the real request is the second notice.
        msg = job.msg
        return msg.find(_UPLOAD_START) >= 0 and msg.find(_UPLOAD_DONE) < 0

    def _forged(self, w: Worker, job: Job, frame: bytes) -> None:
        """A reply that does not start with its request's address: drop it, fail the request."""
        self.stats["forged"] += 1
        end = frame.find(b", ", HEAD_LEN, HEAD_LEN + 300)
        self.warn.warning(
            "forged",
            "dropped a reply from handler %s addressed to %r instead of %r; request failed",
            w.name, frame[HEAD_LEN : end + 2 if end > 0 else HEAD_LEN + 80], job.prefix,
        )  # fmt: skip
        job.stolen = True
        self.stats["failed"] += 1
        if job.replied:
            self._close_prefix(job.prefix)
        else:
            self._answer_prefix(job.prefix, 502)

    def _next_for(self, w: Worker) -> None:
        """``w`` finished a request: its next one has started; give it more if there is."""
        jobs = w.jobs
        if jobs:
            first = next(iter(jobs.values()))
            if first.waiting:
                first.waiting = False
                self.waiting -= 1
                first.active_at = self.clock()
            w.started = self.clock()
        if w.stopping or w.gone:
            return
        # Refilled in bursts, not one by one: several requests then travel together, which
        # saves wake-ups on both sides.
        if self.queue and len(jobs) <= self.refill_at:
            self._top_up(w)
        if not jobs and not w.in_free:
            w.in_free = True
            self.free.append(w)
            if self.waiting:
                self.steal()

    def _top_up(self, w: Worker) -> None:
        queue, jobs, depth = self.queue, w.jobs, self.depth
        while queue and len(jobs) < depth:
            msg, arrived, prefix = queue[0]
            if jobs and not is_idempotent(msg):
                return  # only a free worker may take it
            if w.version < 2 and self.uploads and self._stream_of(msg, prefix) is not None:
                self._top_up_old(w)
                return
            queue.popleft()
            if not jobs:
                w.started = self.clock()
            self._send_job(w, msg, arrived, bool(jobs), prefix)
            if w.gone:
                return

    def _top_up_old(self, w: Worker) -> None:
        """A protocol 1 worker, free, with a streamed upload first in line: it takes the
        first request it can serve (rolling upgrades; streamed uploads are rare)."""
        for i, (msg, arrived, prefix) in enumerate(self.queue):
            if self._stream_of(msg, prefix) is None:
                del self.queue[i]
                w.started = self.clock()
                self._send_job(w, msg, arrived, False, prefix)
                return

    def _stream_of(self, msg: bytes, prefix: bytes) -> Upload | None:
        """The upload whose first message ``msg`` is, if it streams."""
        upload = self.uploads.get(prefix)
        return upload if upload is not None and upload.msg is msg else None

    def _prefetch_target(self) -> Worker | None:
        best = None
        depth = self.depth
        for w in self.workers.values():
            n = len(w.jobs)
            if 0 < n < depth and not w.stopping and (best is None or w.started > best.started):
                best = w
        return best

    def _pop_free(self) -> Worker | None:
        free = self.free
        while free:
            w = free.popleft()
            w.in_free = False
            if not (w.gone or w.stopping or w.jobs):
                return w
        return None

    def _pop_free_v2(self) -> Worker | None:
        """A free worker that speaks protocol 2 (streamed uploads), if any."""
        for w in self.free:
            if w.version >= 2 and not (w.gone or w.stopping or w.jobs):
                self.free.remove(w)
                w.in_free = False
                return w
        return None

    def _oldest_waiting(self, by: str = "sent_at") -> Job | None:
        oldest = None
        for w in self.workers.values():
            if len(w.jobs) > 1:
                for job in w.jobs.values():
                    if job.waiting and (oldest is None or getattr(job, by) < getattr(oldest, by)):
                        oldest = job
        return oldest

    def _running(self, w: Worker) -> Job | None:
        """The request ``w`` is running, if it is one a client waits for and it has started."""
        for job in w.jobs.values():
            if job.stolen or job.waiting or job.active_at is None:
                return None
            return job
        return None

    def _timed_out(self, w: Worker, job: Job) -> None:
        self.stats["timeouts"] += 1
        self.stats["failed"] += 1
        job.stolen = True
        if job.replied:
            self._close_prefix(job.prefix)
        else:
            self._answer_prefix(job.prefix, 504)
        moved = self._take_back_waiting(w)
        w.stopping = True
        w.timed_out = True
        # The process ends by SIGALRM soon, with all its threads: none gets more work.
        siblings = self._siblings(w)
        for other in siblings:
            moved += self._take_back_waiting(other)
            other.stopping = True
            other.timed_out = True
        log.warning(
            "request %r made no progress for %gs in handler %s: answered %s; the handler "
            "gets no more work (%d other threads of its process neither; %d waiting "
            "requests moved)",
            _path_of(job.msg), self.request_timeout, w.name,
            "by closing the connection" if job.replied else "504", len(siblings), moved,
        )  # fmt: skip
        self._offer()

    def _siblings(self, w: Worker) -> list[Worker]:
        """The other threads of ``w``'s process that still take work."""
        if w.proc is None:
            return []
        return [
            other
            for other in self.workers.values()
            if other.proc == w.proc and other is not w and not other.stopping
        ]

    def _take_back_waiting(self, w: Worker) -> int:
        """Cancel the requests waiting inside ``w`` and put them back in line, in order."""
        back = []
        for job in w.jobs.values():
            if job.waiting:
                job.waiting = False
                self.waiting -= 1
                job.stolen = True
                self._to_worker(w.ident, CANCEL + job.rid)
                back.append((job.msg, job.arrived, job.prefix))
        if back:
            self.queue.extendleft(reversed(back))
        return len(back)

    def _offer(self) -> None:
        """Hand queued requests to free workers (after workers joined or requests returned)."""
        while self.queue:
            w = self._pop_free()
            if w is None:
                return
            self._top_up(w)
            if not w.jobs and not w.gone:
                w.in_free = True
                self.free.append(w)
                return

    # -- streamed uploads -----------------------------------------------------------------

    def _stream_first(self, msg: bytes, prefix: bytes) -> None:
        """The headers (and first bytes) of a body Mongrel2 streams: a request like a POST,
        for a protocol 2 worker; Mongrel2 reads more only when we grant credits."""
        self.stats["requests"] += 1
        body = body_of(msg)
        first = 0 if body is None else len(body)
        limit = self.max_body_size
        length = content_length_of(msg)
        if limit and max(length or 0, first) > limit:
            self.stats["too_large"] += 1
            self.uploads[prefix] = Upload(prefix, msg, first)  # so the answer cancels it
            self._answer_prefix(prefix, 413)
            return
        self.uploads[prefix] = Upload(prefix, msg, first)
        w = self._pop_free_v2()
        if w is not None:
            w.started = self.clock()
            self._send_job(w, msg, self.clock(), False, prefix)
            return
        if len(self.queue) >= self.queue_limit:
            self.stats["rejected"] += 1
            self._answer_prefix(prefix, 503)
            return
        self.queue.append((msg, self.clock(), prefix))

    def _upload_more(self, upload: Upload, msg: bytes) -> None:
        """A continuation message of a streamed body: pass its bytes on to the worker."""
        body = body_of(msg)
        job = upload.job
        if body is None or job is None or job.stolen:
            # Mongrel2 sends nothing before the credits granted with the job; a malformed
            # message leaves the body incomplete, which only a cancel can end.
            self.stats["failed"] += 1
            if job is not None:
                job.stolen = True
                self._to_worker(job.worker.ident, ABORT + job.rid)
            self._answer_prefix(upload.prefix, 400 if job is None or not job.replied else 0)
            return
        n = len(body)
        upload.received += n
        if self.observer is not None:
            self.observer.upload_bytes += n
        if self.max_body_size and upload.received > self.max_body_size:
            self._refuse_body(upload)
            return
        ident, rid = job.worker.ident, job.rid
        for at in range(0, n, UPLOAD_CHUNK):
            if not self._to_worker(ident, UPLOAD_DATA + rid + body[at : at + UPLOAD_CHUNK]):
                self._forget(job.worker, "unreachable")
                return
        if upload_stream_done(msg):
            del self.uploads[upload.prefix]
            self._to_worker(ident, UPLOAD_END + rid)
            if not job.waiting:
                job.active_at = self.clock()

    def _refuse_body(self, upload: Upload) -> None:
        """The body grew past --max-body-size: 413 (unless a reply is under way), cancel the
        upload in Mongrel2, and tell the worker to drop it."""
        self.stats["too_large"] += 1
        job = upload.job
        replied = False
        if job is not None:
            replied = job.replied
            job.stolen = True  # the worker answers F; anything else it sends is dropped
            self._to_worker(job.worker.ident, ABORT + job.rid)
        log.info(
            "refused a streamed body of more than %d bytes for %r",
            self.max_body_size, _path_of(upload.msg),
        )  # fmt: skip
        self._answer_prefix(upload.prefix, 0 if replied else 413)

    def _consumed(self, w: Worker, frame: bytes) -> None:
        """K: the handler consumed n body bytes; let Mongrel2 read as much more."""
        job = w.jobs.get(frame[1:HEAD_LEN])
        if job is None or len(frame) != HEAD_LEN + CONSUMED_LEN.size:
            self._stray(w, frame)
            return
        upload = job.upload
        if job.stolen or upload is None or self.uploads.get(job.prefix) is not upload:
            return  # the body is complete or refused: no more credits
        (n,) = CONSUMED_LEN.unpack_from(frame, HEAD_LEN)
        # Never more than it was given: a handler cannot make Mongrel2 read past the window.
        n = min(n, upload.granted - upload.acked)
        if n > 0:
            upload.acked += n
            upload.granted += n
            self._to_m2(ctl_message(job.prefix, credits=n))

    def _client_gone(self, msg: bytes) -> None:
        """Mongrel2's disconnect notice: drop what waits for this connection."""
        prefix = reply_prefix_of(msg)
        if prefix is None:
            return
        later = self.conns.get(prefix)
        if later:
            later.clear()  # the request in flight still ends normally
        upload = self.uploads.pop(prefix, None) if self.uploads else None
        if upload is None:
            return
        self.stats["aborted"] += 1
        job = upload.job
        if job is None:
            # Still waiting for a worker: nobody will ever want it.
            for i, item in enumerate(self.queue):
                if item[0] is upload.msg:
                    del self.queue[i]
                    break
            self.conns.pop(prefix, None)
            if self.observer is not None:
                self.observer.end(prefix, CLIENT_GONE)
        elif not job.stolen:
            # The worker answers F, which is then legitimate; its replies are dropped.
            job.stolen = True
            self._to_worker(job.worker.ident, ABORT + job.rid)
            self.conns.pop(prefix, None)
            if self.observer is not None:
                self.observer.end(prefix, CLIENT_GONE)

    # -- workers coming and going ---------------------------------------------------------

    def _from_stranger(self, ident: bytes, frame: bytes, fd: int, key: str | None) -> None:
        if frame[:1] == b"H":
            info = parse_hello(frame)
            name = describe_peer(info)
            cap = self.max_handlers_per_key
            if key and cap and self.per_key.get(key, 0) >= cap:
                self.stats["refused"] += 1
                self.warn.warning(
                    "per-key",
                    "refused handler %s: key %r already has %d handlers connected "
                    "(--max-handlers-per-key)",
                    name, key, cap,
                )  # fmt: skip
                return
            self._sync_liveness()  # stale disconnect events for this fd must come first
            old = self.by_fd.get(fd) if fd >= 0 else None
            if old is not None:
                self._forget(old, "replaced by a new connection on its socket")
            now = self.clock()
            w = Worker(ident, fd, name, now, _version_of(info))
            if key:
                w.key = key
                self.per_key[key] = self.per_key.get(key, 0) + 1
            proc = _proc_of(info)
            if proc is not None:
                w.proc = (key, proc)
            self.workers[ident] = w
            if fd >= 0:
                self.by_fd[fd] = w
            log.info("handler %s joined (%d connected)", w.name, len(self.workers))
            self._who_asked.pop(ident, None)
            w.in_free = True
            self.free.append(w)
            self._offer()
            if self.waiting:
                self.steal()
            return
        # Replies from before a reconnection (ours or a previous dispatcher's) arrive from a
        # routing id we never met: they cannot be matched safely, so they are dropped.
        self.stats["stray"] += 1
        now = self.clock()
        asked = self._who_asked.get(ident)
        if asked is None or now - asked > WHO_INTERVAL:
            if len(self._who_asked) > 1000:
                self._who_asked.clear()
            self._who_asked[ident] = now
            self._to_worker(ident, WHO)
        log.debug("dropped %d bytes from an unknown peer", len(frame))

    def _stray(self, w: Worker, frame: bytes) -> None:
        self.stats["stray"] += 1
        log.debug("dropped an unexpected message from %s: %r", w.name, frame[:40])

    def _bye(self, w: Worker) -> None:
        if not w.stopping:
            w.stopping = True
            log.info("handler %s is stopping (%d requests to finish)", w.name, len(w.jobs))
        self._to_worker(w.ident, BYE_ACK)

    def _forget(self, w: Worker, why: str) -> None:
        if w.gone:
            return
        w.gone = True
        self.workers.pop(w.ident, None)
        if self.by_fd.get(w.fd) is w:
            del self.by_fd[w.fd]
        if w.key:
            left = self.per_key.get(w.key, 1) - 1
            if left > 0:
                self.per_key[w.key] = left
            else:
                self.per_key.pop(w.key, None)
        held = [j for j in w.jobs.values() if not j.stolen]
        running = {id(j) for j in held if not j.waiting}  # what it was doing when it went
        for job in w.jobs.values():
            if job.waiting:
                self.waiting -= 1
                job.waiting = False
        w.jobs.clear()
        (log.warning if held else log.info)(
            "handler %s left (%s) holding %d requests; %d connected",
            w.name, why, len(held), len(self.workers),
        )  # fmt: skip
        retry = []
        for job in held:
            if job.replied:
                self._close_prefix(job.prefix)  # part of a reply went out: only closing is safe
                self.stats["failed"] += 1
            elif job.upload is None and is_idempotent(job.msg):
                if id(job) in running and self._lost_too_often(job):
                    self._answer_prefix(job.prefix, 502)
                    self.stats["failed"] += 1
                else:
                    retry.append((job.msg, job.arrived, job.prefix))
            else:
                # (a streamed upload still coming is cancelled in Mongrel2 too)
                self._answer_prefix(job.prefix, 502)
                self.stats["failed"] += 1
        if retry:
            self.stats["retries"] += len(retry)
            if self.observer is not None:
                for _msg, _arrived, prefix in retry:
                    self.observer.retried(prefix)
            self.queue.extendleft(reversed(retry))
            self._offer()

    def _lost_too_often(self, job: Job) -> bool:
        """Count that the handler running ``job`` vanished; True the RETRY_LIMIT + 1st time."""
        first, n = self.lost_with.get(job.prefix, (job.arrived, 0))
        n = n + 1 if first == job.arrived else 1
        if n <= RETRY_LIMIT:
            self.lost_with[job.prefix] = (job.arrived, n)
            return False
        self.warn.warning(
            "lost",
            "request %r was running in %d handlers that all vanished; answered 502, not "
            "retried again",
            _path_of(job.msg), n,
        )  # fmt: skip
        return True

    # -- answering clients ourselves ------------------------------------------------------

    def _answer(self, msg: bytes, code: int) -> None:
        """Answer a request ourselves and close the connection (we don't know its keep-alive)."""
        prefix = reply_prefix_of(msg)
        if prefix is not None:
            self._answer_prefix(prefix, code)

    def _answer_prefix(self, prefix: bytes, code: int) -> None:
        """Answer ``code`` (0: no response, a reply was under way) and close the connection.

        Requests pipelined behind it on that connection are dropped with it. A streamed
        upload still coming is cancelled in Mongrel2 instead of closed: a close would leave
        its upload task waiting for credits. The cancel follows the response after
        CANCEL_DELAY, or the response would be lost (measured).
        """
        self.conns.pop(prefix, None)
        if self.lost_with:
            self.lost_with.pop(prefix, None)
        rid = self.observer.answered(prefix, code) if self.observer is not None else None
        upload = self.uploads.pop(prefix, None) if self.uploads else None
        if upload is None:
            if code:
                self._to_m2(prefix + simple_response(code, False, request_id=rid))
            self._to_m2(prefix)
            return
        job = upload.job
        if job is not None:
            job.stolen = True
        else:
            for i, item in enumerate(self.queue):
                if item[0] is upload.msg:
                    del self.queue[i]
                    break
        if code:
            self._to_m2(prefix + simple_response(code, False, request_id=rid))
            self.cancels.append((self.clock() + CANCEL_DELAY, prefix))
        else:
            self._to_m2(cancel_message(prefix))

    def fail_request(self, msg: bytes, code: int) -> None:
        """After an internal error on ``msg``: make sure its client is answered and closed."""
        prefix = reply_prefix_of(msg)
        if prefix is not None:
            self._fail_prefix(prefix, code)

    def fail_worker_frame(self, ident: bytes, frame: bytes) -> None:
        """After an internal error on a handler's frame: fail the request it was about."""
        w = self.workers.get(ident)
        job = w.jobs.get(frame[1:HEAD_LEN]) if w is not None else None
        if job is not None and not job.stolen:
            self._fail_prefix(job.prefix, 502)

    def _fail_prefix(self, prefix: bytes, code: int) -> None:
        replied = False
        for w in self.workers.values():
            for job in w.jobs.values():
                if job.prefix == prefix and not job.stolen:
                    job.stolen = True  # whatever it sends later is dropped
                    replied = replied or job.replied
        self.stats["failed"] += 1
        self._answer_prefix(prefix, 0 if replied else code)

    def _close_prefix(self, prefix: bytes) -> None:
        self._answer_prefix(prefix, 0)

    def _to_m2_close(self, msg: bytes) -> None:
        prefix = reply_prefix_of(msg)
        if prefix is not None:
            self._close_prefix(prefix)

    # -- outputs, provided by the subclass --------------------------------------------------

    def _to_m2(self, payload: bytes) -> None:
        raise NotImplementedError

    def _to_worker(self, ident: bytes, frame: bytes) -> bool:
        raise NotImplementedError

    def _sync_liveness(self) -> None:
        """Process pending connection events before trusting a new peer's socket number."""
