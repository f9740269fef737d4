#!/usr/bin/env python3
"""Fail when the documentation cites a repository path that does not exist.

    python3 tools/check-doc-paths.py [ROOT]

Files move; the prose that names them does not follow by itself. This reads the READMEs, the
pages in docs/, the handler's pages and ansible.cfg's comments, takes every path-looking word
from inline code, shell code blocks and link targets, and prints file:line for each one that
names nothing in the checkout. Exit status 1 when there is one.

What counts as a repository path is deliberately narrow, so that host paths (/etc/circus),
endpoints (ipc://run/control), ansible-doc names (ringmaster.stack.circus) and paths inside a
host's chroot (run/, logs/access.log) are not mistaken for one:
- it has a '/': a bare name (deploy.yml, circus.ini) is how prose names a playbook or a file
  on a host, too ambiguous to check;
- no scheme, not absolute, no variable or placeholder (<app>, $VENV, {a,b}), no '=' or ':';
- it ends in an extension the repository's own files use (roles/*/tasks/x.yml), or its first
  part is a top-level entry of the repository (inventory/lab/);
- link targets are always paths (minus their #anchor).
A path is looked up relative to the citing file, then to the repository root; '*' globs must
match something. Paths under gitignored top-level directories (.venv/, .ansible/) are made by
tools/bootstrap.sh, so they are not required to exist.
"""

import re
import sys
from pathlib import Path

DOCS = (
    "README.md",
    "docs/*.md",
    "roles/*/README.md",
    "files/ringmaster-handler/*.md",
    "files/ringmaster-console/*.md",
    "files/sample_django/*.md",
    "ansible.cfg",
)
REPO_EXTENSIONS = {".md", ".py", ".yml", ".yaml", ".sh", ".j2", ".txt", ".toml", ".cfg"}
SHELL_FENCES = {"sh", "bash", "shell", "console"}

_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_FORBIDDEN = re.compile(r"[<>{}$=:@|\\]")
_LEADING = "\"'(`"
_TRAILING = "\"'),;:.`"


def _generated_dirs(root: Path) -> set[str]:
    """Top-level directories .gitignore names: made by bootstrap, absent from a fresh clone."""
    ignore = root / ".gitignore"
    if not ignore.is_file():
        return set()
    lines = (line.strip() for line in ignore.read_text(encoding="utf-8").splitlines())
    return {line.strip("/") for line in lines if line.endswith("/") and "*" not in line}


def looks_like_repo_path(word: str, top_level: set[str]) -> bool:
    if "/" not in word or word.startswith(("/", "~", "-", "#")) or "://" in word or _FORBIDDEN.search(word):
        return False
    return Path(word.rstrip("/")).suffix in REPO_EXTENSIONS or word.split("/", 1)[0] in top_level


def candidates(line: str, *, shell: bool, comment_only: bool, top_level: set[str]) -> list[str]:
    """The words of one line that must name something in the repository."""
    if comment_only:
        stripped = line.lstrip()
        if not stripped.startswith(("#", ";")):
            return []
        chunks = [stripped.lstrip("#;")]
    elif shell:
        chunks = [line.split(" #", 1)[0]]
    else:
        chunks = [m.group(2) for m in _CODE_SPAN.finditer(line)]
    found = []
    for chunk in chunks:
        for word in chunk.split():
            word = word.lstrip(_LEADING).rstrip(_TRAILING)
            if looks_like_repo_path(word, top_level):
                found.append(word)
    if not comment_only and not shell:
        for target in _LINK.findall(_CODE_SPAN.sub("", line)):
            target = target.split("#", 1)[0]
            if target and "://" not in target and not target.startswith("mailto:"):
                found.append(target)
    return found


def exists(word: str, doc: Path, root: Path, generated: set[str]) -> bool:
    if word.split("/", 1)[0] in generated:
        return True
    for base in (doc.parent, root):
        if "*" in word:
            if any(base.glob(word.rstrip("/"))):
                return True
        elif (base / word).exists():
            return True
    return False


def check_file(doc: Path, root: Path) -> list[str]:
    top_level = {p.name for p in root.iterdir()}
    generated = _generated_dirs(root)
    comment_only = doc.suffix == ".cfg"
    problems, fence = [], None
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        marker = line.lstrip()
        if not comment_only and marker.startswith("```"):
            fence = None if fence is not None else marker[3:].strip().lower()
            continue
        if fence is not None and fence not in SHELL_FENCES:
            continue
        shell = fence is not None
        for word in candidates(line, shell=shell, comment_only=comment_only, top_level=top_level):
            if not exists(word, doc, root, generated):
                problems.append(f"{doc.relative_to(root)}:{number}: no such path in the repository: {word}")
    return problems


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parent.parent).resolve()
    docs = sorted({doc for pattern in DOCS for doc in root.glob(pattern) if doc.is_file()})
    problems = [problem for doc in docs for problem in check_file(doc, root)]
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"check-doc-paths: {len(docs)} files, {len(problems)} missing paths", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
