# Copyright (c) 2026, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet's apps: ringmaster_apps checked and expanded into each app's role variables."""

from __future__ import annotations

import posixpath
import re

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: apps
short_description: The fleet's apps, checked, each with every variable of the app roles
version_added: 0.3.0
description:
  - Takes I(ringmaster_apps) (a list of apps, each a dictionary whose keys are the C(wsgi_app_*) and
    C(wsgi_app_dispatcher_*) variables without the C(wsgi_app_) prefix) and the values those variables
    have on the host (O(base)), and returns one entry per app with all of them set.
  - Without I(ringmaster_apps) (V(null)), the fleet has one app, the one the C(wsgi_app_*) variables describe.
  - Refuses, naming the variable, a list that is not one, an app without a valid name, a name used
    twice, a key no role knows, two apps on the same host and path, two apps sharing a port, and two
    apps sharing a data directory (C(data_dirs), one inside the other's included).
  - An app of I(ringmaster_apps) without its own C(user) or C(group) runs as the account
    C(ringmaster-<name>), unless C(wsgi_app_user)/C(wsgi_app_group) were set to something else.
options:
  _input:
    description: ringmaster_apps, or V(null) for the single app of the C(wsgi_app_*) variables.
    type: list
    elements: dict
    required: true
  base:
    description:
      - Every C(wsgi_app_*) and C(wsgi_app_dispatcher_*) variable of the roles' argument specs, with its
        value on the host.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: The apps
  ansible.builtin.set_fact:
    _ringmaster_apps: "{{ ringmaster_apps | default(none) | ringmaster.stack.apps(base) }}"
"""

RETURN = r"""
_value:
  description: One entry per app, in the order given.
  type: list
  elements: dict
  contains:
    name:
      description: The app's name.
      type: str
    vars:
      description: Every variable of O(base), with the app's own values.
      type: dict
"""


PREFIX = "wsgi_app_"
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# The role defaults of the account; an app listed in ringmaster_apps gets its own instead.
SHARED_ACCOUNT = "ringmaster"
PORTS = ("dispatcher_port", "front_send_port", "front_recv_port")
# Ports a dispatcher on the fronts listens on only when set (0: off): the
# inventory's value is every app's unless an entry sets its own.
OPTIONAL_PORTS = ("dispatcher_metrics_port",)


def _fail(message: str) -> None:
    raise AnsibleFilterError(message)


def _where(index: int, app: object) -> str:
    name = app.get("name") if isinstance(app, dict) else None
    return f"ringmaster_apps[{index}]" + (f" ({name})" if isinstance(name, str) else "")


def _route_key(host: str, path: str) -> tuple[str, str]:
    return (host.lower(), path)


def expand(apps: list | None, base: dict) -> list[dict]:
    """Each app's full variables; raises AnsibleFilterError naming the variable on bad input."""
    if not isinstance(base, dict) or f"{PREFIX}name" not in base:
        _fail("apps: base must hold the wsgi_app_* variables (wsgi_app_name at least)")
    if apps is None:
        return [{"name": str(base[f"{PREFIX}name"]), "vars": dict(base)}]
    if not isinstance(apps, list) or not apps:
        # The type only: the value may hold the apps' secrets (env).
        got = "an empty list" if apps == [] else type(apps).__name__
        _fail(f"ringmaster_apps must be a non-empty list of apps; got {got}")
    known = sorted(key[len(PREFIX) :] for key in base if key.startswith(PREFIX))
    out: list[dict] = []
    names: dict[str, int] = {}
    for index, app in enumerate(apps):
        where = _where(index, app)
        if not isinstance(app, dict):
            _fail(f"{where} must be a dictionary of the app's settings; got {type(app).__name__}")
        name = app.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            _fail(f"{where}: name must be 1-32 lowercase letters, digits, _ or -, starting with a letter; got {name!r}")
        if name in names:
            _fail(f"{where}: the name {name!r} is already used by ringmaster_apps[{names[name]}]")
        names[name] = index
        unknown = sorted(key for key in app if key not in known)
        if unknown:
            hint = "an app takes the wsgi_app_* variables without wsgi_app_"
            _fail(f"{where}: unknown setting(s) {', '.join(unknown)}; {hint}")
        values = dict(base)
        for account in ("user", "group"):
            if account not in app and base.get(PREFIX + account) == SHARED_ACCOUNT:
                values[PREFIX + account] = f"ringmaster-{name}"
        values.update({PREFIX + key: value for key, value in app.items()})
        out.append({"name": name, "vars": values})
    _check_routes(apps, out)
    _check_ports(apps, out)
    _check_data_dirs(apps, out)
    return out


def _check_routes(apps: list, out: list[dict]) -> None:
    claimed: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(out):
        where = _where(index, apps[index])
        hosts = entry["vars"].get(PREFIX + "hosts", [])
        path = entry["vars"].get(PREFIX + "path", "/")
        if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
            _fail(f"{where}: hosts must be a list of host names; got {hosts!r}")
        if not isinstance(path, str) or not path.startswith("/"):
            _fail(f"{where}: path must start with /; got {path!r}")
        for host in hosts or [""]:
            key = _route_key(host, path)
            if key in claimed:
                shown = host or "the default host"
                _fail(f"{where}: {shown} {path} is already claimed by {_where(claimed[key], apps[claimed[key]])}")
            claimed[key] = index


def _check_ports(apps: list, out: list[dict]) -> None:
    owner: dict[int, tuple[int, str]] = {}
    for index, entry in enumerate(out):
        where = _where(index, apps[index])
        for setting in PORTS + OPTIONAL_PORTS:
            value = entry["vars"].get(PREFIX + setting)
            if value is None:
                continue
            try:
                port = int(value)
            except (TypeError, ValueError):
                _fail(f"{where}: {setting} must be a port number; got {value!r}")
            if setting in OPTIONAL_PORTS and port == 0:
                continue
            if port in owner and owner[port][0] != index:
                other, other_setting = owner[port]
                _fail(
                    f"{where}: {setting} {port} is already {other_setting} of {_where(other, apps[other])}; "
                    f"give each app its own {', '.join(PORTS)} and, when set, {', '.join(OPTIONAL_PORTS)}"
                )
            owner[port] = (index, setting)


def static_route(name: str, url: str) -> dict:
    """The Dir route that serves an app's static files on the fronts: its live/ tree in the chroot
    (roles/wsgi_app/vars/main.yml, _wsgi_app_static_root), for one app or each of several."""
    # Mongrel2 knows no type for .woff2, .mjs, .map, .webp or .avif (docs/operating.md).
    return {"path": url, "dir": f"app-static/{name}/live/", "default_ctype": "application/octet-stream"}


def _within(inner: str, outer: str) -> bool:
    """inner is outer or below it (both normalised absolute paths)."""
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def _check_data_dirs(apps: list, out: list[dict]) -> None:
    # Each app's own list is checked by the role's preflight (data_dirs_problems); here only
    # what no single app can see: two apps would chown one directory to each other in turn.
    owner: list[tuple[str, int]] = []
    for index, entry in enumerate(out):
        dirs = entry["vars"].get(PREFIX + "data_dirs") or []
        if not isinstance(dirs, list):
            continue
        for path in (d for d in dirs if isinstance(d, str)):
            for other_path, other in owner:
                if other != index and (_within(path, other_path) or _within(other_path, path)):
                    where, there = _where(index, apps[index]), _where(other, apps[other])
                    _fail(f"{where}: data_dirs {path} overlaps {other_path} of {there}; each app needs its own")
            owner.append((path, index))


# Directories the system empties at boot or the kernel provides: nothing kept there survives.
VOLATILE = ("/tmp", "/run", "/proc", "/sys", "/dev", "/var/tmp", "/var/run", "/var/lock")
# Read-only (ProtectSystem=full) or hidden (ProtectHome) to every watcher under circusd's
# sandbox (roles/circus/templates/circusd.service.j2): the app could not write there.
SANDBOXED = ("/usr", "/boot", "/efi", "/etc", "/home", "/root")
# Directories whose direct children the system or other programs share (/var/lib, /var/log):
# making one of them the app's would hand it everything below.
SHARED_PARENTS = ("/var",)


def data_dirs_problems(dirs: list, reserved: dict) -> list[str]:
    """What is wrong with wsgi_app_data_dirs, one message per problem naming the entry; [] if nothing.

    reserved maps variable names to directories the roles manage themselves (wsgi_app_base_dir,
    wsgi_app_curve_dir): a data directory may be neither inside one nor above one.
    """
    name = f"{PREFIX}data_dirs"
    if not isinstance(dirs, list):
        return [f"{name} must be a list of absolute paths; got {type(dirs).__name__}"]
    problems: list[str] = []
    seen: list[str] = []
    for index, path in enumerate(dirs):
        where = f"{name}[{index}]"
        if not isinstance(path, str) or not path.startswith("/") or re.search(r"\s", path):
            problems.append(f"{where} must be an absolute path without spaces; got {path!r}")
            continue
        if path == "/" or posixpath.normpath(path) != path or path.startswith("//"):
            problems.append(f"{where} must be a plain absolute path other than / (no .., //, trailing /); got {path!r}")
            continue
        top = "/" + path.split("/")[1]
        if any(_within(path, v) for v in VOLATILE):
            problems.append(f"{where} {path} is emptied at boot or provided by the kernel; data there is lost")
        elif any(_within(path, f) for f in SANDBOXED):
            problems.append(
                f"{where} {path} is in {top}, read-only or hidden to the app under circusd's sandbox "
                "(ProtectSystem=full, ProtectHome)"
            )
        elif path.count("/") == 1 or posixpath.dirname(path) in SHARED_PARENTS:
            problems.append(
                f"{where} {path} is a directory the system or other programs share; "
                "name one of the app's own below it (e.g. /var/lib/<app>)"
            )
        for variable, managed in sorted((reserved or {}).items()):
            if (
                isinstance(managed, str)
                and managed.startswith("/")
                and (_within(path, managed) or _within(managed, path))
            ):
                problems.append(f"{where} {path} overlaps {variable} {managed}, which deploys rewrite and remove")
        for earlier in seen:
            if _within(path, earlier) or _within(earlier, path):
                problems.append(f"{where} {path} overlaps {earlier}, listed before it")
        seen.append(path)
    return problems


def sites(apps: list[dict], handlers: list, routes: list, hosts: list, default_host: str) -> dict:
    """Mongrel2's handlers, default-host routes and other hosts: the operator's plus one per app."""
    out_handlers = list(handlers or [])
    taken = {h.get("name") for h in out_handlers}
    default_routes = list(routes or [])
    by_host: dict[str, list] = {}
    order: list[str] = []
    for entry in hosts or []:
        name = entry["name"]
        by_host[name] = list(entry.get("routes", []))
        order.append(name)
    for app in apps:
        values = app["vars"]
        handler = app["name"].replace("-", "_")
        if handler in taken:
            _fail(f"mongrel2_handlers already has a handler named {handler!r}, which app {app['name']!r} needs")
        taken.add(handler)
        send, recv = int(values[PREFIX + "front_send_port"]), int(values[PREFIX + "front_recv_port"])
        out_handlers.append({"name": handler, "send_port": send, "recv_port": recv})
        routes = [{"path": values.get(PREFIX + "path", "/"), "handler": handler}]
        if values.get(PREFIX + "static_dir") or values.get(PREFIX + "static_release_dir"):
            routes.append(static_route(app["name"], values.get(PREFIX + "static_url", "/static/")))
        for host, route in [
            (host, route) for host in values.get(PREFIX + "hosts") or [default_host] for route in routes
        ]:
            if host == default_host:
                target = default_routes
            else:
                if host not in by_host:
                    by_host[host] = []
                    order.append(host)
                target = by_host[host]
            if any(r.get("path") == route["path"] for r in target):
                _fail(
                    f"app {app['name']!r}: {host} {route['path']} is already routed by mongrel2_routes/mongrel2_hosts"
                )
            target.append(route)
    return {
        "handlers": out_handlers,
        "routes": default_routes,
        "hosts": [{"name": name, "routes": by_host[name]} for name in order],
    }


class FilterModule:
    def filters(self):
        return {
            "apps": expand,
            "mongrel2_sites": sites,
            "app_static_route": static_route,
            "data_dirs_problems": data_dirs_problems,
        }
