# Copyright (c) 2025, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""circus 0.19's flapping plugin, with its stop and start commands confirmed and its decisions on record.

The stock plugin (circus.plugins.flapping.Flapping) sends ``stop`` and ``start`` as casts: fire and
forget. circusd refuses any command with a ConflictError while it runs another exclusive command, and
the process exits the plugin reacts to are published from inside circusd's periodic
``manage_watchers`` (which holds that lock while it respawns), so the ``stop`` meant to end a flapping
watcher is often refused, silently; the watcher then flaps for ever (seen on circus 0.19.0). This
subclass sends both as calls, retries a refused one, and:

- writes what it decided to a JSON file (``state_file``) that ``ringmaster.stack.circus_info`` and
  ``playbooks/status.yml`` read: per watcher ``retrying`` (stopped, will be started again) or
  ``stopped`` (gave up after ``max_retry`` retries);
- logs its decisions to the journal through syslog (``syslog_ident``): circusd runs plugins with
  their output closed, so the stock plugin's log lines are lost;
- ignores the exits of processes circusd stopped itself (stop, reload, restart, scale-down): the
  stock plugin counts them too, so a graceful reload of two processes looked like flapping;
- ignores processes that exited with status 0 on their own: a handler leaves that way when it
  is recycled (``--max-requests``, ``--max-age``, ``--max-rss``), after finishing its requests,
  and several leaving close together under load is not a crash loop;
- subtracts circusd's real ``check_delay`` (``circusd_check_delay``) instead of the 5 s default
  circusd forgets to pass on.

Options are the stock plugin's (attempts, window, retry_in, max_retry, active; per watcher as
``flapping.*``) plus the three above.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import tempfile
import threading
import time
import uuid

import zmq
from circus import logger
from circus.plugins.flapping import Flapping as _StockFlapping

# A refused command is sent again every RETRY_DELAY seconds, at most RETRY_LIMIT times (20 s).
RETRY_DELAY = 0.2
RETRY_LIMIT = 100
# Seconds to wait for circusd to answer one command.
REPLY_TIMEOUT = 5.0
SYSLOG_SOCKETS = ("/run/systemd/journal/dev-log", "/dev/log")


def call_circusd(client, command, props):
    """Send one command on a DEALER socket whose RCVTIMEO is REPLY_TIMEOUT, and return circusd's
    answer to it (an error dict when none comes). Also used by ringmaster_circus_metrics."""
    message = {"command": command, "properties": props, "id": uuid.uuid4().hex}
    client.send(json.dumps(message).encode())
    while True:
        try:
            reply = json.loads(client.recv())
        except zmq.Again:
            return {"status": "error", "reason": f"no answer from circusd within {REPLY_TIMEOUT}s"}
        # A late answer to an earlier, timed-out call is skipped.
        if reply.get("id") == message["id"]:
            return reply


def read_states(path, pid_alive=None):
    """The per-watcher records of a state file this plugin wrote, or {} when the file is missing,
    unreadable or left by a plugin that is not running any more. Also used by
    ringmaster_circus_metrics (ringmaster.stack.circus_info reads the file on its own: it runs
    under Ansible, not in circus's virtualenv)."""
    pid_alive = pid_alive or (lambda pid: os.path.exists(f"/proc/{pid}"))
    try:
        with open(path) as handle:
            document = json.load(handle)
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict) or not isinstance(document.get("watchers"), dict):
        return {}
    pid = document.get("pid")
    if isinstance(pid, int) and not pid_alive(pid):
        return {}
    return document["watchers"]


