# Copyright (c) 2025, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run ``circusctl --json`` and read its reply: shared by the circus_watcher and circus_info modules."""

from __future__ import annotations

import json
import os
import shlex

# The circus role's defaults; the role passes its real values through module_defaults.
DEFAULT_ENDPOINT = "ipc:///run/circus/control.sock"
DEFAULT_CIRCUSCTL = "/opt/ringmaster/circus/venv/bin/circusctl"
DEFAULT_TIMEOUT = 10


def connection_argument_spec():
    """The options every module has for reaching circusd (documented in the circus doc fragment)."""
    return {
        "endpoint": {"type": "str", "default": DEFAULT_ENDPOINT},
        "circusctl": {"type": "path", "default": DEFAULT_CIRCUSCTL},
        "timeout": {"type": "int", "default": DEFAULT_TIMEOUT},
    }


class CircusError(Exception):
    """circusctl got no answer, or circusd answered with an error."""

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason


def build_argv(circusctl, endpoint, timeout, args):
    return [circusctl, "--json", "--endpoint", endpoint, "--timeout", str(timeout), *args]


def load_reply(stdout):
    """Return the JSON object circusctl printed, or None."""
    lines = (stdout or "").strip().splitlines()
    # Anything the interpreter running circusctl warns about on stdout comes before the one-line reply.
    for candidate in ("\n".join(lines), lines[-1] if lines else ""):
        try:
            reply = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(reply, dict):
            return reply
    return None


def parse_reply(rc, stdout, stderr, endpoint, timeout, args):
    """Turn one circusctl --json run into circusd's reply, raising CircusError on any failure."""
    command = shlex.join(args)
    if rc != 0:
        detail = (stderr or stdout or "").strip()
        if "timed out" in detail.lower():
            raise CircusError(
                f'No answer from circusd at {endpoint} within {timeout}s to "{command}": circusd is not running or '
                f"not listening on that endpoint, or the command took longer than the timeout option allows"
            )
        last_line = detail.splitlines()[-1] if detail else "no output"
        raise CircusError(f'circusctl failed (rc={rc}) running "{command}" against circusd at {endpoint}: {last_line}')
    reply = load_reply(stdout)
    if reply is None:
        output = (stdout or stderr or "").strip() or "no output"
        raise CircusError(f'circusctl printed no JSON reply for "{command}" against circusd at {endpoint}: {output}')
    # circusctl --json exits 0 whatever circusd answers; only the reply tells a refusal apart.
    if reply.get("status") == "error":
        reason = reply.get("reason") or "unknown error"
        raise CircusError(f'circusd at {endpoint} refused "{command}": {reason}', reason=reason)
    return reply


class Circusctl:
    """Runs circusctl --json through AnsibleModule.run_command; the only code that talks to circusd."""

    def __init__(self, module, executable, endpoint, timeout):
        self.module = module
        self.executable = executable
        self.endpoint = endpoint
        self.timeout = timeout

    def call(self, *args):
        argv = build_argv(self.executable, self.endpoint, self.timeout, args)
        rc, stdout, stderr = self.module.run_command(argv, check_rc=False)
        return parse_reply(rc, stdout, stderr, self.endpoint, self.timeout, args)


def find_circusctl(module, path):
    if os.path.sep not in path:
        found = module.get_bin_path(path)
        if found:
            return found
    elif os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    module.fail_json(
        msg=f"circusctl executable not found at {path}: set the circusctl option to the circusctl of "
        f"the circus installation (usually in its virtualenv)"
    )
    return None


def connect(module, cls=Circusctl):
    """A ``cls`` for the module's connection options, after checking them (fails the module if wrong)."""
    params = module.params
    if params["timeout"] < 1:
        module.fail_json(msg=f"timeout must be at least 1 second, got {params['timeout']}")
    return cls(module, find_circusctl(module, params["circusctl"]), params["endpoint"], params["timeout"])
