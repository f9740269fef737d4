"""circusd's control protocol over ZeroMQ: one JSON command, one JSON answer (what circusctl
sends), on a DEALER socket to circusd's root-only control endpoint."""

from __future__ import annotations

import json
import time
import uuid

import zmq

# circusd refuses a command while it runs an exclusive one (its periodic check of the
# watchers, or another client's): such a command is sent again, as circusctl users do by hand.
BUSY_REASONS = ("is already running", "arbiter is restarting")
RETRY_DELAY = 0.2


class CircusError(Exception):
    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


def is_busy(reason: str | None) -> bool:
    return any(text in (reason or "") for text in BUSY_REASONS)


class CircusClient:
    """Used by one thread only (ZeroMQ sockets are not thread-safe)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, timeout: float) -> None:
        self.ctx, self.endpoint, self.timeout = ctx, endpoint, timeout
        self.socket: zmq.Socket | None = None

    def _socket(self) -> zmq.Socket:
        if self.socket is None:
            self.socket = self.ctx.socket(zmq.DEALER)
            self.socket.setsockopt(zmq.LINGER, 0)
            self.socket.connect(self.endpoint)
        return self.socket

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None

    def call(self, command: str, timeout: float | None = None, **props) -> dict:
        """circusd's answer; CircusError when it refuses or does not answer in time."""
        timeout = self.timeout if timeout is None else timeout
        message_id = uuid.uuid4().hex
        sock = self._socket()
        sock.send(json.dumps({"id": message_id, "command": command, "properties": props}).encode())
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000) + 1):
                # A late answer must not be read as the next command's: a new socket.
                self.close()
                raise CircusError(f"no answer from circusd at {self.endpoint} within {timeout:g}s")
            try:
                reply = json.loads(sock.recv())
            except ValueError:
                continue
            if not isinstance(reply, dict) or reply.get("id") != message_id:
                continue  # an earlier command's late answer
            if reply.get("status") == "error":
                reason = str(reply.get("reason") or "unknown error")
                raise CircusError(f"circusd refused {command}: {reason}", reason)
            return reply

    def act(self, command: str, timeout: float, **props) -> dict:
        """``call``, sending the command again while circusd is busy with another one."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.call(command, timeout=max(0.5, deadline - time.monotonic()), **props)
            except CircusError as exc:
                if not is_busy(exc.reason) or time.monotonic() + RETRY_DELAY > deadline:
                    raise
            time.sleep(RETRY_DELAY)
