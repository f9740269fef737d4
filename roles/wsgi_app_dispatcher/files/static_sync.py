"""Keep the directory Mongrel2 serves an app's static files from in step with a release's tree.

Mongrel2 resolves a Dir route's base directory once, at its first request, and
keeps the real path until it restarts (measured: moving a link that is the base
changes nothing), so a release cannot go live by moving a link. The served
directory ("live") is therefore a real directory whose files are hard links into
the release trees unpacked next to it; a file is replaced by linking the new one
under a temporary name and renaming it over the old (atomic for every reader).

Mongrel2 keeps each file's response header (length, ETag) and checks the file
again only once per second of its clock (time(2)), but opens the file by name
for every response: a request after a rename, in the second the header was
last checked, gets the old header with the new file's bytes (measured: cut
short or reset). Renames and removals are therefore made in the last
SECOND_END of a second, when few requests can still fall in that window.

Two steps, both idempotent:
  add    before any worker switches: the new release's files whose names the
         live directory lacks are linked in; nothing there is changed or removed,
         so pages of the old and the new version both find their files.
  exact  after the last worker switched: the live directory becomes exactly the
         release (files that changed under the same name replaced, others removed).

Usage: static_sync.py {add|exact} LIVE_DIR RELEASE_DIR [--check]
Prints one JSON object: {"changed": bool, "added": [...], "replaced": [...], "removed": [...]}.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# pack_tree.py's marker: it says the tree was unpacked whole, and is not served.
MARKER = ".ringmaster-unpacked"
TEMP_PREFIX = ".ringmaster-new."
# Renames and removals happen in the last 10 ms of a second (see above).
SECOND_END = 0.01


@dataclass(frozen=True)
class Entry:
    """A file (its inode) or a directory (inode None) in a tree."""

    inode: tuple[int, int] | None


@dataclass
class Plan:
    clear: list[str] = field(default_factory=list)
    mkdirs: list[str] = field(default_factory=list)
    add: list[str] = field(default_factory=list)
    replace: list[str] = field(default_factory=list)
    remove_files: list[str] = field(default_factory=list)
    remove_dirs: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any((self.clear, self.mkdirs, self.add, self.replace, self.remove_files, self.remove_dirs))


def scan(root: Path) -> dict[str, Entry]:
    """Regular files and directories below root, by relative path (links and others are left out)."""
    found: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel == MARKER or name.startswith(TEMP_PREFIX):
                continue
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISDIR(st.st_mode):
                found[rel] = Entry(None)
            elif stat.S_ISREG(st.st_mode):
                found[rel] = Entry((st.st_dev, st.st_ino))
    return found


def _under(rel: str, tops: set[str]) -> bool:
    return any(rel == t or rel.startswith(t + "/") for t in tops)


def plan(mode: str, live: dict[str, Entry], release: dict[str, Entry]) -> Plan:
    """What to do to the live tree; pure, so that every case is tested without a disk."""
    if mode not in ("add", "exact"):
        raise ValueError(f"mode must be add or exact, not {mode!r}")
    exact = mode == "exact"
    p = Plan()
    # A file where the release has a directory, or the other way round: "exact"
    # clears it (with all below it) first; "add" leaves it and what is below.
    conflicts = {
        rel for rel, entry in release.items() if rel in live and (live[rel].inode is None) != (entry.inode is None)
    }
    if exact:
        p.clear = sorted(conflicts)
    gone = set(p.clear)
    for rel in sorted(release, key=lambda r: (r.count("/"), r)):
        entry = release[rel]
        if not exact and _under(rel, conflicts):
            continue
        now = None if _under(rel, gone) else live.get(rel)
        if entry.inode is None:
            if now is None:
                p.mkdirs.append(rel)
        elif now is None:
            p.add.append(rel)
        elif now.inode != entry.inode and exact:
            p.replace.append(rel)
    if exact:
        stale = [rel for rel in live if rel not in release and not _under(rel, gone)]
        p.remove_files = sorted(rel for rel in stale if live[rel].inode is not None)
        # Deepest first, so that each directory is empty when its turn comes.
        p.remove_dirs = sorted((rel for rel in stale if live[rel].inode is None), key=lambda r: (-r.count("/"), r))
    return p


def at_end_of_second(
    clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep, lead: float = SECOND_END
) -> None:
    """Return within the last `lead` seconds of a clock second, waiting if need be."""
    fraction = clock() % 1
    if fraction < 1 - lead:
        sleep(1 - lead - fraction)


def apply(p: Plan, live_root: Path, release_root: Path, settle: Callable[[], None] = at_end_of_second) -> None:
    """Carry the plan out, in the order that keeps every name served until it must change."""
    for rel in p.clear:
        settle()
        path = live_root / rel
        if path.is_dir() and not path.is_symlink():
            _remove_tree(path)
        else:
            path.unlink()
    for rel in p.mkdirs:
        path = live_root / rel
        path.mkdir(exist_ok=True)
        path.chmod(0o755)
    # New names: no response of Mongrel2's can be stale for them (it keeps no
    # header for a file it did not find).
    for rel in p.add:
        os.replace(_linked_aside(release_root / rel, live_root / rel), live_root / rel)
    # Linked aside first, so that each rename alone falls in the end of a second.
    aside = [(_linked_aside(release_root / rel, live_root / rel), live_root / rel) for rel in p.replace]
    for tmp, dst in aside:
        settle()
        os.replace(tmp, dst)
    for rel in p.remove_files:
        settle()
        (live_root / rel).unlink()
    for rel in p.remove_dirs:
        _remove_tree(live_root / rel)


def _linked_aside(src: Path, dst: Path) -> Path:
    tmp = dst.with_name(TEMP_PREFIX + dst.name)
    if tmp.exists() or tmp.is_symlink():
        tmp.unlink()
    os.link(src, tmp)
    return tmp


def _remove_tree(path: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames:
            os.unlink(os.path.join(dirpath, name))
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                os.unlink(full)
            else:
                os.rmdir(full)
    os.rmdir(path)


def main(argv: list[str]) -> int:
    args = [a for a in argv[1:] if a != "--check"]
    check = "--check" in argv[1:]
    if len(args) != 3 or args[0] not in ("add", "exact"):
        print(__doc__.split("Usage: ")[1].splitlines()[0], file=sys.stderr)
        return 2
    mode, live_root, release_root = args[0], Path(args[1]), Path(args[2])
    if not (release_root / MARKER).is_file():
        print(f"not a whole unpacked release (no {MARKER}): {release_root}", file=sys.stderr)
        return 1
    if not live_root.is_dir():
        print(f"the live directory is missing: {live_root}", file=sys.stderr)
        return 1
    if os.lstat(live_root).st_dev != os.lstat(release_root).st_dev:
        print(f"{live_root} and {release_root} must be on one filesystem (hard links)", file=sys.stderr)
        return 1
    p = plan(mode, scan(live_root), scan(release_root))
    if not check:
        apply(p, live_root, release_root)
    print(
        json.dumps(
            {
                "changed": p.changed,
                "added": p.mkdirs + p.add,
                "replaced": p.replace,
                "removed": p.clear + p.remove_files + p.remove_dirs,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
