"""The dispatcher's end of the pipe to its recorder process (recorder.py).

The loop must never wait for the recorder: the pipe is non-blocking, what does not fit waits
here (up to MAX_PENDING bytes, then whole batches are dropped and counted), and a recorder
that died is started again, at most once per RESPAWN_EVERY seconds. Frames are a 4-byte
big-endian length and a marshal payload (observe.Observer.ship).
"""

import contextlib
import fcntl
import logging
import os
import select
import subprocess
import time

log = logging.getLogger("ringmaster_handler.dispatcher")

MAX_PENDING = 64 << 20
RESPAWN_EVERY = 1.0
# A bigger pipe lets the recorder fall behind by a few batches without anything waiting here.
PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class RecorderLink:
    def __init__(self, argv: list[str], pass_fds: tuple[int, ...] = ()) -> None:
        self.argv = argv
        self.pass_fds = pass_fds
        self.proc: subprocess.Popen | None = None
        self.fd = -1
        self.pending = bytearray()
        self.dropped = 0  # batches never delivered (recorder dead or too far behind)
        self.started = 0
        self._next_start = 0.0
        self._start()

    def _start(self) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            # (a second recorder's stdin would keep the first one's pipe open: each gets
            # only its own read end)
            self.proc = subprocess.Popen(self.argv, stdin=r, pass_fds=self.pass_fds)
        except BaseException:
            os.close(w)
            raise
        finally:
            os.close(r)
        # (above /proc/sys/fs/pipe-max-size for a non-root user: the default size)
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
        os.set_blocking(w, False)
        self.fd = w
        self.started += 1
        self._next_start = time.monotonic() + RESPAWN_EVERY

    def send(self, payload: bytes) -> None:
        if self.fd < 0 and not self._restart():
            self.dropped += 1
            return
        if len(self.pending) + len(payload) + 4 > MAX_PENDING:
            self.dropped += 1
            log.warning("the recorder is %d bytes behind: a batch was dropped", len(self.pending))
            return
        self.pending += len(payload).to_bytes(4, "big")
        self.pending += payload
        self.write()

    def write(self) -> None:
        pending = self.pending
        while pending:
            try:
                n = os.write(self.fd, pending)
            except BlockingIOError:
                return
            except OSError as exc:
                self._lost(exc)
                return
            del pending[:n]

    def _lost(self, exc: OSError) -> None:
        code = self.proc.poll() if self.proc is not None else None
        log.error("the recorder process is gone (%s, exit %s): starting it again", exc, code)
        os.close(self.fd)
        self.fd = -1
        if self.pending:
            self.dropped += 1  # (a frame cut short cannot go to the next recorder)
            self.pending.clear()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()

    def _restart(self) -> bool:
        if time.monotonic() < self._next_start:
            return False
        try:
            self._start()
        except OSError as exc:
            log.error("cannot start the recorder process: %s", exc)
            self._next_start = time.monotonic() + RESPAWN_EVERY
            return False
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what waits (for at most ``timeout`` seconds), then end the recorder: it
        exits when its stdin ends."""
        deadline = time.monotonic() + timeout
        while self.pending and self.fd >= 0:
            left = deadline - time.monotonic()
            if left <= 0:
                self.dropped += 1
                break
            select.select([], [self.fd], [], left)
            self.write()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.proc is not None:
            try:
                self.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("the recorder did not finish in time: killed")
                self.proc.kill()
                self.proc.wait()
