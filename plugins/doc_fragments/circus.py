# Copyright (c) 2025, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # How every module of this collection reaches circusd. The circus role owns these values and
    # hands them to the modules through the ringmaster.stack.circus action group (module_defaults).
    DOCUMENTATION = r"""
options:
  endpoint:
    description:
      - The control endpoint of circusd (the C(endpoint) option of the C([circus]) section).
    type: str
    default: ipc:///run/circus/control.sock
  circusctl:
    description:
      - Path to the C(circusctl) executable, normally the one in the virtualenv circus is installed in.
      - A bare command name is looked up in E(PATH).
    type: path
    default: /opt/ringmaster/circus/venv/bin/circusctl
  timeout:
    description:
      - Seconds to wait for each answer of circusd (the C(--timeout) of C(circusctl)).
      - At least V(1).
    type: int
    default: 10
requirements:
  - A running C(circusd) whose control endpoint is reachable from the managed host.
  - The C(circusctl) executable of circus on the managed host (see O(circusctl)).
"""
