"""``ringmaster-wsgi --dispatcher --threads N``: N serving threads in one process.

ZeroMQ sockets are not thread-safe, so nothing is shared between the threads but the
ZeroMQ context (which is): each thread runs a whole WorkerLoop (worker.py) with its own
DEALER socket to every dispatcher, its own local queue, outbox and streamed bodies. To the
dispatcher each thread is one more handler asking for work, which gives the process its
credit of N, and every guarantee the dispatcher keeps per handler (in-flight accounting,
retry or 502 when the connection goes, pipelining order, upload credits) holds per thread.

The main thread only waits. Signal handlers run there and only set a flag (stopsignals.py);
the main thread then tells each loop to stop and wakes it through a socket pair of its own,
and every thread drains as a single-threaded handler does (bye, serve what was sent before
the acknowledgement). The process exits once all of them are done. A thread that dies of a
bug stops the others the same way and the process exits 1, for its supervisor to restart.

--request-timeout: the threads share the process's alarm (alarm.py), kept at the earliest
deadline of any thread.
"""

import contextlib
import logging
import os
import select
import socket
import threading
from collections.abc import Callable

import zmq

from ringmaster_handler.alarm import SharedAlarm
from ringmaster_handler.loop import TIMEOUT_GRACE
from ringmaster_handler.stopsignals import drain_fd, stop_signals
from ringmaster_handler.worker import WorkerLoop

log = logging.getLogger("ringmaster_handler.threads")

# How often the main thread looks for a thread that ended on its own (a bug).
WATCH_INTERVAL = 0.5


class ThreadedWorker:
    """Runs ``threads`` WorkerLoops made by ``make_loop(index, alarm, proc_id)``."""

    def __init__(
        self,
        make_loop: Callable[..., WorkerLoop],
        threads: int,
        request_timeout: float = 0.0,
        recycler=None,
    ) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.threads = threads
        self.alarm = SharedAlarm(request_timeout + TIMEOUT_GRACE)
        proc_id = os.urandom(8).hex()
        self.loops = [make_loop(i, self.alarm.slot(i), proc_id) for i in range(threads)]
        self.stopping = False
        self.failed = False
        # --max-requests etc. (recycle.py): a serving thread that sees the process's limit
        # stops the process as SIGTERM would, and wakes the main thread through this pair.
        self._recycle_r, self._recycle_w = socket.socketpair()
        self._recycle_w.setblocking(False)
        if recycler is not None:
            recycler.on_limit = self._recycle

    def _recycle(self, _reason: str) -> None:
        self.stopping = True
        with contextlib.suppress(OSError):
            self._recycle_w.send(b"r")

    def request_stop(self, *_args) -> None:
        # Runs as a signal handler: only set a flag, the main thread does the rest.
        self.stopping = True

    def run(self) -> int:
        with stop_signals(self.request_stop) as wake_r:
            ctx = zmq.Context(io_threads=1)
            wakers = [socket.socketpair() for _ in self.loops]
            try:
                threads = [
                    threading.Thread(
                        target=self._thread_main,
                        args=(loop, ctx, pair[0]),
                        name=f"handler-{i}",
                        daemon=True,  # (a main thread that fails must not hang on them)
                    )
                    for i, (loop, pair) in enumerate(zip(self.loops, wakers, strict=True))
                ]
                for t in threads:
                    t.start()
                self._watch(wake_r, threads)
                self._stop_all(wakers)
                for t in threads:
                    t.join()
            finally:
                for r, w in wakers:
                    r.close()
                    w.close()
                self._recycle_r.close()
                self._recycle_w.close()
                ctx.term()
        served = sum(loop.served for loop in self.loops)
        log.info("stopped after %d requests on %d threads", served, self.threads)
        return 1 if self.failed else 0

    def _watch(self, wake_r: socket.socket, threads: list[threading.Thread]) -> None:
        """Wait for a stop signal, or for a thread that ended by itself."""
        while not self.stopping:
            ready, _, _ = select.select([wake_r, self._recycle_r], [], [], WATCH_INTERVAL)
            if wake_r in ready:
                drain_fd(wake_r)
            if not all(t.is_alive() for t in threads):
                log.error("a serving thread ended; stopping the others")
                self.failed = True
                return

    def _stop_all(self, wakers: list[tuple[socket.socket, socket.socket]]) -> None:
        running = sum(1 for loop in self.loops if not loop._done)
        for loop, (_, wake_w) in zip(self.loops, wakers, strict=True):
            loop.request_stop()
            # (If this fails, the loop still looks at the flag at least once a second.)
            with contextlib.suppress(OSError):
                wake_w.send(b"s")
        log.info("stopping %d threads (%d requests running)", self.threads, running)

    def _thread_main(self, loop: WorkerLoop, ctx: zmq.Context, wake_r: socket.socket) -> None:
        wake_r.setblocking(False)
        try:
            loop.serve_on(ctx, wake_r)
        except BaseException:
            log.exception("serving thread %s failed", threading.current_thread().name)
            self.failed = True
            loop.alarm.clear()
