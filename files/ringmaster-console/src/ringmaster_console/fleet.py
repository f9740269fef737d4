"""The console's side of the agents: ask every host at once, wait at most ``timeout``, and
report a host that did not answer as down without holding up the others.

One DEALER socket per host (CURVE client, the agent's public key from the config), kept open
between polls; a host that missed a deadline gets a new socket, so a late answer is never
taken for the next one. Actions go out on sockets of their own: an action can take a while
(graceful stops) and the page's polls must not wait for it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import zmq
from ringmaster_handler.curve import Keypair

from ringmaster_console.config import Host


@dataclass(frozen=True, slots=True)
class Spread:
    host: str
    count: int


class SpreadError(ValueError):
    pass


def spread(total: int, hosts: list[str], pinned: dict[str, int] | None = None) -> list[Spread]:
    """``total`` processes over ``hosts`` as ``playbooks/scale.yml`` spreads them: a host with
    a pinned count (its ``scale_host_workers``) gets exactly that, the rest is spread evenly
    over the others, the first ones (in the configured order) taking the remainder."""
    if not hosts:
        return []
    pinned = {host: n for host, n in (pinned or {}).items() if host in hosts}
    free = [host for host in hosts if host not in pinned]
    rest = total - sum(pinned.values())
    if rest < 0 or (not free and rest != 0):
        raise SpreadError(
            f"the pinned counts ({', '.join(f'{h}: {n}' for h, n in pinned.items())}) must add up "
            f"to at most {total}, and exactly when every host has one"
        )
    share, extra = divmod(rest, len(free)) if free else (0, 0)
    counts = {host: share + (1 if index < extra else 0) for index, host in enumerate(free)}
    return [Spread(host, pinned.get(host, counts.get(host, 0))) for host in hosts]


def down(host: str, why: str) -> dict:
    return {"host": host, "up": False, "error": why}


def collect(hosts: Iterable[str], replies: dict[str, dict], errors: dict[str, str]) -> list[dict]:
    """One entry per host, in the configured order: its answer, or why it is shown down."""
    result = []
    for host in hosts:
        if host in replies:
            reply = replies[host]
            if reply.get("ok"):
                result.append(
                    {
                        "host": host,
                        "up": True,
                        **{k: v for k, v in reply.items() if k not in ("id", "ok")},
                    }
                )
            else:
                result.append(down(host, str(reply.get("error") or "refused")))
        else:
            result.append(down(host, errors.get(host, "no answer")))
    return result


class Backoff:
    """Hosts that missed a deadline are asked again only after ``retry_after`` seconds; until
    then they are reported down at once, so one dead host does not slow every poll of the page
    (a poll a second) down to its timeout."""

    def __init__(self, retry_after: float, clock=time.monotonic) -> None:
        self.retry_after, self.clock = retry_after, clock
        self.until: dict[str, tuple[float, str]] = {}

    def resting(self, host: str) -> str | None:
        """Why the host is still shown down without being asked, or None to ask it."""
        entry = self.until.get(host)
        if entry is None or self.clock() >= entry[0]:
            return None
        return entry[1]

    def missed(self, host: str, why: str) -> None:
        self.until[host] = (self.clock() + self.retry_after, why)

    def answered(self, host: str) -> None:
        self.until.pop(host, None)


class FleetClient:
    def __init__(
        self,
        hosts: tuple[Host, ...],
        keypair: Keypair,
        timeout: float,
        ctx: zmq.Context | None = None,
        retry_after: float = 5.0,
    ) -> None:
        self.hosts = {h.name: h for h in hosts}
        self.order = [h.name for h in hosts]
        self.keypair = keypair
        self.timeout = timeout
        self.ctx = ctx or zmq.Context.instance()
        self.sockets: dict[str, zmq.Socket] = {}
        self.backoff = Backoff(retry_after)
        # Flask serves requests on several threads; sockets are not thread-safe.
        self.lock = threading.Lock()

    def _connect(self, host: Host) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.CURVE_SERVERKEY, host.public_key.encode())
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.keypair.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.keypair.secret)
        sock.connect(host.endpoint)
        return sock

    def _socket(self, name: str) -> zmq.Socket:
        if name not in self.sockets:
            self.sockets[name] = self._connect(self.hosts[name])
        return self.sockets[name]

    def _drop(self, name: str) -> None:
        sock = self.sockets.pop(name, None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        with self.lock:
            for name in list(self.sockets):
                self._drop(name)

    def status(self) -> list[dict]:
        """Every host's watchers, asked all at once."""
        with self.lock:
            return self._exchange({name: {"op": "status"} for name in self.order}, self.timeout)

    def _exchange(self, requests: dict[str, dict], timeout: float) -> list[dict]:
        ids: dict[str, str] = {}
        errors: dict[str, str] = {}
        poller = zmq.Poller()
        for name, body in requests.items():
            resting = self.backoff.resting(name)
            if resting:
                errors[name] = resting
                continue
            sock = self._socket(name)
            ids[name] = uuid.uuid4().hex
            # Queued until the connection is up; a host that stays silent has its socket
            # (and with it what is queued) dropped below.
            sock.send(json.dumps({"id": ids[name], **body}).encode())
            poller.register(sock, zmq.POLLIN)
        by_socket = {self.sockets[name]: name for name in requests if name not in errors}
        replies: dict[str, dict] = {}
        deadline = time.monotonic() + timeout
        waiting = {name for name in requests if name not in errors}
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for sock, _ in poller.poll(int(left * 1000) + 1):
                name = by_socket[sock]
                try:
                    reply = json.loads(sock.recv(zmq.NOBLOCK))
                except (zmq.Again, ValueError):
                    continue
                if isinstance(reply, dict) and reply.get("id") == ids[name]:
                    replies[name] = reply
                    waiting.discard(name)
                    poller.unregister(sock)
                    self.backoff.answered(name)
        for name in waiting:
            errors[name] = (
                f"no answer within {timeout:g}s (agent down, unreachable, or our key refused)"
            )
            self.backoff.missed(name, errors[name])
            self._drop(name)
        return collect(requests, replies, errors)

    def act(self, requests: dict[str, dict], timeout: float) -> list[dict]:
        """Send each host its action at once; wait for each one's final answer."""
        sockets = {name: self._connect(self.hosts[name]) for name in requests}
        ids = {name: uuid.uuid4().hex for name in requests}
        replies: dict[str, dict] = {}
        errors: dict[str, str] = {}
        poller = zmq.Poller()
        try:
            for name, sock in sockets.items():
                sock.send(json.dumps({"id": ids[name], **requests[name]}).encode())
                poller.register(sock, zmq.POLLIN)
            by_socket = {sock: name for name, sock in sockets.items()}
            waiting = {name for name in requests if name not in errors}
            deadline = time.monotonic() + timeout
            while waiting and (left := deadline - time.monotonic()) > 0:
                for sock, _ in poller.poll(int(left * 1000) + 1):
                    name = by_socket[sock]
                    reply = json.loads(sock.recv())
                    if reply.get("id") != ids[name]:
                        continue
                    # A refusal comes at once; an accepted action's result comes when done.
                    if reply.get("final") or not reply.get("ok"):
                        replies[name] = reply
                        waiting.discard(name)
                        poller.unregister(sock)
            for name in waiting:
                errors[name] = f"no result within {timeout:g}s (the action may still finish)"
        finally:
            for sock in sockets.values():
                sock.close()
        return collect(list(requests), replies, errors)
