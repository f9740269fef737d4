"""Pack a directory into a byte-for-byte reproducible tar on the controller.

Copying one archive is a single transfer, and because the same tree always
gives the same bytes, Ansible's checksum comparison tells exactly when the
source changed. Build caches and VCS data are left out. Prints the archive's
SHA-256, which names the release it becomes on the host.

With --keep-mtime the files keep their modification times (static files: Mongrel2
makes its ETag and Last-Modified of them); without it every time is 0.
"""

import hashlib
import io
import sys
import tarfile
from pathlib import Path

SKIP_DIRS = {"__pycache__", ".git", ".pytest_cache", ".ruff_cache", ".hypothesis", ".venv", ".mypy_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo")
MARKER = ".ringmaster-unpacked"


def wanted(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    return not any(p in SKIP_DIRS for p in parts) and not path.name.endswith(SKIP_SUFFIXES)


def pack(root: Path, include: list[str], keep_mtime: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tops = [root / name for name in include] if include else [root]
        paths = []
        for top in tops:
            paths.append(top)
            if top.is_dir():
                paths.extend(top.rglob("*"))
        for path in sorted(p for p in paths if wanted(p, root) and p != root):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
            info.mtime = int(path.stat().st_mtime) if keep_mtime and info.isfile() else 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
            if info.isfile():
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
            elif info.isdir():
                tar.addfile(info)
        # Last member: its presence on the host means the whole tree was unpacked.
        marker = tarfile.TarInfo(MARKER)
        marker.mode = 0o644
        tar.addfile(marker, io.BytesIO(b""))
    return buf.getvalue()


def main(argv: list[str]) -> int:
    keep_mtime = "--keep-mtime" in argv[1:2]
    if keep_mtime:
        argv = argv[:1] + argv[2:]
    if len(argv) < 3:
        print(
            "usage: pack_tree.py [--keep-mtime] SOURCE_DIR OUTPUT.tar [TOP_LEVEL_NAME ...] (prints its SHA-256)",
            file=sys.stderr,
        )
        return 2
    root = Path(argv[1]).resolve()
    if not root.is_dir():
        print(f"not a directory: {root}", file=sys.stderr)
        return 1
    data = pack(root, argv[3:], keep_mtime)
    Path(argv[2]).write_bytes(data)
    print(hashlib.sha256(data).hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
