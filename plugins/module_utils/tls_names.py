# Copyright (c) 2025, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Host name matching for TLS certificates: shared by the tls_problems and mongrel2_servers filters."""

from __future__ import annotations


def covers(pattern: str, name: str) -> bool:
    """Whether a certificate or entry name covers a host name: equal, or a wildcard for exactly one
    leftmost label (RFC 6125, and the only wildcard Mongrel2 looks up: _.<rest>.crt)."""
    if pattern == name:
        return True
    if pattern.startswith("*.") and not name.startswith("*."):
        head, dot, rest = name.partition(".")
        return bool(head) and bool(dot) and rest == pattern[2:]
    return False
