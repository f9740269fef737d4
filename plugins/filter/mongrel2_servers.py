# Copyright (c) 2026, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Mongrel2's servers: the TLS (or only) one, and the plain-HTTP one next to it, with their hosts."""

from __future__ import annotations

from ansible_collections.ringmaster.stack.plugins.module_utils.tls_names import covers

DOCUMENTATION = r"""
name: mongrel2_servers
short_description: The hosts and routes of Mongrel2's main server and of its plain-HTTP server
version_added: 0.3.0
description:
  - Mongrel2 runs one server per process and C(use_ssl) is per server, so plain HTTP next to TLS is a
    second server (C(mongrel2_http_port)). This filter decides what each serves.
  - The main server serves every host with its routes, as before.
  - The plain server, when O(tls) and O(http_port) are set, serves each host no certificate covers with
    its routes; a host a certificate covers is routed whole to the redirect handler when O(redirect), else
    served with its routes too.
  - Every route gets a C(target), the name its handler or directory has in C(mongrel2.conf). A handler
    used by the plain server is another C(Handler) there (C(plain_h_<name>)), with its own sockets and
    idents, since one socket cannot be bound by two processes.
options:
  _input:
    description: Every host of the server (C(name), C(routes)), the default host first.
    type: list
    elements: dict
    required: true
  tls:
    description: Whether the main server speaks TLS (C(mongrel2_tls)).
    type: bool
    required: true
  certificates:
    description: C(mongrel2_tls_certificates) (only their C(names) are read).
    type: list
    elements: dict
    required: true
  http_port:
    description: C(mongrel2_http_port); 0 for no plain server.
    type: int
    required: true
  redirect:
    description: C(mongrel2_http_redirect).
    type: bool
    required: true
"""

EXAMPLES = r"""
- name: What each server serves
  ansible.builtin.set_fact:
    __servers: >-
      {{ hosts | ringmaster.stack.mongrel2_servers(mongrel2_tls, mongrel2_tls_certificates,
                                                   mongrel2_http_port, mongrel2_http_redirect) }}
"""

RETURN = r"""
_value:
  description: What to write into C(mongrel2.conf).
  type: dict
  contains:
    main:
      description: The main server's hosts, each C(name) and C(routes) (C(path), C(target)).
      type: list
    plain:
      description: The plain server's hosts, the same way; empty when there is none.
      type: list
    dirs:
      description: Each distinct C(Dir) (C(name), C(base), C(index_file), C(default_ctype)).
      type: list
    plain_handlers:
      description: Names of the handlers (of C(mongrel2_handlers)) the plain server uses, sorted.
      type: list
    redirect_names:
      description: Host names (lower case, C(*.domain) kept) the plain server redirects to https.
      type: list
    redirect_fallback:
      description: Where requests naming none of them go (the default host, when redirected), or null.
      type: str
"""

PLAIN_PREFIX = "plain_h_"
REDIRECT_TARGET = "plain_redirect"


def covered(name: str, certificates: list) -> bool:
    names = [
        str(n).lower() for entry in certificates or [] if isinstance(entry, dict) for n in entry.get("names") or []
    ]
    return any(covers(pattern, name.lower()) for pattern in names)


def mongrel2_servers(hosts, tls, certificates, http_port, redirect):
    dirs: dict[tuple, str] = {}

    def target(route: dict, plain: bool) -> str:
        if "dir" in route:
            key = (route["dir"], route.get("index_file", "index.html"), route.get("default_ctype", "text/plain"))
            return dirs.setdefault(key, f"dir_{len(dirs) + 1}")
        return (PLAIN_PREFIX if plain else "") + route["handler"]

    def served(host: dict, plain: bool) -> dict:
        return {
            "name": host["name"],
            "routes": [{"path": r["path"], "target": target(r, plain)} for r in host["routes"]],
        }

    main = [served(h, False) for h in hosts]
    plain, redirect_names, plain_handlers = [], [], set()
    fallback = None
    if tls and int(http_port or 0) > 0:
        for index, host in enumerate(hosts):
            if redirect and covered(host["name"], certificates):
                redirect_names.append(host["name"].lower())
                plain.append({"name": host["name"], "routes": [{"path": "/", "target": REDIRECT_TARGET}]})
                if index == 0:
                    fallback = host["name"].lower()
            else:
                plain.append(served(host, True))
                plain_handlers.update(r["handler"] for r in host["routes"] if "handler" in r)
    return {
        "main": main,
        "plain": plain,
        "dirs": [
            {"name": name, "base": key[0], "index_file": key[1], "default_ctype": key[2]} for key, name in dirs.items()
        ],
        "plain_handlers": sorted(plain_handlers),
        "redirect_names": redirect_names,
        "redirect_fallback": fallback,
    }


class FilterModule:
    def filters(self):
        return {"mongrel2_servers": mongrel2_servers}
