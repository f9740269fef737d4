"""Tasks that read or write a CURVE secret key never show it: they all have no_log.

Neither do the tasks that carry wsgi_app_env, which may hold the app's secrets.
"""

import re
from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
# What a task touching a secret key names: the secret file, or the key generator that writes it;
# and the console's secrets: its session secret file, its configuration, its password hash read.
SECRET_MARKS = ("key_secret", "ringmaster_handler.curve", "session.key", "console.toml.j2", "console_password_hash |")


def _tasks(items):
    for task in items or []:
        yield task
        for nested in ("block", "rescue", "always"):
            yield from _tasks(task.get(nested))


def _secret_tasks():
    for path in sorted(ROLES.glob("*/*/*.yml")):
        if path.parent.name not in ("tasks", "handlers"):
            continue
        for task in _tasks(yaml.safe_load(path.read_text())):
            if any(mark in yaml.safe_dump(task) for mark in SECRET_MARKS):
                yield path.relative_to(ROLES), task


def test_tasks_touching_secret_keys_have_no_log():
    found = list(_secret_tasks())
    # The key generators (front and worker) and the ownership of the secret files at least.
    assert len(found) >= 3, found
    for path, task in found:
        assert task.get("no_log") is True, f"{path}: {task.get('name')}"


WSGI_TASKS = ROLES / "wsgi_app" / "tasks"
# The variable itself, or the handlers' environment built from it (vars/main.yml), not _wsgi_app_env_dir.
ENV_VARIABLE = re.compile(r"(?<![_A-Za-z0-9])(wsgi_app_env|_wsgi_app_handler_env)(?![_A-Za-z0-9])")


def _task_list(name):
    return list(_tasks(yaml.safe_load((WSGI_TASKS / name).read_text())))


def test_the_watcher_file_holding_the_env_is_root_only_and_never_shown():
    (task,) = [t for t in _task_list("watcher.yml") if "watcher.ini.j2" in yaml.safe_dump(t)]
    assert task["ansible.builtin.template"]["mode"] == "0600"
    assert task["ansible.builtin.template"]["owner"] == "root"
    assert task.get("no_log") is True
    assert task.get("diff") is False


def test_the_check_gets_the_env_through_a_root_only_file_not_argv_or_environment():
    tasks = _task_list("check.yml")
    writes = [t for t in tasks if "_wsgi_app_check_env_file" in yaml.safe_dump(t.get("ansible.builtin.copy", {}))]
    assert len(writes) == 1
    assert writes[0]["ansible.builtin.copy"]["mode"] == "0600"
    assert writes[0].get("no_log") is True and writes[0].get("diff") is False
    (run,) = [t for t in tasks if "ansible.builtin.command" in t]
    assert not ENV_VARIABLE.search(yaml.safe_dump(run))
    assert "environment" not in run
    assert run.get("no_log") is True


def test_every_task_naming_the_env_values_has_no_log():
    # Preflight may name the variable (type and key checks print no value);
    # each_app.yml passes it on to the role (an include prints no variable).
    for path in sorted(WSGI_TASKS.glob("*.yml")):
        if path.name in ("preflight.yml", "each_app.yml"):
            continue
        for task in _tasks(yaml.safe_load(path.read_text())):
            text = yaml.safe_dump({k: v for k, v in task.items() if k not in ("block", "rescue", "always")})
            if ENV_VARIABLE.search(text):
                assert task.get("no_log") is True, f"{path.name}: {task.get('name')}"


# A TLS private key: an entry's key (content) or key_file (read), or the preflight filter reading them.
TLS_KEY = re.compile(r"\.key\s+if\b|\.key_file\b|stack\.tls_problems")


# The roles that write TLS keys: Mongrel2's own TLS and the TLS proxy.
@pytest.mark.parametrize("role", ["mongrel2", "tls_proxy"])
def test_every_task_carrying_a_tls_key_has_no_log_and_no_diff(role):
    found = []
    for path in sorted((ROLES / role / "tasks").glob("*.yml")):
        for task in _tasks(yaml.safe_load(path.read_text())):
            # The content or lookup carrying the key, not a path ending in .key.
            body = yaml.safe_dump({k: v for k, v in task.items() if k not in ("name", "block", "rescue", "always")})
            if TLS_KEY.search(body):
                found.append((path.name, task))
    # mongrel2: the server's key, the SNI keys, and the preflight that reads them all;
    # tls_proxy: the certificate files (chain and key) and the preflight.
    assert len(found) >= (3 if role == "mongrel2" else 2), [t.get("name") for _, t in found]
    for name, task in found:
        assert task.get("no_log") is True, f"{name}: {task.get('name')}"
        if "ansible.builtin.copy" in task:
            assert task.get("diff") is False, f"{name}: {task.get('name')}"
            assert task["ansible.builtin.copy"]["mode"] == "0600", f"{name}: {task.get('name')}"


def test_build_and_deploy_commands_get_the_env_through_a_root_only_file_not_argv_or_environment():
    tasks = _task_list("commands.yml")
    writes = [t for t in tasks if "_wsgi_app_commands_file" in yaml.safe_dump(t.get("ansible.builtin.copy", {}))]
    assert len(writes) == 1
    assert writes[0]["ansible.builtin.copy"]["mode"] == "0600"
    assert writes[0]["ansible.builtin.copy"]["owner"] == "root"
    assert writes[0].get("no_log") is True and writes[0].get("diff") is False
    (run,) = [t for t in tasks if "ansible.builtin.script" in t]
    assert not ENV_VARIABLE.search(yaml.safe_dump(run))
    assert "environment" not in run
    # The runner reads the file given by its path, nothing else, on its command line.
    assert run["ansible.builtin.script"]["cmd"] == "run_commands.py {{ _wsgi_app_commands_file }}"
