#!/usr/bin/python

# Copyright (c) 2025, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible modules put DOCUMENTATION, EXAMPLES and RETURN before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
module: circus_watcher
short_description: Manage the state and process count of a watcher on a running circusd
version_added: 0.1.0
description:
  - Start, stop, restart or gracefully reload one watcher of a live C(circusd), and scale its number of processes.
  - The module talks to C(circusd) by running the C(circusctl) executable of the circus installation with C(--json).
    Circus usually lives in its own virtualenv, so the Python that runs this module needs neither circus nor pyzmq.
  - The current state is read first (C(circusctl status NAME), C(circusctl get NAME numprocesses),
    C(circusctl list NAME)), so O(state=started), O(state=stopped) and O(numprocesses) are idempotent.
  - Every command that changes something is sent with C(--waiting), so circusd only answers once the processes have
    actually been spawned or stopped, and the values returned are read back from circusd afterwards.
  - Changes made with this module are runtime changes. They are lost when circusd restarts unless the circus
    configuration file says the same thing.
author:
  - Ringmaster engineers (@ringmaster)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ringmaster.stack.circus
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  name:
    description:
      - Name of the watcher, as in the C([watcher:NAME]) section of the circus configuration.
      - Circus matches watcher names case-insensitively.
    type: str
    required: true
  state:
    description:
      - V(started) makes sure the watcher is active; V(stopped) makes sure it is stopped. Both are idempotent.
      - V(restarted) stops all processes of the watcher and starts new ones. It always reports a change.
      - V(reloaded) is a graceful C(circusctl reload NAME). Circus starts new processes before stopping the old
        ones, or sends C(SIGHUP) instead if the watcher has C(send_hup) set. It always reports a change.
      - V(restarted) and V(reloaded) start a stopped watcher.
    type: str
    choices: [started, stopped, restarted, reloaded]
    default: started
  numprocesses:
    description:
      - Number of processes the watcher should run.
      - Applied with C(circusctl set NAME numprocesses N). Scaling up keeps the running processes and adds new
        ones; scaling down makes circusd stop the oldest processes.
      - Compared with the number circusd is configured to run (C(circusctl get NAME numprocesses)), which is also
        what a stopped watcher remembers. With O(state=stopped) the number is stored without starting anything.
      - When scaling and starting at the same time, the number is set first, so the watcher starts with the right
        number of processes.
      - Circus cannot start a watcher with no processes, so V(0) cannot be combined with O(state=started) on a
        stopped watcher. An active watcher may be scaled to V(0).
      - When omitted, the number of processes is left as it is.
    type: int
notes:
  - Stopping or restarting waits until the processes are gone, which can take up to the watcher's
    C(graceful_timeout). Make O(timeout) larger than that.
  - C(circusctl --json) exits with status 0 even when circusd refuses a command. The module parses every reply and
    fails with the reason circusd gives.
  - If circusd is not reachable, C(circusctl) times out after O(timeout) seconds and the module fails with the
    endpoint in its message.
seealso:
  - name: circusctl commands
    description: The circus documentation of the commands this module sends.
    link: https://circus.readthedocs.io/en/latest/for-ops/cli/
"""

EXAMPLES = r"""
- name: Make sure the handlers are running
  ringmaster.stack.circus_watcher:
    name: handler

- name: Scale the handlers to 8 processes without touching the running ones
  ringmaster.stack.circus_watcher:
    name: handler
    numprocesses: 8

- name: Gracefully reload the handlers after a code deploy
  ringmaster.stack.circus_watcher:
    name: handler
    state: reloaded

- name: Stop mongrel2, using a non-default endpoint and circusctl
  ringmaster.stack.circus_watcher:
    name: mongrel2
    state: stopped
    endpoint: tcp://127.0.0.1:5555
    circusctl: /srv/circus/bin/circusctl
    timeout: 40
"""

RETURN = r"""
name:
  description: Name of the watcher.
  returned: success
  type: str
  sample: handler
state:
  description:
    - Status of the watcher as circusd reports it after the module ran, normally V(active) or V(stopped).
    - Circus may also report V(starting) or V(stopping) while another client's command is in progress.
    - In check mode, the predicted status.
  returned: success
  type: str
  sample: active
numprocesses:
  description:
    - Number of processes circusd is configured to run for the watcher after the module ran.
    - In check mode, the predicted number.
  returned: success
  type: int
  sample: 4
pids:
  description:
    - PIDs of the live processes of the watcher after the module ran, sorted.
    - In check mode, the PIDs before any change, since new PIDs cannot be predicted.
  returned: success
  type: list
  elements: int
  sample: [2301, 2302, 2417, 2418]
previous:
  description: The watcher as it was before the module ran.
  returned: success
  type: dict
  contains:
    state:
      description: Status of the watcher before the module ran.
      type: str
      sample: active
    numprocesses:
      description: Configured number of processes before the module ran.
      type: int
      sample: 2
    pids:
      description: PIDs of the live processes before the module ran, sorted.
      type: list
      elements: int
      sample: [2301, 2302]
actions:
  description:
    - The C(circusctl) commands that changed something (or would have, in check mode), in the order they were sent,
      without the connection options and the C(--waiting)/C(--match) flags. Empty when nothing needed changing.
  returned: success
  type: list
  elements: str
  sample: ["set handler numprocesses 4"]
diff:
  description: Status and configured number of processes before and after, when run with C(--diff).
  returned: success and diff mode is on
  type: dict
  sample:
    before: {state: active, numprocesses: 2}
    after: {state: active, numprocesses: 4}
