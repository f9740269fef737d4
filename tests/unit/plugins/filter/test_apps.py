# Copyright (c) 2026, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.ringmaster.stack.plugins.filter import apps as ap

ROOT = Path(__file__).resolve().parents[4]
BASE = {
    "wsgi_app_name": "app",
    "wsgi_app_user": "ringmaster",
    "wsgi_app_group": "ringmaster",
    "wsgi_app_processes": 2,
    "wsgi_app_hosts": [],
    "wsgi_app_path": "/",
    "wsgi_app_front_send_port": 9997,
    "wsgi_app_front_recv_port": 9998,
    "wsgi_app_dispatcher_port": 9999,
    "wsgi_app_dispatcher_metrics_port": 0,
    "wsgi_app_data_dirs": [],
}
SHOP = {
    "name": "shop",
    "hosts": ["shop.test"],
    "dispatcher_port": 9989,
    "front_send_port": 9987,
    "front_recv_port": 9988,
}


def test_without_the_list_the_fleet_has_the_single_app_as_the_variables_say():
    assert ap.expand(None, BASE) == [{"name": "app", "vars": BASE}]


def test_each_app_gets_every_variable_its_own_values_and_its_own_account():
    out = ap.expand([{"name": "app"}, dict(SHOP, processes=5, user="shopper")], BASE)
    assert [a["name"] for a in out] == ["app", "shop"]
    assert out[0]["vars"]["wsgi_app_user"] == "ringmaster-app"
    assert out[1]["vars"]["wsgi_app_user"] == "shopper"
    assert out[1]["vars"]["wsgi_app_group"] == "ringmaster-shop"
    assert out[1]["vars"]["wsgi_app_processes"] == 5
    assert out[0]["vars"]["wsgi_app_processes"] == 2
    assert set(out[1]["vars"]) == set(BASE)


def test_an_account_set_for_every_app_is_kept():
    out = ap.expand([{"name": "app"}], dict(BASE, wsgi_app_user="web", wsgi_app_group="web"))
    assert (out[0]["vars"]["wsgi_app_user"], out[0]["vars"]["wsgi_app_group"]) == ("web", "web")


