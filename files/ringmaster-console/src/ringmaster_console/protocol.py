"""The messages between the console and an agent, and how the agent checks them.

One JSON object per ZeroMQ message. A request is ``{"id": str, "op": ..., ...}``:

- ``{"op": "status"}``: the watchers and their processes;
- ``{"op": "scale", "watcher": NAME, "count": N}``: set the watcher's process count, live and
  persisted (``persist.py``);
- ``{"op": "reload", "watcher": NAME}``: graceful reload (new processes before the old stop);
- ``{"op": "restart", "watcher": NAME}``: stop every process, start new ones.

A reply is ``{"id": same, "ok": true, ...}`` or ``{"id": same, "ok": false, "error": text}``.
Everything the console sends is checked here before circusd hears of it: an unknown op or
watcher, a count that is not a whole number or is above the agent's cap is refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

OPS = ("status", "scale", "reload", "restart")
ACTIONS = ("scale", "reload", "restart")
# Larger requests are refused unread (a status request is about 60 bytes).
MAX_REQUEST_BYTES = 4096
ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# circus watcher names; ours are app names ([a-z0-9_-]) and mongrel2, dispatchers' names.
WATCHER = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


class RequestError(ValueError):
    """A request refused before anything was done; the text goes back to the console."""


@dataclass(frozen=True, slots=True)
class Request:
    id: str
    op: str
    watcher: str | None = None
    count: int | None = None


def whole_number(value: object, cap: int, what: str = "count") -> int:
    """``value`` if it is a whole number from 0 to ``cap`` (JSON int or decimal digits)."""
    if isinstance(value, bool):
        raise RequestError(f"{what} must be a whole number, got {json.dumps(value)}")
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[0-9]{1,6}", text):
            raise RequestError(f"{what} must be a whole number, got {json.dumps(value)}")
        value = int(text)
    if not isinstance(value, int):
        raise RequestError(f"{what} must be a whole number, got {json.dumps(value)}")
    if value < 0:
        raise RequestError(f"{what} must be 0 or more, got {value}")
    if value > cap:
        raise RequestError(f"{what} {value} is above the cap of {cap}")
    return value


def parse_request(raw: bytes, known: set[str], scalable: set[str], cap: int) -> Request:
    """Check one request against the watchers circusd has (``known``), those the agent may
    scale (``scalable``) and the cap on a count. Raises RequestError."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise RequestError(f"request too large ({len(raw)} bytes)")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise RequestError("request is not JSON") from None
    if not isinstance(body, dict):
        raise RequestError("request is not a JSON object")
    request_id = body.get("id")
    if not isinstance(request_id, str) or not ID.match(request_id):
        raise RequestError("request has no valid id")
    op = body.get("op")
    if op not in OPS:
        raise RequestError(f"unknown op {json.dumps(op)[:40]}")
    allowed = (
        {"id", "op"}
        | ({"watcher"} if op in ACTIONS else set())
        | ({"count"} if op == "scale" else set())
    )
    extra = sorted(set(body) - allowed)
    if extra:
        raise RequestError(f"unexpected fields for {op}: {', '.join(extra)[:80]}")
    if op == "status":
        return Request(request_id, op)
    watcher = body.get("watcher")
    if not isinstance(watcher, str) or not WATCHER.match(watcher):
        raise RequestError("watcher must be a watcher name")
    if watcher not in known:
        raise RequestError(f"unknown watcher {watcher}")
    if watcher.startswith("plugin:"):
        raise RequestError(f"{watcher} is one of circusd's own plugins")
    if op != "scale":
        return Request(request_id, op, watcher)
    if watcher not in scalable:
        raise RequestError(f"watcher {watcher} is not one this agent may scale")
    if "count" not in body:
        raise RequestError("scale needs a count")
    return Request(request_id, op, watcher, whole_number(body["count"], cap))


def request_id_of(raw: bytes) -> str | None:
    """The id of a request that was refused, when it has a usable one (for the reply)."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    value = body.get("id") if isinstance(body, dict) else None
    return value if isinstance(value, str) and ID.match(value) else None


def encode(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()
