"""Reproducible archives of the controller's trees (roles/common/files/pack_tree.py)."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "roles" / "common" / "files" / "pack_tree.py"


def _pack(tmp_path: Path, src: Path, name: str, *flags: str) -> tuple[str, dict[str, int]]:
    out = tmp_path / f"{name}.tar"
    run = subprocess.run([sys.executable, str(SCRIPT), *flags, str(src), str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    with tarfile.open(out) as tar:
        return run.stdout.strip(), {m.name: m.mtime for m in tar.getmembers() if m.isfile()}


def test_times_are_zero_unless_kept(tmp_path):
    src = tmp_path / "src"
    (src / "css").mkdir(parents=True)
    (src / "css" / "app.css").write_text("body {}")
    os.utime(src / "css" / "app.css", (1_750_000_000, 1_750_000_000))

    plain, plain_times = _pack(tmp_path, src, "plain")
    kept, kept_times = _pack(tmp_path, src, "kept", "--keep-mtime")
    assert plain_times == {"css/app.css": 0, ".ringmaster-unpacked": 0}
    assert kept_times == {"css/app.css": 1_750_000_000, ".ringmaster-unpacked": 0}

    # A new time alone is a new archive only when times are kept (a static file's ETag changes with it).
    os.utime(src / "css" / "app.css", (1_760_000_000, 1_760_000_000))
    assert _pack(tmp_path, src, "plain2")[0] == plain
    assert _pack(tmp_path, src, "kept2", "--keep-mtime")[0] != kept