@pytest.mark.parametrize(
    "apps, message",
    [
        pytest.param([], "ringmaster_apps must be a non-empty list", id="empty"),
        pytest.param({"name": "app"}, "ringmaster_apps must be a non-empty list", id="not-a-list"),
        pytest.param(["app"], r"ringmaster_apps\[0\] must be a dictionary", id="not-a-dict"),
        pytest.param([{"module": "x:y"}], r"ringmaster_apps\[0\]: name must be", id="no-name"),
        pytest.param([{"name": "Bad Name"}], r"ringmaster_apps\[0\] \(Bad Name\): name must be", id="bad-name"),
        pytest.param(
            [{"name": "app"}, dict(SHOP, name="app")],
            r"ringmaster_apps\[1\] \(app\): the name 'app' is already used by ringmaster_apps\[0\]",
            id="duplicate",
        ),
        pytest.param(
            [{"name": "app", "procesess": 3}],
            r"ringmaster_apps\[0\] \(app\): unknown setting\(s\) procesess",
            id="unknown-key",
        ),
        pytest.param(
            [{"name": "app"}, dict(SHOP, hosts=[])],
            r"ringmaster_apps\[1\] \(shop\): the default host / is already claimed by ringmaster_apps\[0\] \(app\)",
            id="same-host-path",
        ),
        pytest.param(
            [{"name": "app", "hosts": ["shop.test"]}, dict(SHOP, hosts=["SHOP.test"])],
            r"ringmaster_apps\[1\] \(shop\): SHOP.test / is already claimed",
            id="same-host-any-case",
        ),
        pytest.param(
            [{"name": "app", "hosts": "a.test"}],
            r"ringmaster_apps\[0\] \(app\): hosts must be a list",
            id="hosts-not-list",
        ),
        pytest.param(
            [{"name": "app", "path": "api"}], r"ringmaster_apps\[0\] \(app\): path must start with /", id="path"
        ),
        pytest.param(
            [{"name": "app"}, {"name": "shop", "hosts": ["shop.test"]}],
            r"ringmaster_apps\[1\] \(shop\): dispatcher_port 9999 is already dispatcher_port of ringmaster_apps\[0\]",
            id="same-port",
        ),
        pytest.param(
            [{"name": "app"}, dict(SHOP, front_recv_port=9997)],
            r"ringmaster_apps\[1\] \(shop\): front_recv_port 9997 is already front_send_port",
            id="port-across-settings",
        ),
        pytest.param(
            [{"name": "app", "dispatcher_metrics_port": 9180}, dict(SHOP, dispatcher_metrics_port=9180)],
            r"ringmaster_apps\[1\] \(shop\): dispatcher_metrics_port 9180 is already dispatcher_metrics_port of "
            r"ringmaster_apps\[0\] \(app\)",
            id="same-metrics-port",
        ),
        pytest.param(
            [{"name": "app", "dispatcher_metrics_port": 9989}, SHOP],
            r"ringmaster_apps\[1\] \(shop\): dispatcher_port 9989 is already dispatcher_metrics_port",
            id="metrics-port-is-another-apps-port",
        ),
        pytest.param(
            [{"name": "app", "dispatcher_port": "x"}],
            r"ringmaster_apps\[0\] \(app\): dispatcher_port must be a port number",
            id="port-not-number",
        ),
        pytest.param(
            [{"name": "app", "data_dirs": ["/srv/data"]}, dict(SHOP, data_dirs=["/srv/data"])],
            r"ringmaster_apps\[1\] \(shop\): data_dirs /srv/data overlaps /srv/data of ringmaster_apps\[0\] \(app\)",
            id="same-data-dir",
        ),
        pytest.param(
            [{"name": "app", "data_dirs": ["/srv/data/app"]}, dict(SHOP, data_dirs=["/srv/data"])],
            r"ringmaster_apps\[1\] \(shop\): data_dirs /srv/data overlaps /srv/data/app of ringmaster_apps\[0\]",
            id="data-dir-inside-another-app-s",
        ),
        pytest.param(
            [{"name": "app"}, dict(SHOP, name="shop2")],
            r"ringmaster_apps\[1\] \(shop2\): data_dirs /var/lib/every overlaps /var/lib/every of ringmaster_apps\[0\]",
            id="one-data-dir-for-every-app",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_variable(apps, message):
    # The last case sets wsgi_app_data_dirs for every app, as an inventory's group_vars would.
    base = dict(BASE, wsgi_app_data_dirs=["/var/lib/every"]) if "shop2" in str(apps) else BASE
    with pytest.raises(AnsibleFilterError, match=message):
        ap.expand(apps, base)


def test_apps_with_data_dirs_of_their_own_are_fine():
    out = ap.expand(
        [{"name": "app", "data_dirs": ["/srv/data/app"]}, dict(SHOP, data_dirs=["/srv/data/shop", "/srv/data/app2"])],
        BASE,
    )
    assert [a["vars"]["wsgi_app_data_dirs"] for a in out] == [["/srv/data/app"], ["/srv/data/shop", "/srv/data/app2"]]


# The key directory moved out of /etc, where the sandbox rule alone would refuse it.
RESERVED = {"wsgi_app_base_dir": "/opt/ringmaster/apps", "wsgi_app_curve_dir": "/opt/keys/curve"}


@pytest.mark.parametrize(
    "dirs",
    [
        pytest.param([], id="none"),
        pytest.param(["/var/lib/ringmaster-django"], id="var-lib-own"),
        pytest.param(["/srv/django", "/srv/media/django"], id="two-under-srv"),
        pytest.param(["/opt/ringmaster/data/django"], id="beside-the-base-dir"),
        pytest.param(["/data/django"], id="below-a-top-level-dir"),
    ],
)
def test_data_dirs_of_the_app_s_own_pass(dirs):
    assert ap.data_dirs_problems(dirs, RESERVED) == []


@pytest.mark.parametrize(
    "dirs, message",
    [
        pytest.param("/srv/x", r"^wsgi_app_data_dirs must be a list", id="not-a-list"),
        pytest.param(["srv/x"], r"^wsgi_app_data_dirs\[0\] must be an absolute path", id="relative"),
        pytest.param(["/srv/my data"], r"^wsgi_app_data_dirs\[0\] must be an absolute path without spaces", id="space"),
        pytest.param([7], r"^wsgi_app_data_dirs\[0\] must be an absolute path", id="not-a-string"),
        pytest.param(["/"], r"^wsgi_app_data_dirs\[0\] must be a plain absolute path other than /", id="root"),
        pytest.param(["/srv/x/"], r"trailing /\); got '/srv/x/'", id="trailing-slash"),
        pytest.param(["/srv/../etc/x"], r"^wsgi_app_data_dirs\[0\] must be a plain", id="dot-dot"),
        pytest.param(["//srv/x"], r"^wsgi_app_data_dirs\[0\] must be a plain", id="double-slash"),
        pytest.param(["/tmp/django"], r"^wsgi_app_data_dirs\[0\] /tmp/django is emptied at boot", id="tmp"),
        pytest.param(["/run/django"], r"is emptied at boot", id="run"),
        pytest.param(["/var/tmp/django"], r"is emptied at boot", id="var-tmp"),
        pytest.param(["/usr/local/django"], r"/usr/local/django is in /usr, read-only or hidden to the app", id="usr"),
        pytest.param(["/etc/django"], r"is in /etc, read-only .* \(ProtectSystem=full, ProtectHome\)", id="etc"),
        pytest.param(["/home/django/data"], r"is in /home, read-only or hidden", id="home"),
        pytest.param(["/root/data"], r"is in /root", id="root-home"),
        pytest.param(["/srv"], r"/srv is a directory the system or other programs share", id="top-level"),
        pytest.param(["/var/lib"], r"/var/lib is a directory the system or other programs share", id="var-lib"),
        pytest.param(["/var/log"], r"share", id="var-log"),
        pytest.param(
            ["/opt/ringmaster/apps/django/data"],
            r"overlaps wsgi_app_base_dir /opt/ringmaster/apps, which deploys rewrite",
            id="inside-the-base-dir",
        ),
        pytest.param(["/opt/ringmaster"], r"overlaps wsgi_app_base_dir", id="above-the-base-dir"),
        pytest.param(["/opt/keys/curve/x"], r"overlaps wsgi_app_curve_dir", id="inside-the-key-dir"),
        pytest.param(
            ["/srv/django", "/srv/django/media"],
            r"^wsgi_app_data_dirs\[1\] /srv/django/media overlaps /srv/django, listed before it",
            id="nested-in-one-list",
        ),
        pytest.param(["/srv/django", "/srv/django"], r"wsgi_app_data_dirs\[1\] /srv/django overlaps", id="twice"),
    ],
)
def test_data_dirs_that_are_not_the_app_s_own_or_not_kept_are_refused(dirs, message):
    problems = ap.data_dirs_problems(dirs, RESERVED)
    assert len(problems) == 1, problems
    assert re.search(message, problems[0]), problems[0]


def test_two_apps_on_one_host_under_different_paths_are_fine():
    out = ap.expand([{"name": "app", "hosts": ["a.test"]}, dict(SHOP, hosts=["a.test"], path="/shop/")], BASE)
    assert len(out) == 2


def test_mongrel2_gets_a_handler_per_app_and_their_routes_next_to_the_inventory_s():
    apps = ap.expand([{"name": "app"}, dict(SHOP, name="shop-2", hosts=["shop.test", "*.shop.test"])], BASE)
    static = {"path": "/static/", "dir": "static/"}
    out = ap.sites(apps, [], [static], [{"name": "old.test", "routes": [static]}], "localhost")
    assert out["handlers"] == [
        {"name": "app", "send_port": 9997, "recv_port": 9998},
        {"name": "shop_2", "send_port": 9987, "recv_port": 9988},
    ]
    assert out["routes"] == [static, {"path": "/", "handler": "app"}]
    assert out["hosts"] == [
        {"name": "old.test", "routes": [static]},
        {"name": "shop.test", "routes": [{"path": "/", "handler": "shop_2"}]},
        {"name": "*.shop.test", "routes": [{"path": "/", "handler": "shop_2"}]},
    ]


@pytest.mark.parametrize(
    "handlers, routes, message",
    [
        pytest.param(
            [{"name": "app", "send_port": 1, "recv_port": 2}],
            [],
            "already has a handler named 'app'",
            id="handler-name",
        ),
        pytest.param([], [{"path": "/", "dir": "x/"}], r"app 'app': localhost / is already routed", id="route-taken"),
    ],
)
def test_mongrel2_settings_that_collide_with_an_app_are_refused(handlers, routes, message):
    with pytest.raises(AnsibleFilterError, match=message):
        ap.sites(ap.expand([{"name": "app"}], BASE), handlers, routes, [], "localhost")


def test_each_app_passes_every_variable_of_the_two_roles_argument_specs():
    names = []
    for role in ("wsgi_app", "wsgi_app_dispatcher"):
        spec = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
        names += list(spec["argument_specs"]["main"]["options"])
    tasks = yaml.safe_load((ROOT / "roles" / "wsgi_app" / "tasks" / "each_app.yml").read_text())
    passed = tasks[0]["vars"]
    assert list(passed) == names
    assert all(value == "{{ _ringmaster_app.vars." + name + " }}" for name, value in passed.items())


PLAYBOOKS = ROOT / "playbooks"


def _loops(items):
    for task in items or []:
        if isinstance(task, dict):
            yield task
            for nested in ("tasks", "block", "rescue", "always"):
                yield from _loops(task.get(nested))


def test_every_loop_over_the_apps_shows_only_their_names():
    # An app's variables hold its env (secrets): a loop goes over the names only.
    found = 0
    for path in sorted(PLAYBOOKS.glob("*.yml")):
        for task in _loops(yaml.safe_load(path.read_text())):
            if "_wsgi_app_apps" in str(task.get("loop", "")):
                found += 1
                # By name: a skipped item's result (shown with -v) holds the whole loop variable.
                assert task["loop"] == "{{ _wsgi_app_apps | map(attribute='name') | list }}", (path.name, task["name"])
                assert task["loop_control"]["label"] == "{{ _ringmaster_app_name }}", (path.name, task["name"])
    assert found >= 6


def test_a_list_holding_secrets_is_refused_without_showing_them():
    with pytest.raises(AnsibleFilterError) as refused:
        ap.expand({"name": "app", "env": {"TOKEN": "s3cret"}}, BASE)
    assert "s3cret" not in str(refused.value)


def test_an_app_with_static_files_gets_their_dir_route_on_its_hosts():
    base = dict(BASE, wsgi_app_static_dir="", wsgi_app_static_release_dir="", wsgi_app_static_url="/static/")
    apps = ap.expand([{"name": "app"}, dict(SHOP, static_release_dir="static")], base)
    out = ap.sites(apps, [], [], [], "localhost")
    assert out["routes"] == [{"path": "/", "handler": "app"}]
    assert out["hosts"] == [
        {
            "name": "shop.test",
            "routes": [
                {"path": "/", "handler": "shop"},
                {"path": "/static/", "dir": "app-static/shop/live/", "default_ctype": "application/octet-stream"},
            ],
        }
    ]
