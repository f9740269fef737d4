"""Make a scale survive, as ``playbooks/scale.yml`` does (``roles/wsgi_app/tasks/scale.yml``):

- the count goes into the app's local fact (``/etc/ansible/facts.d/ringmaster_scale.fact``,
  ``{"app": count}``), which the next ``deploy.yml`` prefers to ``wsgi_app_processes``;
- and into the ``numprocesses`` line of the app's circus watcher file, which circusd reads when
  it (or the host) restarts.

The text changes are pure functions; ``write_atomic`` replaces a file whole, keeping its owner
and mode (the watcher file is root's 0600: it may hold the app's secrets).
"""

from __future__ import annotations

import json
import os
import re
import tempfile

SECTION = re.compile(r"^\s*\[(?P<name>[^\]]+)\]\s*$")
NUMPROCESSES = re.compile(r"^(?P<head>\s*numprocesses\s*=\s*)(?P<value>\S*)(?P<tail>\s*)$", re.I)


class PersistError(Exception):
    pass


def with_numprocesses(text: str, watcher: str, count: int) -> str:
    """``text`` (a circus ini file) with ``numprocesses`` of ``[watcher:NAME]`` set to ``count``."""
    wanted = f"watcher:{watcher}".lower()
    lines = text.splitlines(keepends=True)
    inside = found = False
    for index, line in enumerate(lines):
        section = SECTION.match(line)
        if section:
            inside = section.group("name").strip().lower() == wanted
            continue
        if inside:
            match = NUMPROCESSES.match(line.rstrip("\n"))
            if match:
                end = "\n" if line.endswith("\n") else ""
                lines[index] = f"{match.group('head')}{count}{match.group('tail')}{end}"
                found = True
    if not found:
        raise PersistError(f"no numprocesses line in the [watcher:{watcher}] section")
    return "".join(lines)


def with_fact(text: str | None, app: str, count: int) -> str:
    """The fact file's JSON with ``app``'s count set (other apps' counts kept)."""
    counts: dict = {}
    if text and text.strip():
        try:
            counts = json.loads(text)
        except ValueError:
            raise PersistError("the scale fact file is not JSON") from None
        if not isinstance(counts, dict):
            raise PersistError("the scale fact file is not a JSON object")
    counts = {**counts, app: count}
    # Ansible's to_nice_json: sorted keys, indent 4 (the next scale.yml then changes nothing).
    return json.dumps(counts, indent=4, sort_keys=True) + "\n"


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_atomic(path: str, text: str, default_mode: int = 0o644) -> None:
    """Replace ``path`` by a file holding ``text``, with the old file's owner and mode."""
    directory = os.path.dirname(path) or "."
    try:
        st = os.stat(path)
        mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
    except FileNotFoundError:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        mode, owner = default_mode, None
    fd, scratch = tempfile.mkstemp(prefix=".ringmaster-console.", dir=directory)
    try:
        # mkstemp makes it 0600: the content is never readable by more than the old file was.
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if owner is not None and owner != (os.getuid(), os.getgid()):
            os.chown(scratch, *owner)
        os.chmod(scratch, mode)
        os.replace(scratch, path)
    except BaseException:
        if os.path.exists(scratch):
            os.unlink(scratch)
        raise


def persist_count(watcher_file: str, fact_file: str, watcher: str, count: int) -> None:
    """Write the count into both files; the watcher file is checked before either is written."""
    current = read_text(watcher_file)
    if current is None:
        raise PersistError(f"{watcher_file} does not exist")
    new_watcher = with_numprocesses(current, watcher, count)
    new_fact = with_fact(read_text(fact_file), watcher, count)
    write_atomic(fact_file, new_fact)
    if new_watcher != current:
        write_atomic(watcher_file, new_watcher)
