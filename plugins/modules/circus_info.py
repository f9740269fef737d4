#!/usr/bin/python

# Copyright (c) 2025, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible modules put DOCUMENTATION, EXAMPLES and RETURN before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
module: circus_info
short_description: Report the watchers of a running circusd, their processes, CPU and memory use and flapping state
version_added: 0.2.0
description:
  - Reads every watcher of a live C(circusd) (C(circusctl status), C(circusctl get NAME numprocesses)) and the
    statistics of each of its processes (C(circusctl stats)), and returns them per watcher with totals.
  - The module talks to C(circusd) by running the C(circusctl) executable of the circus installation with C(--json).
    Circus usually lives in its own virtualenv, so the Python that runs this module needs neither circus nor pyzmq.
  - CPU use is measured by circusd between two C(stats) requests O(sample_interval) seconds apart.
  - The flapping state comes from the state file that ringmaster's flapping plugin writes (see O(flapping_state_file)).
  - The module never changes anything.
author:
  - Ringmaster engineers (@ringmaster)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ringmaster.stack.circus
attributes:
  check_mode:
    support: full
    details: The module only reads; it does the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  names:
    description:
      - Watchers to report. Circus matches watcher names case-insensitively.
      - When omitted, every watcher is reported, circus's own ones (C(circusd-stats), C(plugin:*)) included.
      - A name circusd does not know makes the module fail.
    type: list
    elements: str
  sample_interval:
    description:
      - Seconds between the two C(stats) requests whose difference gives each process's CPU use.
      - V(0) sends one request; the CPU use is then measured since the previous C(stats) request to circusd.
    type: float
    default: 1.0
  flapping_state_file:
    description:
      - JSON file in which ringmaster's flapping plugin records the watchers it stopped.
      - When it does not exist, or the plugin that wrote it is no longer running, every watcher's flapping state
        is V(unknown).
    type: path
    default: /run/circus/flapping.json
notes:
  - C(circusctl --json) exits with status 0 even when circusd refuses a command. The module parses every reply and
    fails with the reason circusd gives.
  - Memory use is what circusd reports, rounded to two decimals of its unit (K, M, G...).
seealso:
  - module: ringmaster.stack.circus_watcher
  - name: circusctl commands
    description: The circus documentation of the commands this module sends.
    link: https://circus.readthedocs.io/en/latest/for-ops/cli/
"""

EXAMPLES = r"""
- name: Read every watcher of this host's circusd
  ringmaster.stack.circus_info:
  register: circus

- name: Fail when a watcher gave up after flapping
  ansible.builtin.assert:
    that: circus.watchers | selectattr('flapping', 'eq', 'stopped') | list | length == 0

- name: Only the handlers, without waiting for a CPU sample
  ringmaster.stack.circus_info:
    names: [app]
    sample_interval: 0
"""

RETURN = r"""
watchers:
  description: One entry per watcher, sorted by name.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: Name of the watcher.
      type: str
      sample: app
    status:
      description: Status circusd reports, normally V(active) or V(stopped).
      type: str
      sample: active
    internal:
      description: Whether the watcher is circus's own (C(circusd-stats), a C(plugin:) watcher).
      type: bool
      sample: false
    numprocesses:
      description: Number of processes circusd is configured to run.
      type: int
      sample: 2
    processes:
      description: Number of live processes.
      type: int
      sample: 2
    pids:
      description: PIDs of the live processes, sorted.
      type: list
      elements: int
      sample: [2301, 2302]
    cpu:
      description: CPU use of all its processes, in percent of one core.
      type: float
      sample: 1.5
    rss:
      description: Resident memory of all its processes, in bytes.
      type: int
      sample: 45088768
    age:
      description: Seconds since the youngest process started; null without processes.
      type: float
      sample: 312.4
    oldest_age:
      description: Seconds since the oldest process started; null without processes.
      type: float
      sample: 4012.9
    flapping:
      description:
        - V(no), V(retrying) (stopped or restarted by the flapping plugin, which will try again),
          V(stopped) (the plugin gave up and left the watcher stopped), or V(unknown) (no plugin state).
      type: str
      sample: no
    flapping_attempt:
      description: The plugin's retry count when it last acted; null when V(flapping) is V(no) or V(unknown).
      type: int
      sample: 5
    flapping_max_retry:
      description: The retries the plugin allows this watcher; null when V(flapping) is V(no) or V(unknown).
      type: int
      sample: 5
    flapping_since:
      description: Unix time at which the plugin last acted; null when V(flapping) is V(no) or V(unknown).
      type: float
      sample: 1795853482.7
    process_list:
      description: The live processes.
      type: list
      elements: dict
      contains:
        pid:
          description: Process ID.
          type: int
        username:
          description: User the process runs as.
          type: str
        cmdline:
          description: Name of its executable.
          type: str
        cpu:
          description: CPU use in percent of one core; null when circusd could not read it.
          type: float
        memory_percent:
          description: Resident memory in percent of the host's memory; null when circusd could not read it.
          type: float
        rss:
          description: Resident memory in bytes; null when circusd could not read it.
          type: int
        age:
          description: Seconds since circusd started the process.
          type: float
totals:
  description: Sums over the reported watchers.
  returned: success
  type: dict
  contains:
    watchers:
      description: Number of watchers.
      type: int
    active:
      description: Number of active watchers.
      type: int
    processes:
      description: Number of live processes.
      type: int
    cpu:
      description: CPU use in percent of one core.
      type: float
    rss:
      description: Resident memory in bytes.
      type: int
    flapping:
      description: Number of watchers whose flapping state is V(retrying) or V(stopped).
      type: int
  sample: {watchers: 4, active: 4, processes: 5, cpu: 2.5, rss: 104857600, flapping: 0}
