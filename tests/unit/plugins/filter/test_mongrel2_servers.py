# Copyright (c) 2026, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What Mongrel2's TLS server and its plain-HTTP server each serve: one case per rule."""

from __future__ import annotations

import pytest
from ansible_collections.ringmaster.stack.plugins.filter.mongrel2_servers import mongrel2_servers

APP = {"path": "/", "handler": "app"}
SHOP = {"path": "/", "handler": "shop"}
STATIC = {"path": "/static/", "dir": "app-static/app/live/"}
HOSTS = [
    {"name": "localhost", "routes": [STATIC, APP]},
    {"name": "shop.example", "routes": [SHOP]},
    {"name": "*.lab.test", "routes": [STATIC, APP]},
]
CERTS = [{"names": ["localhost"]}, {"names": ["*.lab.test"]}]
REDIRECT = [{"path": "/", "target": "plain_redirect"}]


def plain_of(result):
    return {h["name"]: [r["target"] for r in h["routes"]] for h in result["plain"]}


@pytest.mark.parametrize(
    ("tls", "certs", "port", "redirect", "plain", "handlers", "names", "fallback"),
    [
        pytest.param(False, [], 0, True, {}, [], [], None, id="no-tls-no-plain-server"),
        pytest.param(True, CERTS, 0, True, {}, [], [], None, id="tls-without-http-port"),
        pytest.param(False, CERTS, 8080, True, {}, [], [], None, id="http-port-needs-tls"),
        pytest.param(
            True, CERTS, 8080, True,
            {"localhost": ["plain_redirect"], "shop.example": ["plain_h_shop"], "*.lab.test": ["plain_redirect"]},
            ["shop"], ["localhost", "*.lab.test"], "localhost",
            id="covered-redirected-others-plain",
        ),
        pytest.param(
            True, CERTS, 8080, False,
            {"localhost": ["dir_1", "plain_h_app"], "shop.example": ["plain_h_shop"],
             "*.lab.test": ["dir_1", "plain_h_app"]},
            ["app", "shop"], [], None,
            id="no-redirect-everything-plain",
        ),
        pytest.param(
            True, [{"names": ["*.lab.test"]}], 8080, True,
            {"localhost": ["dir_1", "plain_h_app"], "shop.example": ["plain_h_shop"], "*.lab.test": ["plain_redirect"]},
            ["app", "shop"], ["*.lab.test"], None,
            id="default-host-plain-no-fallback",
        ),
        pytest.param(
            True, [{"names": ["LocalHost", "x.lab.test"]}], 8080, True,
            {"localhost": ["plain_redirect"], "shop.example": ["plain_h_shop"], "*.lab.test": ["dir_1", "plain_h_app"]},
            ["app", "shop"], ["localhost"], "localhost",
            id="a-name-under-a-wildcard-host-does-not-cover-it",
        ),
    ],
)  # fmt: skip
def test_servers(tls, certs, port, redirect, plain, handlers, names, fallback):
    result = mongrel2_servers(HOSTS, tls, certs, port, redirect)
    assert plain_of(result) == plain
    assert result["plain_handlers"] == handlers
    assert result["redirect_names"] == names
    assert result["redirect_fallback"] == fallback
    # The main server always serves every host with its own routes.
    assert [[r["target"] for r in h["routes"]] for h in result["main"]] == [
        ["dir_1", "app"],
        ["shop"],
        ["dir_1", "app"],
    ]


def test_one_dir_object_per_distinct_directory():
    hosts = [
        {"name": "a", "routes": [STATIC, {"path": "/b/", "dir": "b/", "index_file": "i.html"}]},
        {"name": "b", "routes": [{"path": "/s/", "dir": "app-static/app/live/"}]},
    ]
    result = mongrel2_servers(hosts, False, [], 0, True)
    assert result["dirs"] == [
        {"name": "dir_1", "base": "app-static/app/live/", "index_file": "index.html", "default_ctype": "text/plain"},
        {"name": "dir_2", "base": "b/", "index_file": "i.html", "default_ctype": "text/plain"},
    ]
    assert result["main"][1]["routes"] == [{"path": "/s/", "target": "dir_1"}]
