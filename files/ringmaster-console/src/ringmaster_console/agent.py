"""What an agent answers: the watchers' state (``status``) and the actions (``act``).

Both talk to circusd through a ``CircusClient`` and read /proc; the loop that receives the
console's requests is in ``agent_loop.py``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from ringmaster_console import appmetrics, procfs
from ringmaster_console.circusd import CircusClient, CircusError
from ringmaster_console.config import AgentConfig
from ringmaster_console.persist import PersistError, persist_count
from ringmaster_console.protocol import Request
from ringmaster_console.restarts import RestartCounter


def read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def load_flapping(path: str | None) -> dict | None:
    """The flapping plugin's records, or None when no live plugin wrote them (the same reading
    as ``ringmaster.stack.circus_info``)."""
    if not path:
        return None
    try:
        document = json.loads(read(path) or "")
    except ValueError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("watchers"), dict):
        return None
    pid = document.get("pid")
    if isinstance(pid, int) and not os.path.exists(f"/proc/{pid}"):
        return None
    return document["watchers"]


def flapping_of(states: dict | None, name: str, status: str) -> str:
    """no, retrying (stopped by the plugin, which will start it again), stopped (gave up) or
    unknown (no plugin state)."""
    if states is None:
        return "unknown"
    entry = states.get(name)
    if not isinstance(entry, dict):
        return "no"
    if entry.get("state") == "retrying":
        return "retrying"
    if entry.get("state") == "stopped" and status == "stopped":
        return "stopped"
    return "no"


def process_rows(
    pids: list[int],
    stats: dict[int, procfs.Stat],
    rss: dict[int, int | None],
    cpu: dict[int, float | None],
    uptime: float | None,
) -> list[dict]:
    rows = []
    for pid in sorted(pids):
        stat = stats.get(pid)
        rows.append(
            {
                "pid": pid,
                "cpu": cpu.get(pid),
                "rss": rss.get(pid),
                "age": round(procfs.age_seconds(stat.start_ticks, uptime), 1)
                if stat is not None and uptime is not None
                else None,
            }
        )
    return rows


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        restarts: RestartCounter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.restarts = restarts or RestartCounter()
        self.cpu = procfs.CpuMeter()
        self.clock = clock

    def known(self, circus: CircusClient) -> set[str]:
        return set(circus.call("list").get("watchers", []))

    def status(self, circus: CircusClient) -> dict:
        statuses = circus.call("status").get("statuses", {})
        flapping = load_flapping(self.config.flapping_state_file)
        uptime = procfs.parse_uptime(read("/proc/uptime") or "")
        watchers, all_pids = [], {}
        for name in sorted(statuses):
            if name.startswith("plugin:"):
                continue
            pids = [int(p) for p in circus.call("list", name=name).get("pids", [])]
            numprocesses = circus.call("get", name=name, keys=["numprocesses"])["options"][
                "numprocesses"
            ]
            all_pids[name] = pids
            watchers.append(
                {
                    "name": name,
                    "status": statuses[name],
                    "numprocesses": int(numprocesses),
                    "flapping": flapping_of(flapping, name, statuses[name]),
                    "restarts": self.restarts.of(name),
                    "scalable": name in self.config.scalable,
                }
            )
        stats: dict[int, procfs.Stat] = {}
        rss: dict[int, int | None] = {}
        for pids in all_pids.values():
            for pid in pids:
                stat = procfs.parse_stat(read(f"/proc/{pid}/stat") or "")
                if stat is not None:
                    stats[pid] = stat
                rss[pid] = procfs.parse_rss(read(f"/proc/{pid}/statm") or "")
        cpu = self.cpu.update(self.clock(), stats)
        for watcher in watchers:
            watcher["processes"] = process_rows(all_pids[watcher["name"]], stats, rss, cpu, uptime)
        reply = {"ok": True, "max_processes": self.config.max_processes, "watchers": watchers}
        if self.config.metrics:
            reply["apps"] = {app: self.app_metrics(app, url) for app, url in self.config.metrics}
        return reply

    def app_metrics(self, app: str, url: str) -> dict:
        """The app's counters from its dispatcher's page (loopback, answered by its recorder
        process, so within milliseconds; half a second at most)."""
        try:
            with urllib.request.urlopen(url, timeout=0.5) as response:
                return appmetrics.sample(response.read(1 << 20).decode("utf-8", "replace"), app)
        except (OSError, urllib.error.URLError) as exc:
            return {"error": f"{url}: {getattr(exc, 'reason', exc)}"}

    def act(self, circus: CircusClient, request: Request) -> dict:
        """Carry out a checked action; the reply says what happened."""
        name, timeout = request.watcher, self.config.action_timeout
        try:
            if request.op == "scale":
                circus.act(
                    "set", timeout, name=name, options={"numprocesses": request.count}, waiting=True
                )
            elif request.op == "reload":
                circus.act("reload", timeout, name=name, graceful=True, waiting=True)
            elif request.op == "restart":
                circus.act("restart", timeout, name=name, match="simple", waiting=True)
            pids = sorted(int(p) for p in circus.call("list", name=name).get("pids", []))
        except CircusError as exc:
            return {"ok": False, "error": str(exc)}
        reply = {"ok": True, "op": request.op, "watcher": name, "pids": pids}
        if request.op == "scale":
            reply["count"] = request.count
            try:
                persist_count(
                    os.path.join(self.config.include_dir, f"{name}.ini"),
                    self.config.fact_file,
                    name,
                    request.count,
                )
            except (PersistError, OSError) as exc:
                return {
                    **reply,
                    "ok": False,
                    "error": f"scaled to {request.count} live, but not remembered: {exc}",
                }
        return reply
