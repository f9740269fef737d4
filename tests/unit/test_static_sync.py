"""Static files on a front (roles/wsgi_app_dispatcher/files/static_sync.py): the plan, then real trees on disk."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "roles" / "wsgi_app_dispatcher" / "files" / "static_sync.py"
spec = importlib.util.spec_from_file_location("static_sync", SCRIPT)
static_sync = importlib.util.module_from_spec(spec)
sys.modules["static_sync"] = static_sync  # dataclasses look their module up there
spec.loader.exec_module(static_sync)

D = static_sync.Entry(None)


def F(n: int) -> static_sync.Entry:
    return static_sync.Entry((1, n))


def test_add_links_only_new_names():
    live = {"css": D, "css/app.css": F(1), "old.js": F(2)}
    release = {"css": D, "css/app.css": F(10), "css/new.css": F(11), "img": D, "img/a.png": F(12)}
    p = static_sync.plan("add", live, release)
    assert p.mkdirs == ["img"]
    assert p.add == ["css/new.css", "img/a.png"]
    # The changed file and the file the new version drops stay as the old version serves them.
    assert p.replace == [] and p.remove_files == [] and p.remove_dirs == [] and p.clear == []


def test_exact_replaces_changed_and_removes_dropped():
    live = {"css": D, "css/app.css": F(1), "old.js": F(2), "gone": D, "gone/deep": D, "gone/deep/x": F(3)}
    release = {"css": D, "css/app.css": F(10), "same.txt": F(4)}
    p = static_sync.plan("exact", {**live, "same.txt": F(4)}, release)
    assert p.add == [] and p.mkdirs == []
    assert p.replace == ["css/app.css"]
    assert p.remove_files == ["gone/deep/x", "old.js"]
    assert p.remove_dirs == ["gone/deep", "gone"]


def test_nothing_to_do_is_unchanged():
    tree = {"a": D, "a/b.css": F(1)}
    assert not static_sync.plan("add", dict(tree), dict(tree)).changed
    assert not static_sync.plan("exact", dict(tree), dict(tree)).changed


def test_a_file_where_a_directory_goes():
    live = {"x": F(1), "y": D, "y/z": F(2)}
    release = {"x": D, "x/a": F(10), "y": F(11)}
    add = static_sync.plan("add", live, release)
    assert not add.changed  # "add" never removes what the old version serves
    exact = static_sync.plan("exact", live, release)
    assert exact.clear == ["x", "y"]
    assert exact.mkdirs == ["x"]
    assert exact.add == ["y", "x/a"]
    assert exact.remove_files == [] and exact.remove_dirs == []


def test_unknown_mode():
    with pytest.raises(ValueError):
        static_sync.plan("move", {}, {})


def _release(root: Path, files: dict[str, str], mtime: int) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.utime(path, (mtime, mtime))
    (root / static_sync.MARKER).write_text("")
    return root


def _run(*args: str) -> dict:
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()
    }


def test_two_releases_on_disk(tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    old = _release(tmp_path / "releases" / "old", {"app.css": "v1", "old.js": "o", "img/a.png": "png"}, 1_700_000_000)
    new = _release(tmp_path / "releases" / "new", {"app.css": "v2!", "new.js": "n", "img/a.png": "png"}, 1_800_000_000)

    first = _run("exact", str(live), str(old))
    assert first["changed"] and sorted(first["added"]) == ["app.css", "img", "img/a.png", "old.js"]
    assert _tree(live) == {"app.css": "v1", "img/a.png": "png", "old.js": "o"}
    # Hard links: the live file is the release's file, mtime and all (Mongrel2's ETag is mtime-size).
    assert os.stat(live / "app.css").st_ino == os.stat(old / "app.css").st_ino
    assert os.stat(live / "app.css").st_mtime == 1_700_000_000
    assert not _run("exact", str(live), str(old))["changed"]

    checked = _run("add", str(live), str(new), "--check")
    assert checked["added"] == ["new.js"] and _tree(live) == {"app.css": "v1", "img/a.png": "png", "old.js": "o"}

    # During the switch: both versions' names are served, the old content unchanged.
    assert _run("add", str(live), str(new))["added"] == ["new.js"]
    assert _tree(live) == {"app.css": "v1", "img/a.png": "png", "new.js": "n", "old.js": "o"}
    assert not _run("add", str(live), str(new))["changed"]

    # After the last worker: exactly the new release.
    done = _run("exact", str(live), str(new))
    assert sorted(done["replaced"]) == ["app.css", "img/a.png"] and done["removed"] == ["old.js"]
    assert _tree(live) == {"app.css": "v2!", "img/a.png": "png", "new.js": "n"}
    assert os.stat(live / "app.css").st_ino == os.stat(new / "app.css").st_ino
    assert not _run("exact", str(live), str(new))["changed"]
    # The marker and the temporary names never show.
    assert not any(p.name.startswith(".") for p in live.rglob("*"))


def test_refuses_a_tree_not_wholly_unpacked(tmp_path):
    (tmp_path / "live").mkdir()
    (tmp_path / "half").mkdir()
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "add", str(tmp_path / "live"), str(tmp_path / "half")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "not a whole unpacked release" in out.stderr


def test_waits_for_the_end_of_a_second():
    slept = []
    static_sync.at_end_of_second(clock=lambda: 1000.25, sleep=slept.append)
    assert slept == [pytest.approx(0.74)]
    slept.clear()
    static_sync.at_end_of_second(clock=lambda: 1000.995, sleep=slept.append)
    assert slept == []


def test_renames_and_removals_wait_their_turn(tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    old = _release(tmp_path / "old", {"a.css": "1", "b.css": "1", "gone.js": "g"}, 1_700_000_000)
    new = _release(tmp_path / "new", {"a.css": "22", "b.css": "22", "c.css": "new"}, 1_800_000_000)
    _run("exact", str(live), str(old))
    turns = []
    p = static_sync.plan("exact", static_sync.scan(live), static_sync.scan(new))
    static_sync.apply(p, live, new, settle=lambda: turns.append(sorted(x.name for x in live.iterdir())))
    # One turn per rename and removal; the new name was there before the first, each replacement linked aside.
    assert len(turns) == 3
    assert "c.css" in turns[0]
    assert ".ringmaster-new.a.css" in turns[0] and ".ringmaster-new.b.css" in turns[0]
    assert _tree(live) == {"a.css": "22", "b.css": "22", "c.css": "new"}
