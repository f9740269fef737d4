"""What the console's forms ask for, checked and planned before anything is sent (pure).

A scale is app-wide: a total spread over the hosts that run the app and answered, as
``playbooks/scale.yml`` spreads it. A reload or a restart is one watcher on one host.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringmaster_console.fleet import Spread, SpreadError, spread
from ringmaster_console.protocol import WATCHER, RequestError, whole_number

OPS = {"scale": "Set the process count of", "reload": "Gracefully reload", "restart": "Restart"}


@dataclass(frozen=True, slots=True)
class Plan:
    op: str
    watcher: str
    count: int | None  # the total, for a scale
    targets: tuple[Spread, ...]  # (host, count); count 0 for reload and restart
    unreachable: tuple[str, ...]  # hosts that did not answer (their share is not known)

    def requests(self) -> dict[str, dict]:
        if self.op == "scale":
            return {
                t.host: {"op": "scale", "watcher": self.watcher, "count": t.count}
                for t in self.targets
            }
        return {t.host: {"op": self.op, "watcher": self.watcher} for t in self.targets}

    def describe(self) -> str:
        if self.op == "scale":
            shares = ", ".join(f"{t.host}: {t.count}" for t in self.targets)
            return f"Set {self.watcher} to {self.count} processes in all ({shares})"
        return f"{OPS[self.op]} {self.watcher} on {self.targets[0].host}"


def plan(form: dict, fleet: list[dict], cap: int, pinned: dict | None = None) -> Plan:
    """Check the form's fields against the fleet as it answered just now; RequestError says
    what is wrong, in words for the page. ``pinned``: {app: {host: count}}."""
    op = form.get("op", "")
    if op not in OPS:
        raise RequestError("unknown action")
    watcher = form.get("watcher", "")
    if not WATCHER.match(watcher):
        raise RequestError("no such watcher")
    running = [
        h for h in fleet if h["up"] and any(w["name"] == watcher for w in h.get("watchers", []))
    ]
    unreachable = tuple(h["host"] for h in fleet if not h["up"])
    if op == "scale":
        count = whole_number(form.get("count", ""), cap, "the process count")
        hosts = [
            h["host"]
            for h in running
            if any(w["name"] == watcher and w.get("scalable") for w in h["watchers"])
        ]
        if not hosts:
            raise RequestError(f"no host that answered may scale {watcher}")
        try:
            targets = spread(count, hosts, (pinned or {}).get(watcher))
        except SpreadError as exc:
            raise RequestError(str(exc)) from None
        return Plan(op, watcher, count, tuple(targets), unreachable)
    host = form.get("host", "")
    if host not in [h["host"] for h in running]:
        raise RequestError(f"{watcher} is not running on a host called {host!r} that answered")
    return Plan(op, watcher, None, (Spread(host, 0),), unreachable)
