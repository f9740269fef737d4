# Copyright (c) 2026, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet console's inputs: its password hash judged, the agents' settings, CURVE public keys."""

from __future__ import annotations

import re

DOCUMENTATION = r"""
name: console_password_problem
short_description: What is wrong with the console's password hash, in a sentence naming the variable
version_added: 0.4.0
description:
  - Judges O(_input), the C(console_password_hash) of the console role, without ever repeating it.
  - Accepts only what C(ringmaster-console-hash) makes, or as strong (Werkzeug's formats),
    C(scrypt:N:r:p$salt$hash) with N at least 32768 and r at least 8, or C(pbkdf2:sha256:iterations$salt$hash)
    (or sha512) with at least 600000 iterations.
  - Refuses a missing or empty value, something that is not a hash (a plain password), an unknown method, and weaker
    parameters.
  - Returns an empty string when the hash is good.
options:
  _input:
    description: The password hash.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: The password hash is one ringmaster-console-hash makes
  ansible.builtin.assert:
    that: console_password_hash | ringmaster.stack.console_password_problem == ''
    fail_msg: "{{ console_password_hash | ringmaster.stack.console_password_problem }}"
  no_log: true
"""

RETURN = r"""
_value:
  description: One sentence naming C(console_password_hash), or an empty string.
  type: str
"""

VAR = "console_password_hash"
HINT = "make it with ringmaster-console-hash (it reads the password on standard input) and keep it in ansible-vault"
# Werkzeug's scrypt default (what ringmaster-console-hash makes): N = 2**15, r = 8, p = 1.
SCRYPT_MIN_N = 32768
SCRYPT_MIN_R = 8
# OWASP's 2023 floor for PBKDF2-HMAC-SHA256; Werkzeug 3 makes 1,000,000 by default.
PBKDF2_MIN_ITERATIONS = 600000
_SALT_HASH = re.compile(r"^[A-Za-z0-9./+=_-]{8,}\$[0-9a-f]{32,}$")
_SCRYPT = re.compile(r"^scrypt:([0-9]+):([0-9]+):([0-9]+)$")
_PBKDF2 = re.compile(r"^pbkdf2:(sha256|sha512):([0-9]+)$")


def console_password_problem(value: object) -> str:
    """A sentence naming the variable, or '' when the hash is good; never contains the value."""
    if value is None or value == "":
        return f"{VAR} is not set: the console needs a password hash; {HINT}."
    if not isinstance(value, str):
        return f"{VAR} must be a string (a password hash), got a {type(value).__name__}."
    method, sep, rest = value.partition("$")
    if not sep or not _SALT_HASH.match(rest):
        return f"{VAR} is not a password hash (a plain password?); {HINT}."
    scrypt = _SCRYPT.match(method)
    if scrypt:
        n, r, p = (int(x) for x in scrypt.groups())
        if n < SCRYPT_MIN_N or n & (n - 1) or r < SCRYPT_MIN_R or p < 1:
            return (
                f"{VAR} is a weak scrypt hash (N={n}, r={r}, p={p}); at least N={SCRYPT_MIN_N} (a power of 2) "
                f"and r={SCRYPT_MIN_R}; {HINT}."
            )
        return ""
    pbkdf2 = _PBKDF2.match(method)
    if pbkdf2:
        iterations = int(pbkdf2.group(2))
        if iterations < PBKDF2_MIN_ITERATIONS:
            return f"{VAR} is a weak pbkdf2 hash ({iterations} iterations, at least {PBKDF2_MIN_ITERATIONS}); {HINT}."
        return ""
    shown = method if re.match(r"^[a-z0-9]{1,16}(:[0-9a-z]{1,16}){0,3}$", method) else "an unknown method"
    return f"{VAR} uses {shown}; only scrypt or pbkdf2:sha256/sha512 hashes are accepted; {HINT}."


_PUBLIC_KEY = re.compile(r'^\s*public-key\s*=\s*"([0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40})"\s*$', re.M)


def curve_public_key(text: object) -> str:
    """The Z85 public key of a ZeroMQ certificate (a ``NAME.key`` file); '' when there is none."""
    if not isinstance(text, str):
        return ""
    found = _PUBLIC_KEY.findall(text)
    return found[0] if len(found) == 1 else ""


def console_agent_apps(apps: list, host: str, groups: dict, front_group: str, console_app: str) -> dict:
    """What one host's agent serves: the apps it may scale and the fronts' dispatcher metrics pages.

    ``apps`` is the expanded ringmaster_apps (``[{name, vars}]``). An app is scalable on the hosts of
    its worker group, except the console's own app (scaling it from its own page could stop the page).
    A front reads each app's dispatcher /metrics page, for apps in dispatcher mode with metrics on.
    """
    scale: list[str] = []
    metrics: dict[str, str] = {}
    is_front = host in (groups.get(front_group) or [])
    for app in apps or []:
        name, values = app["name"], app["vars"]
        if name != console_app and host in (groups.get(values.get("wsgi_app_worker_group")) or []):
            scale.append(name)
        port = int(values.get("wsgi_app_dispatcher_metrics_port") or 0)
        if is_front and values.get("wsgi_app_mode") == "dispatcher" and port > 0:
            address = values.get("wsgi_app_dispatcher_metrics_address") or "127.0.0.1"
            if address == "0.0.0.0":
                address = "127.0.0.1"
            metrics[name] = f"http://{address}:{port}/metrics"
    return {"scale": scale, "metrics": metrics}


def toml_string(value: object) -> str:
    """A TOML basic string for any text (JSON's escapes are TOML's for these)."""
    text = str(value)
    out = ['"']
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


class FilterModule:
    def filters(self):
        return {
            "console_password_problem": console_password_problem,
            "curve_public_key": curve_public_key,
            "console_agent_apps": console_agent_apps,
            "toml_string": toml_string,
        }
