"""Tasks that read or write a CURVE secret key never show it: they all have no_log."""

from pathlib import Path

import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
# What a task touching a secret key names: the secret file, or the key generator that writes it.
SECRET_MARKS = ("key_secret", "ringmaster_handler.curve")


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
