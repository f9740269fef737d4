"""SIGTERM/SIGINT for the handler and the dispatcher: the signal handler only sets a flag,
and a self-pipe wakes the loop's poll so it sees the flag at once."""

import contextlib
import signal
import socket


@contextlib.contextmanager
def stop_signals(request_stop):
    """Route SIGTERM and SIGINT to ``request_stop``; yield the socket that becomes readable."""
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    old_handlers = {
        sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield wake_r
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(old_wakeup)
        wake_r.close()
        wake_w.close()


def drain_fd(sock: socket.socket) -> None:
    """Empty the wake-up socket, so the next poll waits again."""
    try:
        while sock.recv(512):
            pass
    except (BlockingIOError, InterruptedError):
        pass
