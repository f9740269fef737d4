# Copyright (c) 2025, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tools/check-doc-paths.py: a cited path that is gone fails, and nothing that is not a path does."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "check-doc-paths.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("check_doc_paths", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_doc_paths = _load_tool()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small checkout: a few real files, a gitignored venv, a docs/ page to write into."""
    for path in ("tools/demo.sh", "roles/circus/meta/argument_specs.yml", "docs/operating.md", "README.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x\n")
    (tmp_path / "inventory/lab").mkdir(parents=True)
    (tmp_path / ".gitignore").write_text(".venv/\n*.pyc\n")
    return tmp_path


CASES = [
    # (doc file, line, paths reported as missing)
    ("README.md", "Run `bash tools/demo.sh`.", []),
    ("README.md", "Run `bash tools/gone.sh`.", ["tools/gone.sh"]),
    ("README.md", "The lab inventory is `inventory/lab/`.", []),
    ("README.md", "The lab inventory is `inventory/lb/`.", ["inventory/lb/"]),
    ("README.md", "See [operating](docs/operating.md#flapping).", []),
    ("README.md", "See [operating](docs/operatin.md).", ["docs/operatin.md"]),
    ("docs/operating.md", "Back to the [README](../README.md).", []),
    ("docs/operating.md", "Cited from the root: `tools/demo.sh`.", []),
    ("docs/operating.md", "Moved: `molecule/cluster/files/loadcount.py`.", ["molecule/cluster/files/loadcount.py"]),
    ("README.md", "Specs: `roles/*/meta/argument_specs.yml`.", []),
    ("README.md", "Specs: `roles/*/meta/argument_specs.yaml`.", ["roles/*/meta/argument_specs.yaml"]),
    # Not repository paths: URLs, ansible-doc names, host paths, endpoints, placeholders, bare names.
    ("README.md", "See [the docs](https://example.invalid/a/b.md) and <https://x.invalid/y.py>.", []),
    ("README.md", "Variables: `ansible-doc -t role ringmaster.stack.circus`.", []),
    ("README.md", "Sockets in `/run/circus`, `ipc://run/control`, `tcp://front1:9999`.", []),
    ("README.md", "Per app: `/etc/ringmaster/curve/<app>/`, `releases/app-<checksum>`.", []),
    ("README.md", "Mongrel2's `run/` and `logs/access.log` in its chroot; `circus.ini`; `deploy.yml`.", []),
    ("README.md", "The venv: `.venv/bin/ansible-playbook`.", []),
    ("README.md", "The callable `hello:application`; `-e wsgi_app_source_dir=/path/to/app`.", []),
]


@pytest.mark.parametrize(("doc", "line", "missing"), CASES)
def test_cited_paths(repo: Path, doc: str, line: str, missing: list[str]) -> None:
    (repo / doc).write_text(f"# Title\n\n{line}\n")
    problems = check_doc_paths.check_file(repo / doc, repo)
    assert problems == [f"{doc}:3: no such path in the repository: {path}" for path in missing]


@pytest.mark.parametrize(
    ("block", "missing"),
    [
        ("```sh\nbash tools/demo.sh   # the demo\n```", []),
        ("```sh\nbash tools/gone.sh\n```", ["tools/gone.sh"]),
        ("```\n │ tools/gone.sh in a picture │\n```", []),
        ("```yaml\npath: tools/gone.sh\n```", []),
    ],
)
def test_only_shell_blocks_are_read(repo: Path, block: str, missing: list[str]) -> None:
    (repo / "README.md").write_text(f"# Title\n{block}\n")
    problems = check_doc_paths.check_file(repo / "README.md", repo)
    assert [p.rsplit(": ", 1)[1] for p in problems] == missing


def test_ansible_cfg_comments_only(repo: Path) -> None:
    (repo / "ansible.cfg").write_text(
        "[defaults]\n# tools/bootstrap.sh links the collection\ncollections_path = .ansible/collections\n"
    )
    assert check_doc_paths.check_file(repo / "ansible.cfg", repo) == [
        "ansible.cfg:2: no such path in the repository: tools/bootstrap.sh"
    ]


def test_exit_status(repo: Path) -> None:
    run = [sys.executable, str(TOOL), str(repo)]
    assert subprocess.run(run, capture_output=True, check=False).returncode == 0
    (repo / "docs/operating.md").write_text("`tools/gone.sh`\n")
    result = subprocess.run(run, capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "docs/operating.md:1: no such path in the repository: tools/gone.sh" in result.stderr