"""


import json
import os
import re
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.ringmaster.stack.plugins.module_utils.circusctl import (
    CircusError,
    connect,
    connection_argument_spec,
)

DEFAULT_STATE_FILE = "/run/circus/flapping.json"

# circus.util.bytes2human: powers of 1024, two decimals.
UNITS = "BKMGTPEZY"
SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([BKMGTPEZY])$")


def parse_size(text):
    """circusd's human-readable size ('21.50M', '512B') in bytes, or None ('N/A')."""
    match = SIZE.match(str(text).strip())
    if not match:
        return None
    return round(float(match.group(1)) * 1024 ** UNITS.index(match.group(2)))


def number(value):
    """A float from circusd's stats, or None for 'N/A' and the like."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def parse_processes(infos):
    """The live processes of one watcher from a stats reply ({pid: info or 'No such process'})."""
    processes = []
    for key, info in (infos or {}).items():
        if not isinstance(info, dict):
            continue  # a process that died between circusd listing and reading it
        pid = info.get("pid", key)
        try:
            pid = int(pid)
        except (TypeError, ValueError):
            pid = int(key)
        processes.append(
            {
                "pid": pid,
                "username": info.get("username"),
                "cmdline": info.get("cmdline"),
                "cpu": number(info.get("cpu")),
                "memory_percent": number(info.get("mem")),
                "rss": parse_size(info.get("mem_info1")),
                "age": number(info.get("age")),
            }
        )
    return sorted(processes, key=lambda p: p["pid"])


def is_internal(name):
    return name == "circusd-stats" or name.startswith("plugin:")


def load_flapping(path, pid_alive=None):
    """The watchers section of the flapping plugin's state file, or None when there is no live plugin state."""
    pid_alive = pid_alive or (lambda pid: os.path.exists(f"/proc/{pid}"))
    try:
        with open(path) as handle:
            document = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("watchers"), dict):
        return None
    pid = document.get("pid")
    if isinstance(pid, int) and not pid_alive(pid):
        return None
    return document["watchers"]


def flapping_of(states, name, status):
    """(state, entry) of one watcher: the plugin's record, reconciled with what circusd says now."""
    if states is None:
        return "unknown", None
    entry = states.get(name)
    if not isinstance(entry, dict):
        return "no", None
    state = entry.get("state")
    if state == "retrying":
        return "retrying", entry
    # Given up, unless someone started it again since.
    if state == "stopped" and status == "stopped":
        return "stopped", entry
    return "no", None


def watcher_report(name, status, numprocesses, processes, states):
    ages = [p["age"] for p in processes if p["age"] is not None]
    flapping, entry = flapping_of(states, name, status)
    entry = entry or {}
    return {
        "name": name,
        "status": status,
        "internal": is_internal(name),
        "numprocesses": numprocesses,
        "processes": len(processes),
        "pids": [p["pid"] for p in processes],
        "cpu": round(sum(p["cpu"] or 0.0 for p in processes), 2),
        "rss": sum(p["rss"] or 0 for p in processes),
        "age": round(min(ages), 1) if ages else None,
        "oldest_age": round(max(ages), 1) if ages else None,
        "flapping": flapping,
        "flapping_attempt": entry.get("attempt"),
        "flapping_max_retry": entry.get("max_retry"),
        "flapping_since": entry.get("since"),
        "process_list": processes,
    }


def totals_of(watchers):
    return {
        "watchers": len(watchers),
        "active": sum(1 for w in watchers if w["status"] == "active"),
        "processes": sum(w["processes"] for w in watchers),
        "cpu": round(sum(w["cpu"] for w in watchers), 2),
        "rss": sum(w["rss"] for w in watchers),
        "flapping": sum(1 for w in watchers if w["flapping"] in ("retrying", "stopped")),
    }


def collect(ctl, names, sample_interval, states):
    statuses = ctl.call("status").get("statuses", {})
    known = {name.lower(): name for name in statuses}
    if names:
        missing = [n for n in names if n.lower() not in known]
        if missing:
            raise CircusError(
                f"Watcher(s) {', '.join(missing)} not found on circusd at {ctl.endpoint} "
                f"(known watchers: {', '.join(sorted(statuses)) or 'none'})"
            )
        selected = sorted({known[n.lower()] for n in names})
    else:
        selected = sorted(statuses)

    if sample_interval > 0:
        # The first request starts circusd's CPU measurement of each process; the second reads it.
        ctl.call("stats")
        time.sleep(sample_interval)
    infos = ctl.call("stats").get("infos", {})

    watchers = []
    for name in selected:
        try:
            numprocesses = int(ctl.call("get", name, "numprocesses")["options"]["numprocesses"])
        except CircusError as e:
            if "not found" in (e.reason or ""):
                continue  # removed while we were reading
            raise
        watchers.append(watcher_report(name, statuses[name], numprocesses, parse_processes(infos.get(name)), states))
    return watchers


def run_module(module):
    params = module.params
    if params["sample_interval"] < 0:
        module.fail_json(msg=f"sample_interval must be 0 or more, got {params['sample_interval']}")
    ctl = connect(module)
    states = load_flapping(params["flapping_state_file"])
    try:
        watchers = collect(ctl, params["names"], params["sample_interval"], states)
    except CircusError as e:
        module.fail_json(msg=to_native(e))
    return {"changed": False, "watchers": watchers, "totals": totals_of(watchers)}


def main():
    module = AnsibleModule(
        argument_spec={
            "names": {"type": "list", "elements": "str"},
            "sample_interval": {"type": "float", "default": 1.0},
            "flapping_state_file": {"type": "path", "default": DEFAULT_STATE_FILE},
            **connection_argument_spec(),
        },
        supports_check_mode=True,
    )
    module.exit_json(**run_module(module))


if __name__ == "__main__":
    main()
