# Copyright (c) 2025, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet view of playbooks/status.yml: rows, totals and the table, from circus_info results."""

from __future__ import annotations

DOCUMENTATION = r"""
name: fleet_status
short_description: Fleet-wide status from the circus_info results of every host
version_added: 0.2.0
description:
  - Takes a dictionary of host name to the registered result of M(ringmaster.stack.circus_info) and returns
    one row per host and watcher, per-watcher and fleet totals, and a text table.
  - Hosts in O(hosts) without a result are listed in C(fleet.unreachable_or_failed).
options:
  _input:
    description: Host name to the registered result of M(ringmaster.stack.circus_info).
    type: dict
    required: true
  hosts:
    description: Every host that should have answered.
    type: list
    elements: str
    required: true
  internal:
    description: Also list circus's own watchers (C(circusd-stats), C(plugin:*)).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Show the fleet
  ansible.builtin.debug:
    msg: "{{ (reads | ringmaster.stack.fleet_status(groups['all'])).table }}"
"""

RETURN = r"""
_value:
  description:
    - C(watchers) (rows), C(fleet) (C(watchers) totals by name, C(total), C(unreachable_or_failed)) and C(table).
  type: dict
"""

FLAPPING = ("retrying", "stopped")
MIB = 1048576


def fleet_rows(reads, internal=False):
    """One row per host and watcher, hosts in the order given."""
    rows = []
    for host, result in reads.items():
        for watcher in result.get("watchers", []):
            if internal or not watcher.get("internal"):
                rows.append({**watcher, "host": host})
    return rows


def _add(total, row):
    total["processes"] += row["processes"]
    total["cpu"] = round(total["cpu"] + row["cpu"], 2)
    total["rss"] += row["rss"]
    total["active"] += 1 if row["status"] == "active" else 0
    total["flapping"] += 1 if row["flapping"] in FLAPPING else 0


def fleet_totals(rows, hosts, read):
    by_watcher = {}
    total = {
        "hosts": len(read),
        "watchers": len(rows),
        "active": 0,
        "processes": 0,
        "cpu": 0.0,
        "rss": 0,
        "flapping": 0,
    }
    for row in rows:
        entry = by_watcher.setdefault(
            row["name"], {"hosts": 0, "active": 0, "processes": 0, "cpu": 0.0, "rss": 0, "flapping": 0}
        )
        entry["hosts"] += 1
        _add(entry, row)
        _add(total, row)
    return {
        "watchers": by_watcher,
        "total": total,
        "unreachable_or_failed": [host for host in hosts if host not in read],
    }


def format_age(seconds):
    if seconds is None:
        return "-"
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def fleet_table(rows, fleet):
    hw = max([4] + [len(r["host"]) for r in rows])
    ww = max([7] + [len(r["name"]) for r in rows])
    line = f"%-{hw}s  %-{ww}s  %-8s  %-8s  %5s  %6s  %9s  %7s  %s"
    out = [line % ("HOST", "WATCHER", "STATUS", "FLAPPING", "PROCS", "CPU%", "RSS MiB", "AGE", "PIDS")]
    for r in rows:
        flap = r["flapping"]
        if flap in FLAPPING:
            flap += f" {r.get('flapping_attempt')}/{r.get('flapping_max_retry')}"
        out.append(
            line
            % (
                r["host"],
                r["name"],
                r["status"],
                flap,
                f"{r['processes']}/{r['numprocesses']}",
                f"{r['cpu']:.1f}",
                f"{r['rss'] / MIB:.1f}",
                format_age(r.get("age")),
                ",".join(str(p) for p in r.get("pids", [])),
            )
        )
    out.append("")
    fleet_line = f"%-{ww}s  %5s  %6s  %6s  %9s  %s"
    out.append(fleet_line % ("FLEET", "HOSTS", "PROCS", "CPU%", "RSS MiB", "NOT ACTIVE / FLAPPING"))
    for name, t in sorted(fleet["watchers"].items()):
        out.append(
            fleet_line
            % (
                name,
                t["hosts"],
                t["processes"],
                f"{t['cpu']:.1f}",
                f"{t['rss'] / MIB:.1f}",
                f"{t['hosts'] - t['active']} / {t['flapping']}",
            )
        )
    t = fleet["total"]
    out.append(
        fleet_line
        % (
            "(all)",
            t["hosts"],
            t["processes"],
            f"{t['cpu']:.1f}",
            f"{t['rss'] / MIB:.1f}",
            f"{t['watchers'] - t['active']} / {t['flapping']}",
        )
    )
    return "\n".join(out)


def fleet_status(reads, hosts, internal=False):
    reads = {host: reads[host] for host in hosts if host in reads and isinstance(reads[host], dict)}
    reads = {host: result for host, result in reads.items() if "watchers" in result}
    rows = fleet_rows(reads, internal)
    fleet = fleet_totals(rows, hosts, reads)
    return {"watchers": rows, "fleet": fleet, "table": fleet_table(rows, fleet)}


class FilterModule:
    def filters(self):
        return {"fleet_status": fleet_status}
