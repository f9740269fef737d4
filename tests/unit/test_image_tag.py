"""Every test that boots a container names the image tag tools/build-image.sh makes.

The tag names the image's contents; a test still naming an older one (``:latest``) finds no image on
a fresh machine, where bootstrap builds only the current tag (CI on 2026-12-02: podman exit 125).
"""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "tools" / "build-image.sh"
USERS = [
    "molecule/shared/create.yml",
    "molecule/mixed/molecule.yml",
    "inventory/lab/hosts.yml",
    "tests/integration/playbook_run.py",
    "docs/development.md",
]


def built_tag() -> str:
    match = re.search(r'localhost/ringmaster-debian\$release:([\w.-]+)\}"', BUILD.read_text())
    assert match, f"no image name in {BUILD}"
    return match.group(1)


@pytest.mark.parametrize("path", USERS)
def test_images_named_are_the_ones_built(path):
    named = re.findall(r"localhost/ringmaster-debian1[23]:([\w.-]+)", (REPO / path).read_text())
    assert named, f"{path} names no test image"
    assert set(named) == {built_tag()}, f"{path} names tags {sorted(set(named))}, build-image.sh makes {built_tag()}"


def test_no_other_file_names_an_image():
    found = set()
    for ext in ("*.py", "*.yml", "*.sh", "*.md"):
        for file in REPO.glob(f"**/{ext}"):
            parts = file.relative_to(REPO).parts
            if parts[0].startswith(".") or file == BUILD:
                continue
            if re.search(r"localhost/ringmaster-debian1[23]:", file.read_text(errors="replace")):
                found.add(str(file.relative_to(REPO)))
    found.discard("tests/unit/test_image_tag.py")
    assert found <= set(USERS), f"add to USERS: {sorted(found - set(USERS))}"