"""


import shlex

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.ringmaster.stack.plugins.module_utils.circusctl import (
    Circusctl,
    CircusError,
    connect,
    connection_argument_spec,
)

# Without --waiting circusd answers before the processes are spawned or gone, and the state read back afterwards
# could still be the old one. --match simple stops start/stop/restart from treating the watcher name as a glob.
ACTION_FLAGS = {
    "start": ("--match", "simple", "--waiting"),
    "stop": ("--match", "simple", "--waiting"),
    "restart": ("--match", "simple", "--waiting"),
    "reload": ("--waiting",),
    "set": ("--waiting",),
}

STATE_COMMANDS = {"restarted": "restart", "reloaded": "reload"}


def is_missing_watcher(reason, name):
    return (reason or "").lower() == f"program {name} not found".lower()


def parse_watcher(status_reply, get_reply, list_reply):
    return {
        # 'status NAME' replaces the reply's own "status" with the watcher's status.
        "state": status_reply["status"],
        "numprocesses": int(get_reply["options"]["numprocesses"]),
        "pids": sorted(int(pid) for pid in list_reply.get("pids", [])),
    }


def plan_actions(current, name, state, numprocesses):
    """Return the circusctl commands, as argument tuples without flags, that turn current into what is asked."""
    scale = None
    if numprocesses is not None and numprocesses != current["numprocesses"]:
        scale = ("set", name, "numprocesses", str(numprocesses))

    actions = []
    if state == "stopped":
        # Stop first: scaling an active watcher up before stopping it would spawn processes only to kill them.
        if current["state"] != "stopped":
            actions.append(("stop", name))
        if scale:
            actions.append(scale)
        return actions

    # Scale first, so that a (re)start spawns the right number of processes in one go.
    if scale:
        actions.append(scale)
    if state in STATE_COMMANDS:
        actions.append((STATE_COMMANDS[state], name))
    elif current["state"] != "active":
        actions.append(("start", name))
    return actions


def check_feasible(current, name, state, numprocesses):
    """Return why the request can never converge, or None."""
    target = current["numprocesses"] if numprocesses is None else numprocesses
    starts = state == "restarted" or (state != "stopped" and current["state"] != "active")
    if starts and target == 0:
        # circusd "starts" a watcher without processes by leaving it stopped, so every run would report a change.
        return (
            f"Cannot start watcher {name} with numprocesses=0: circusd leaves a watcher without processes "
            f"stopped. Set numprocesses above 0 or use state=stopped."
        )
    return None


def expected_state(state):
    return "stopped" if state == "stopped" else "active"


def predict(current, state, numprocesses):
    return {
        "state": expected_state(state),
        "numprocesses": current["numprocesses"] if numprocesses is None else numprocesses,
        "pids": list(current["pids"]),
    }


def summary(watcher):
    return {"state": watcher["state"], "numprocesses": watcher["numprocesses"]}


class WatcherCtl(Circusctl):
    """circusctl calls about one watcher."""

    def act(self, action):
        return self.call(*action, *ACTION_FLAGS.get(action[0], ()))

    def read(self, name):
        try:
            status_reply = self.call("status", name)
        except CircusError as e:
            if is_missing_watcher(e.reason, name):
                raise CircusError(self.missing_message(name), reason=e.reason) from e
            raise
        return parse_watcher(status_reply, self.call("get", name, "numprocesses"), self.call("list", name))

    def missing_message(self, name):
        message = f"Watcher {name} not found on circusd at {self.endpoint}"
        try:
            known = self.call("list").get("watchers", [])
        except CircusError:
            return message
        return f"{message} (known watchers: {', '.join(known) or 'none'})"


def run_module(module):
    params = module.params
    name = params["name"]
    state = params["state"]
    numprocesses = params["numprocesses"]
    if numprocesses is not None and numprocesses < 0:
        module.fail_json(msg=f"numprocesses must be 0 or more, got {numprocesses}")

    ctl = connect(module, WatcherCtl)
    result = {"changed": False, "name": name, "actions": []}

    try:
        before = ctl.read(name)
        result["previous"] = before
        problem = check_feasible(before, name, state, numprocesses)
        if problem:
            module.fail_json(msg=problem, **result)

        actions = plan_actions(before, name, state, numprocesses)
        result["actions"] = [shlex.join(action) for action in actions]
        result["changed"] = bool(actions)
        if not actions:
            after = before
        elif module.check_mode:
            after = predict(before, state, numprocesses)
        else:
            for action in actions:
                ctl.act(action)
            after = ctl.read(name)
    except CircusError as e:
        module.fail_json(msg=to_native(e), **result)

    result.update(state=after["state"], numprocesses=after["numprocesses"], pids=after["pids"])
    if module._diff:
        result["diff"] = {"before": summary(before), "after": summary(after)}

    wanted = expected_state(state)
    if actions and not module.check_mode and after["state"] != wanted:
        sent = "; ".join(result["actions"])
        module.fail_json(
            msg=f'Watcher {name} is {after["state"]} after "{sent}", expected {wanted}; see the circusd log', **result
        )
    return result


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "default": "started", "choices": ["started", "stopped", "restarted", "reloaded"]},
            "numprocesses": {"type": "int"},
            **connection_argument_spec(),
        },
        supports_check_mode=True,
    )
    module.exit_json(**run_module(module))


if __name__ == "__main__":
    main()
