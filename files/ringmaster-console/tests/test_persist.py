import json
import os
import stat

import pytest

from ringmaster_console.persist import PersistError, persist_count, with_fact, with_numprocesses

WATCHER_FILE = """# Ansible managed
[watcher:shop]
cmd = /srv/shop/venv/bin/ringmaster-wsgi
numprocesses = 2
uid = ringmaster

[env:shop]
numprocesses = not-this-one
"""


@pytest.mark.parametrize(
    ("text", "watcher", "count", "line"),
    [
        (WATCHER_FILE, "shop", 5, "numprocesses = 5\n"),
        (WATCHER_FILE, "SHOP", 0, "numprocesses = 0\n"),
        ("[watcher:a]\nnumprocesses=1", "a", 3, "numprocesses=3"),
        (
            "[watcher:b]\nnumprocesses = 1\n[watcher:a]\n  NumProcesses = 9  \n",
            "a",
            3,
            "  NumProcesses = 3  \n",
        ),
    ],
)
def test_with_numprocesses(text, watcher, count, line):
    out = with_numprocesses(text, watcher, count)
    assert line in out
    # Nothing else changes.
    changed = [(a, b) for a, b in zip(text.splitlines(), out.splitlines(), strict=True) if a != b]
    assert len(changed) == 1


def test_env_section_untouched():
    out = with_numprocesses(WATCHER_FILE, "shop", 5)
    assert "numprocesses = not-this-one" in out


@pytest.mark.parametrize(
    ("text", "watcher"),
    [
        ("[watcher:shop]\ncmd = x\n", "shop"),
        ("[watcher:other]\nnumprocesses = 1\n", "shop"),
        ("", "shop"),
    ],
)
def test_with_numprocesses_refuses(text, watcher):
    with pytest.raises(PersistError, match="no numprocesses line"):
        with_numprocesses(text, watcher, 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, {"shop": 4}),
        ("", {"shop": 4}),
        ('{"blog": 2, "shop": 1}', {"blog": 2, "shop": 4}),
    ],
)
def test_with_fact(text, expected):
    out = with_fact(text, "shop", 4)
    assert json.loads(out) == expected
    # As Ansible's to_nice_json writes it, so the next scale.yml finds nothing to change.
    assert out == json.dumps(expected, indent=4, sort_keys=True) + "\n"


@pytest.mark.parametrize("text", ["[1]", "{"])
def test_with_fact_refuses(text):
    with pytest.raises(PersistError):
        with_fact(text, "shop", 1)


def test_persist_count_keeps_modes(tmp_path):
    watcher = tmp_path / "conf.d" / "shop.ini"
    watcher.parent.mkdir()
    watcher.write_text(WATCHER_FILE)
    os.chmod(watcher, 0o600)
    fact = tmp_path / "facts.d" / "ringmaster_scale.fact"
    persist_count(str(watcher), str(fact), "shop", 6)
    assert "numprocesses = 6\n" in watcher.read_text()
    assert stat.S_IMODE(watcher.stat().st_mode) == 0o600
    assert json.loads(fact.read_text()) == {"shop": 6}
    assert stat.S_IMODE(fact.stat().st_mode) == 0o644
    assert sorted(p.name for p in watcher.parent.iterdir()) == ["shop.ini"]


def test_persist_count_writes_nothing_when_the_watcher_file_is_wrong(tmp_path):
    watcher = tmp_path / "shop.ini"
    watcher.write_text("[watcher:shop]\ncmd = x\n")
    fact = tmp_path / "ringmaster_scale.fact"
    with pytest.raises(PersistError):
        persist_count(str(watcher), str(fact), "shop", 6)
    assert not fact.exists()
