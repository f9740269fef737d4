"""bench/deploy.json must deploy ringmaster as the roles do at their defaults.

The whole-machine benchmark claims to measure what the roles deploy; this keeps its copy of
the roles' Mongrel2 settings and process flags in step with them.
"""

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = json.loads((ROOT / "bench" / "deploy.json").read_text())


def _defaults(role: str) -> dict:
    return yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())


M2 = _defaults("mongrel2")
APP = _defaults("wsgi_app")
DISPATCHER = _defaults("wsgi_app_dispatcher")


def _flags(args: list[str]) -> dict[str, str]:
    """--flag value pairs (every flag the bench passes takes a value)."""
    assert len(args) % 2 == 0 and all(a.startswith("--") for a in args[::2]), args
    return dict(zip(args[::2], args[1::2], strict=True))


def test_mongrel2_settings_are_the_roles_keys_and_defaults():
    keys = re.findall(r"'([a-z_]+\.[a-z_]+)':", (ROOT / "roles/mongrel2/vars/main.yml").read_text())
    # The mode-dependent upload keys come from _mongrel2_upload_settings.
    common = [k for k in keys if not k.startswith("upload.")]
    assert sorted(DEPLOY["mongrel2"]["settings"]) == sorted(common)
    assert DEPLOY["mongrel2"]["settings"] == {
        "server.daemonize": 0,
        "zeromq.threads": M2["mongrel2_zeromq_threads"],
        "limits.content_length": M2["mongrel2_content_length_limit"],
        "limits.buffer_size": M2["mongrel2_request_head_size"],
        "limits.handler_targets": 1,
        "superpoll.max_fd": M2["mongrel2_max_fd"],
        "superpoll.hot_dividend": M2["mongrel2_hot_dividend"],
        "limits.min_ping": M2["mongrel2_idle_timeout"],
    }


def test_upload_settings_per_mode():
    assert M2["mongrel2_upload_stream"] is True  # dispatcher mode streams by default
    modes = DEPLOY["mongrel2"]["mode_settings"]
    assert modes["dispatcher"] == {"upload.stream": 1}
    assert modes["direct"] == {
        "upload.temp_store": M2["mongrel2_upload_dir"] + "/upload.XXXXXX",
        "upload.temp_store_mode": "0640",
    }


def test_dispatcher_flags_are_the_roles_defaults():
    assert _flags(DEPLOY["dispatcher"]["args"]) == {
        "--prefetch": str(DISPATCHER["wsgi_app_dispatcher_prefetch"]),
        "--queue-limit": str(DISPATCHER["wsgi_app_dispatcher_queue_limit"]),
        "--queue-timeout": str(DISPATCHER["wsgi_app_dispatcher_queue_timeout"]),
        "--drain-timeout": str(DISPATCHER["wsgi_app_dispatcher_drain_timeout"]),
        "--heartbeat": str(float(DISPATCHER["wsgi_app_dispatcher_heartbeat"])),
        "--request-timeout": str(APP["wsgi_app_request_timeout"]),
        "--max-body-size": str(APP["wsgi_app_max_body_size"]),
        "--max-handlers-per-key": str(DISPATCHER["wsgi_app_dispatcher_max_handlers_per_key"]),
    }


@pytest.mark.parametrize(
    ("template", "args", "own"),
    [
        ("roles/wsgi_app_dispatcher/templates/dispatcher.ini.j2", DEPLOY["dispatcher"]["args"], {"--log-level"}),
        # --threads only when above 1, as the bench's own --handler-args gives it.
        ("roles/wsgi_app/templates/watcher.ini.j2", DEPLOY["handler"]["args"], {"--log-level", "--threads"}),
    ],
    ids=["dispatcher", "handler"],
)
def test_every_flag_the_template_always_passes_is_in_the_bench(template, args, own):
    # A flag the template writes with a role variable's value; --log-level the bench sets itself.
    text = (ROOT / template).read_text()
    always = set(re.findall(r"(--[a-z-]+) \{\{ wsgi_app_", text)) - own
    assert always <= set(_flags(args)), always - set(_flags(args))


def test_handler_flags_are_the_roles_defaults():
    assert _flags(DEPLOY["handler"]["args"]) == {
        "--request-timeout": str(APP["wsgi_app_request_timeout"]),
        "--max-body-size": str(APP["wsgi_app_max_body_size"]),
    }


def test_tls_settings_are_what_mongrel2_tls_adds():
    # _mongrel2_tls_settings: certdir /<_mongrel2_certs_dir>/, ssl_ciphers the role's list.
    role_vars = yaml.safe_load((ROOT / "roles/mongrel2/vars/main.yml").read_text())
    assert DEPLOY["mongrel2"]["tls_settings"] == {
        "certdir": "/" + role_vars["_mongrel2_certs_dir"] + "/",
        "ssl_ciphers": " ".join(M2["mongrel2_tls_ciphers"]),
    }
    assert set(re.findall(r"'(\w+)':", role_vars["_mongrel2_tls_settings"])) == {"certdir", "ssl_ciphers"}
