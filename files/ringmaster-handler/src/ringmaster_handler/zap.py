"""The dispatcher's ZAP handler: which CURVE clients may connect.

libzmq asks the ZAP handler of the socket's context about every CURVE handshake, and holds
the connection until it answers. That happens only when a handler (re)connects, so a thread
of its own costs the request path nothing, and the dispatcher's loop needs no extra socket
to poll.

The authorised set is the directory of public-key certificates, read again whenever the
directory changes (Ansible and ``mv`` replace files by renaming, which changes it): a new
worker host is let in without a restart. A removed key keeps the connections it already
has; restart the dispatcher to cut them (the role does).
"""

import contextlib
import logging
import os
import threading
import time

import zmq

from ringmaster_handler.curve import CurveError, authorized_files, load_public
from ringmaster_handler.ratelimit import RateLimitedLog

log = logging.getLogger("ringmaster_handler.zap")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
# The dispatcher's sockets name this domain (ZAP_ENFORCE_DOMAIN: no handler, no entry).
DOMAIN = b"ringmaster"
# A refused peer retries about every second: say so once per peer address this often.
DENIED_LOG_EVERY = 60.0


class DenialLog(RateLimitedLog):
    """Warnings about refused peers, at most one per address per ``every`` seconds."""

    def __init__(self, every: float = DENIED_LOG_EVERY, clock=time.monotonic) -> None:
        super().__init__(log, every, clock, " (and %d more refusals since the last warning)")

    def refused(self, address: str, why: str) -> bool:
        """Count a refusal; log it if this address was not warned about lately (True)."""
        return self.warning(address, "refused a handler connection from %s: %s", address, why)


class KeyGate:
    """Answers ZAP requests on ``ctx``: CURVE clients with an authorised key only."""

    def __init__(self, ctx: zmq.Context, directory: str, denials: DenialLog | None = None):
        self.directory = directory
        self.denials = denials or DenialLog()
        self._stamp = None
        self._keys: dict[bytes, str] = {}
        self._reload(initial=True)
        # Bound here, before the caller binds its CURVE socket, so that no handshake can
        # find the gate missing; the thread then owns the sockets.
        self._zap = ctx.socket(zmq.REP)
        self._zap.setsockopt(zmq.LINGER, 0)
        self._zap.bind(ZAP_ENDPOINT)
        self._stop_rx = ctx.socket(zmq.PAIR)
        self._stop_rx.setsockopt(zmq.LINGER, 0)
        endpoint = f"inproc://ringmaster-zap-stop-{id(self)}"
        self._stop_rx.bind(endpoint)
        self._stop_tx = ctx.socket(zmq.PAIR)
        self._stop_tx.setsockopt(zmq.LINGER, 0)
        self._stop_tx.connect(endpoint)
        self._thread = threading.Thread(target=self._run, name="zap", daemon=True)

    def start(self) -> "KeyGate":
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop_tx.send(b"")
            self._thread.join(5)
        self._stop_tx.close()
        if not self._thread.is_alive():
            self._zap.close()
            self._stop_rx.close()

    @property
    def authorized(self) -> dict[bytes, str]:
        return dict(self._keys)

    def _reload(self, initial: bool = False) -> None:
        try:
            st = os.stat(self.directory)
        except OSError as exc:
            if initial:
                raise CurveError(f"cannot read {self.directory}: {exc.strerror}") from None
            log.error("cannot read %s (%s); keeping the keys read before", self.directory, exc)
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        if stamp == self._stamp:
            return
        keys: dict[bytes, str] = {}
        for path in authorized_files(self.directory):
            try:
                keys[load_public(str(path))] = path.stem
            except CurveError as exc:
                if initial:
                    raise
                log.error("ignored an authorised key: %s", exc)
        if not keys:
            log.warning(
                "no handler key is authorised in %s: no handler can connect", self.directory
            )
        elif not initial and keys != self._keys:
            log.info("authorised handler keys: %s", ", ".join(sorted(keys.values())))
        self._keys, self._stamp = keys, stamp

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._zap, zmq.POLLIN)
        poller.register(self._stop_rx, zmq.POLLIN)
        while True:
            ready = dict(poller.poll())
            if self._stop_rx in ready:
                return
            if self._zap in ready:
                try:
                    self._answer(self._zap.recv_multipart())
                except Exception:
                    # A gate that dies would leave every handshake hanging: log and go on.
                    log.exception("internal error in the ZAP handler")

    def _answer(self, frames: list[bytes]) -> None:
        # ZAP 1.0 (rfc.zeromq.org/spec/27): version, request id, domain, address, identity,
        # mechanism, credentials...
        if len(frames) < 6:
            log.error("malformed ZAP request (%d frames)", len(frames))
            return
        version, request_id, _domain, address, _identity, mechanism = frames[:6]
        address_text = ascii(address.decode("ascii", "replace"))[1:-1]
        # 400 makes libzmq's client give up on this connection (300 would leave it hanging
        # half open); our handlers retry a refused dispatcher every few seconds themselves.
        status, text, user = b"400", b"not authorised", b""
        if mechanism != b"CURVE" or len(frames) != 7 or len(frames[6]) != 32:
            # (%r-style: the mechanism name comes from the peer's greeting, unchecked)
            self.denials.refused(address_text, f"mechanism {mechanism!r}")
        else:
            with contextlib.suppress(CurveError):
                self._reload()
            client_key = zmq.utils.z85.encode(frames[6])
            name = self._keys.get(client_key)
            if name is None:
                self.denials.refused(
                    address_text, f"its key {client_key.decode()} is not authorised"
                )
            else:
                status, text, user = b"200", b"OK", name.encode()
                log.debug("let in handler key %s from %s", name, address_text)
        self._zap.send_multipart([version, request_id, status, text, user, b""])
