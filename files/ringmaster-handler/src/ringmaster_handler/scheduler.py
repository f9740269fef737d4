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
- A request that no worker has started within ``queue_timeout`` of its arrival is answered
  503 (``expire``): a client learns at once that nobody can serve it, instead of hanging.
"""

import logging
import os
import time
from collections import deque

from ringmaster_handler.credit import (
    BYE_ACK,
    CANCEL,
    DISCONNECT_TAIL,
    HEAD_LEN,
    K_BYE,
    K_DONE,
    K_FINISHED,
    K_HELLO,
    K_MORE,
    REQUEST,
    WHO,
    describe_peer,
    is_idempotent,
    parse_hello,
    reply_prefix_of,
    rid_bytes,
)
from ringmaster_handler.response import simple_response

log = logging.getLogger("ringmaster_handler.dispatcher")

# How often an unknown peer is asked to say hello again (it may be sending stale replies).
WHO_INTERVAL = 1.0


class Job:
    """One request handed to a worker."""

    __slots__ = ("arrived", "msg", "replied", "rid", "sent_at", "stolen", "waiting", "worker")

    def __init__(
        self, msg: bytes, arrived: float, rid: bytes, worker: "Worker", now: float, waiting: bool
    ):
        self.msg = msg
        self.arrived = arrived  # when Mongrel2 handed it to us (kept across retries)
        self.rid = rid
        self.worker = worker
        self.sent_at = now
        self.waiting = waiting  # queued behind another request in the worker (not started)
        self.stolen = False  # given to another worker; this one's replies are dropped
        self.replied = False  # some reply bytes went to Mongrel2


class Worker:
    """A handler process as seen through one connection."""

    __slots__ = ("fd", "gone", "ident", "in_free", "jobs", "name", "started", "stopping")

    def __init__(self, ident: bytes, fd: int, name: str, now: float):
        self.ident = ident
        self.fd = fd
        self.name = name
        self.jobs: dict[bytes, Job] = {}  # by request id, in the order the worker got them
        self.started = now  # when its current request started (roughly)
        self.stopping = False
        self.gone = False
        self.in_free = False


class Scheduler:
    """Who gets which request: the dispatcher's bookkeeping, without any sockets.

    Subclasses provide the outputs (``_to_m2``, ``_to_worker``) and feed the inputs
    (``on_request``, ``on_worker_frame``, ``on_disconnect``, ``steal``).
    """

    def __init__(
        self,
        *,
        prefetch: int = 8,
        steal_after: float = 0.01,
        queue_limit: int = 10_000,
        queue_timeout: float = 0.0,
        clock=time.monotonic,
    ) -> None:
        self.depth = 1 + max(0, prefetch)
        self.refill_at = self.depth // 2
        self.steal_after = steal_after
        self.queue_limit = queue_limit
        self.queue_timeout = queue_timeout  # 0: requests wait for a worker as long as it takes
        self.clock = clock

        self.workers: dict[bytes, Worker] = {}
        self.by_fd: dict[int, Worker] = {}
        self.free: deque[Worker] = deque()
        # Requests no worker has taken yet, with their arrival times. Retries go back in
        # front with their first arrival time, so the queue stays ordered by arrival.
        self.queue: deque[tuple[bytes, float]] = deque()
        self.waiting = 0  # jobs queued inside busy workers, not started
        self.backlog: deque = deque()  # replies Mongrel2 has not taken yet
        # Request ids start at a random point so a restarted dispatcher never mistakes a
        # stale reply for one of its own requests.
        self._next_rid = int.from_bytes(os.urandom(8), "little")
        self._who_asked: dict[bytes, float] = {}
        self.stats = {
            "requests": 0,
            "replies": 0,
            "steals": 0,
            "retries": 0,
            "failed": 0,
            "rejected": 0,
            "expired": 0,
            "stray": 0,
        }

    def on_request(self, msg: bytes) -> None:
        """A message from Mongrel2."""
        if msg.endswith(DISCONNECT_TAIL):
            return  # a client went away; handlers have nothing to do with it
        self.stats["requests"] += 1
        now = self.clock()
        free = self.free
        while free:
            w = free.popleft()
            w.in_free = False
            if not (w.gone or w.stopping or w.jobs):
                w.started = now
                self._send_job(w, msg, now, False)
                return
        queue = self.queue
        if not queue and self.depth > 1 and is_idempotent(msg):
            w = self._prefetch_target()
            if w is not None:
                self._send_job(w, msg, now, True)
                return
        if len(queue) >= self.queue_limit:
            self.stats["rejected"] += 1
            self._answer(msg, 503)
            return
        queue.append((msg, now))

    def on_worker_frame(self, ident: bytes, frame: bytes, fd: int = -1) -> None:
        """One message from a handler (``ident`` is its ROUTER routing id)."""
        w = self.workers.get(ident)
        if w is None:
            self._from_stranger(ident, frame, fd)
            return
        kind = frame[0] if frame else 0
        if kind in (K_DONE, K_FINISHED):
            job = w.jobs.pop(frame[1:HEAD_LEN], None)
            if job is None:
                self._stray(w, frame)
                return
            if kind == K_DONE and not job.stolen:
                self._to_m2(frame[HEAD_LEN:])
                self.stats["replies"] += 1
            if job.waiting:
                job.waiting = False
                self.waiting -= 1
            self._next_for(w)
        elif kind == K_MORE:
            job = w.jobs.get(frame[1:HEAD_LEN])
            if job is None:
                self._stray(w, frame)
            elif not job.stolen:
                job.replied = True
                self._to_m2(frame[HEAD_LEN:])
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
            self._forget(w, "disconnected")

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
            self._send_job(thief, job.msg, job.arrived, False)

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
            self._answer(queue.popleft()[0], 503)
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
            self._answer(job.msg, 503)
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

    def _send_job(self, w: Worker, msg: bytes, arrived: float, waiting: bool) -> None:
        n = self._next_rid
        self._next_rid = n + 1
        rid = rid_bytes(n)
        if not self._to_worker(w.ident, REQUEST + rid + msg):
            # It vanished between its last message and now: the request goes back in line.
            self.queue.appendleft((msg, arrived))
            self._forget(w, "unreachable")
            self._offer()
            return
        w.jobs[rid] = Job(msg, arrived, rid, w, self.clock(), waiting)
        if waiting:
            self.waiting += 1

    def _next_for(self, w: Worker) -> None:
        """``w`` finished a request: its next one has started; give it more if there is."""
        jobs = w.jobs
        if jobs:
            first = next(iter(jobs.values()))
            if first.waiting:
                first.waiting = False
                self.waiting -= 1
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
            msg, arrived = queue[0]
            if jobs and not is_idempotent(msg):
                return  # only a free worker may take it
            queue.popleft()
            if not jobs:
                w.started = self.clock()
            self._send_job(w, msg, arrived, bool(jobs))
            if w.gone:
                return

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

    def _oldest_waiting(self, by: str = "sent_at") -> Job | None:
        oldest = None
        for w in self.workers.values():
            if len(w.jobs) > 1:
                for job in w.jobs.values():
                    if job.waiting and (oldest is None or getattr(job, by) < getattr(oldest, by)):
                        oldest = job
        return oldest

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

    def _from_stranger(self, ident: bytes, frame: bytes, fd: int) -> None:
        if frame[:1] == b"H":
            self._sync_liveness()  # stale disconnect events for this fd must come first
            old = self.by_fd.get(fd) if fd >= 0 else None
            if old is not None:
                self._forget(old, "replaced by a new connection on its socket")
            now = self.clock()
            w = Worker(ident, fd, describe_peer(parse_hello(frame)), now)
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
        held = [j for j in w.jobs.values() if not j.stolen]
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
                self._to_m2_close(job.msg)  # part of a reply went out: only closing is safe
                self.stats["failed"] += 1
            elif is_idempotent(job.msg):
                retry.append((job.msg, job.arrived))
            else:
                self._answer(job.msg, 502)
                self.stats["failed"] += 1
        if retry:
            self.stats["retries"] += len(retry)
            self.queue.extendleft(reversed(retry))
            self._offer()

    def _answer(self, msg: bytes, code: int) -> None:
        """Answer a request ourselves and close the connection (we don't know its keep-alive)."""
        prefix = reply_prefix_of(msg)
        if prefix is not None:
            self._to_m2(prefix + simple_response(code, False))
            self._to_m2(prefix)

    def _to_m2_close(self, msg: bytes) -> None:
        prefix = reply_prefix_of(msg)
        if prefix is not None:
            self._to_m2(prefix)

    # -- outputs, provided by the subclass --------------------------------------------------

    def _to_m2(self, payload: bytes) -> None:
        raise NotImplementedError

    def _to_worker(self, ident: bytes, frame: bytes) -> bool:
        raise NotImplementedError

    def _sync_liveness(self) -> None:
        """Process pending connection events before trusting a new peer's socket number."""
