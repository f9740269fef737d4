"""The agent's sockets: a CURVE ROUTER the console connects to, circusd's pub/sub (to count
restarts), and a pipe from the thread that carries out an action.

It blocks in one poll until something arrives, so an agent nobody asks costs nothing. Reads
(``status``) are answered in the loop; an action (which can wait on graceful stops for a
while) runs in a thread of its own, one at a time, so the console keeps seeing the host
meanwhile.
"""

from __future__ import annotations

import logging
import os
import queue
import threading

import zmq
from ringmaster_handler.curve import load_keypair
from ringmaster_handler.zap import DOMAIN, KeyGate

from ringmaster_console.agent import Agent
from ringmaster_console.circusd import CircusClient, CircusError
from ringmaster_console.config import AgentConfig
from ringmaster_console.protocol import RequestError, encode, parse_request, request_id_of
from ringmaster_console.restarts import parse_event

log = logging.getLogger("ringmaster_console.agent")


class Stop(Exception):
    """Raised by the signal handlers to leave the poll."""


class AgentLoop:
    def __init__(self, config: AgentConfig, ctx: zmq.Context | None = None) -> None:
        self.config = config
        self.own_ctx = ctx is None
        self.ctx = ctx or zmq.Context()
        self.agent = Agent(config)
        self.circus = CircusClient(self.ctx, config.endpoint, config.timeout)
        self.done: queue.Queue = queue.Queue()
        self.wake_r, self.wake_w = os.pipe()
        self.busy: threading.Thread | None = None
        keypair = load_keypair(config.secret_key)
        self.gate = KeyGate(self.ctx, config.authorized_dir).start()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.CURVE_SERVER, 1)
        self.router.setsockopt(zmq.CURVE_SECRETKEY, keypair.secret)
        self.router.setsockopt(zmq.ZAP_DOMAIN, DOMAIN)
        self.router.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        # A console that went away must not fill memory with answers nobody reads.
        self.router.setsockopt(zmq.SNDHWM, 100)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.router.bind(config.listen)
        self.events = None
        if config.pubsub_endpoint:
            self.events = self.ctx.socket(zmq.SUB)
            self.events.setsockopt(zmq.LINGER, 0)
            self.events.setsockopt(zmq.SUBSCRIBE, b"watcher.")
            self.events.connect(config.pubsub_endpoint)

    def close(self) -> None:
        self.router.close()
        if self.events is not None:
            self.events.close()
        self.circus.close()
        self.gate.stop()
        os.close(self.wake_r)
        os.close(self.wake_w)
        if self.own_ctx:
            # Whatever socket is still open (an action's thread, the gate's if it did not
            # stop) must not hold the exit: zmq_ctx_term would wait for it for ever.
            self.ctx.destroy(linger=0)

    def run(self, signal_fd: int | None = None) -> None:
        """Serve until a signal handler raises. ``signal_fd``: the read end of the pipe given to
        ``signal.set_wakeup_fd``: a signal may reach one of libzmq's or the ZAP gate's threads,
        which leaves the main thread's poll asleep; the byte in the pipe wakes it, and Python
        then runs the handler."""
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.wake_r, zmq.POLLIN)
        if signal_fd is not None:
            poller.register(signal_fd, zmq.POLLIN)
        if self.events is not None:
            poller.register(self.events, zmq.POLLIN)
        log.info("listening on %s", self.config.listen)
        while True:
            ready = dict(poller.poll())
            if signal_fd is not None and signal_fd in ready:
                os.read(signal_fd, 64)
            if self.events is not None and self.events in ready:
                self.drain_events()
            if self.wake_r in ready:
                os.read(self.wake_r, 64)
                self.send_finished()
            if self.router in ready:
                self.receive()

    def drain_events(self) -> None:
        while True:
            try:
                frames = self.events.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            event = parse_event(frames)
            if event:
                self.agent.restarts.event(*event)

    def receive(self) -> None:
        while True:
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                continue  # not a DEALER's single-frame request
            peer, raw = frames
            self.router.send_multipart([peer, encode(self.answer(peer, raw))])

    def answer(self, peer: bytes, raw: bytes) -> dict:
        try:
            known = self.agent.known(self.circus)
            request = parse_request(
                raw, known, set(self.config.scalable), self.config.max_processes
            )
            if request.op == "status":
                return {"id": request.id, **self.agent.status(self.circus)}
        except RequestError as exc:
            log.warning("refused a request: %s", exc)
            return {"id": request_id_of(raw), "ok": False, "error": str(exc)}
        except CircusError as exc:
            return {"id": request_id_of(raw), "ok": False, "error": str(exc)}
        except Exception as exc:
            # An answer circusd never gave before (a watcher removed between two commands...):
            # this request fails, the agent lives on.
            log.exception("could not answer a request")
            return {"id": request_id_of(raw), "ok": False, "error": f"internal error: {exc}"}
        if self.busy is not None and self.busy.is_alive():
            return {"id": request.id, "ok": False, "error": "another action is still running here"}
        log.info(
            "%s %s%s",
            request.op,
            request.watcher,
            f" to {request.count}" if request.count is not None else "",
        )
        self.busy = threading.Thread(target=self.carry_out, args=(peer, request), daemon=True)
        self.busy.start()
        return {"id": request.id, "ok": True, "accepted": True}

    def carry_out(self, peer: bytes, request) -> None:
        circus = CircusClient(self.ctx, self.config.endpoint, self.config.timeout)
        try:
            reply = self.agent.act(circus, request)
        except Exception as exc:  # the loop must hear back whatever happened
            log.exception("action failed")
            reply = {"ok": False, "error": f"internal error: {exc}"}
        finally:
            circus.close()
        if not reply.get("ok"):
            log.warning("%s %s failed: %s", request.op, request.watcher, reply.get("error"))
        self.done.put((peer, {"id": request.id, "final": True, **reply}))
        os.write(self.wake_w, b"x")

    def send_finished(self) -> None:
        while True:
            try:
                peer, reply = self.done.get_nowait()
            except queue.Empty:
                return
            self.router.send_multipart([peer, encode(reply)])
