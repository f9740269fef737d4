# Copyright (c) 2025, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run ``circusctl --json`` and read its reply: shared by the circus_watcher and circus_info modules."""

from __future__ import annotations

import json
import shlex


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