class Flapping(_StockFlapping):
    name = "flapping"

    def __init__(self, endpoint, pubsub_endpoint, check_delay, ssh_server, **config):
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server=ssh_server, **config)
        if config.get("circusd_check_delay"):
            self.check_delay = float(config["circusd_check_delay"])
        self.state_file = config.get("state_file") or None
        self.syslog_ident = config.get("syslog_ident") or None
        self.states = {}
        self.generation = {}
        self.killed = set()
        self._stop_sent = False

    # --- set-up --------------------------------------------------------------
    def handle_init(self):
        super().handle_init()
        if self.syslog_ident:
            for address in SYSLOG_SOCKETS:
                if os.path.exists(address):
                    try:
                        handler = logging.handlers.SysLogHandler(address=address)
                    except OSError:
                        continue
                    handler.ident = f"{self.syslog_ident}: "
                    handler.setFormatter(logging.Formatter("%(message)s"))
                    handler.setLevel(logging.INFO)
                    logger.addHandler(handler)
                    break
        self.write_state()

    def initialize(self):
        super().initialize()
        self.client.setsockopt(zmq.RCVTIMEO, int(REPLY_TIMEOUT * 1000))

    # --- talking to circusd --------------------------------------------------
    def call(self, command, **props):
        return call_circusd(self.client, command, props)

    def cast(self, command, **props):
        if command not in ("stop", "start"):
            super().cast(command, **props)
            return
        if threading.current_thread() is not threading.main_thread():
            # The stock plugin starts a watcher again from a Timer thread; sockets belong to the loop's thread.
            self.loop.add_callback(self.cast, command, **props)
            return
        if command == "stop":
            self._stop_sent = True
        self.send_confirmed(command, props, 0)

    def send_confirmed(self, command, props, attempt):
        name = props.get("name")
        reply = self.call(command, **props)
        if reply.get("status") != "error":
            if command == "start":
                self.schedule_settle(name)
            return
        reason = reply.get("reason") or "unknown error"
        # ConflictError: circusd is busy with another exclusive command; try again shortly.
        if "arbiter is" in reason and attempt < RETRY_LIMIT:
            self.loop.call_later(RETRY_DELAY, self.send_confirmed, command, props, attempt + 1)
            return
        logger.error("%s: circusd refused %s: %s", name, command, reason)

    # --- decisions -----------------------------------------------------------
    def check(self, watcher_name):
        tries_before = self.tries.get(watcher_name, 0)
        conf = self.configs.get(watcher_name) or self.update_conf(watcher_name)
        full = len(self.timelines.get(watcher_name, [])) == int(self._get_conf(conf, "attempts"))
        self._stop_sent = False
        super().check(watcher_name)
        if not self._stop_sent:
            # A full timeline that did not count as flapping resets the stock plugin: the watcher recovered.
            if full and self.states.get(watcher_name, {}).get("state") == "retrying":
                self.forget(watcher_name)
            return
        tries = self.tries.get(watcher_name, 0)
        max_retry = int(self._get_conf(conf, "max_retry"))
        if tries:
            self.remember(watcher_name, "retrying", tries, max_retry)
        else:
            self.remember(watcher_name, "stopped", tries_before, max_retry)
            # (the stock plugin says it at info level; this is the line to alert on)
            logger.warning(
                "%s: gave up after %d retries: the watcher stays stopped until it is started again",
                watcher_name, tries_before,
            )  # fmt: skip

    def handle_recv(self, data):
        watcher_name, action, message = self.split_data(data)
        if action in ("kill", "reap"):
            try:
                details = json.loads(message)
                pid, exit_code = details.get("process_pid"), details.get("exit_code")
            except (ValueError, AttributeError):
                pid = exit_code = None
            if action == "kill":
                # circusd stopping a process (stop, reload, restart, scale-down) is not the process crashing.
                if len(self.killed) > 10000:
                    self.killed.clear()
                self.killed.add(pid)
                return
            if pid in self.killed:
                self.killed.discard(pid)
                return
            if exit_code == 0:
                # Left on its own, cleanly: recycled, not crashed.
                return
        if action == "start" and self.states.get(watcher_name, {}).get("state") == "stopped":
            # Started again by an operator after the plugin gave up.
            self.forget(watcher_name)
        super().handle_recv(data)

    def schedule_settle(self, watcher_name):
        """After a retry, forget the watcher once it has run long enough to have flapped again."""
        conf = self.configs.get(watcher_name, {})
        delay = int(self._get_conf(conf, "attempts")) * self.check_delay + float(self._get_conf(conf, "window")) + 1
        generation = self.generation.get(watcher_name, 0)

        def settle():
            if self.generation.get(watcher_name, 0) == generation and watcher_name in self.states:
                logger.info("%s: no flapping since the last retry", watcher_name)
                self.forget(watcher_name)

        self.loop.call_later(delay, settle)

    def remember(self, watcher_name, state, attempt, max_retry):
        self.generation[watcher_name] = self.generation.get(watcher_name, 0) + 1
        self.states[watcher_name] = {"state": state, "attempt": attempt, "max_retry": max_retry, "since": time.time()}
        self.write_state()

    def forget(self, watcher_name):
        self.generation[watcher_name] = self.generation.get(watcher_name, 0) + 1
        self.states.pop(watcher_name, None)
        self.write_state()

    def write_state(self):
        if not self.state_file:
            return
        document = {"pid": os.getpid(), "updated": time.time(), "watchers": self.states}
        directory = os.path.dirname(self.state_file) or "."
        try:
            fd, temp = tempfile.mkstemp(prefix=".flapping.", dir=directory)
            with os.fdopen(fd, "w") as handle:
                json.dump(document, handle, sort_keys=True)
            os.replace(temp, self.state_file)
        except OSError as exc:
            logger.error("cannot write %s: %s", self.state_file, exc)
