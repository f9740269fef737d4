"""What the circus role finds on a host before it installs anything, as one JSON line.

Usage: python3 circus_installed.py VENV_PYTHON DEBIAN_PACKAGE...

Prints {"missing_packages": [...], "purelib": ..., "versions": {...}}: the Debian packages
not installed, and, when the virtualenv exists, where its Python imports modules from and
the installed versions of circus and pyzmq. One remote step instead of apt, pip and a
query that each take about a second even when there is nothing to do.

Run by /usr/bin/python3, the Python the role makes the virtualenv with: a virtualenv made on
another one (Debian 12's 3.11 after an upgrade to 13's 3.13) is reported as {"stale": true}
and nothing else about it, so that the role makes it again.
"""

import json
import os
import subprocess
import sys

# Run by the virtualenv's own Python: its purelib and what is installed in it.
VENV_PROBE = """
import json, sysconfig
from importlib import metadata
versions = {}
for name in ("circus", "pyzmq"):
    try:
        versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
print(json.dumps({"purelib": sysconfig.get_path("purelib"), "versions": versions}))
"""


def missing_packages(dpkg_output: str, wanted: list[str]) -> list[str]:
    """The packages of ``wanted`` that dpkg-query's "${Package} ${db:Status-Abbrev}" lines do
    not show as installed ("ii"), in the order asked."""
    installed = set()
    for line in dpkg_output.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1] == "ii":
            installed.add(fields[0].split(":")[0])
    return [name for name in wanted if name not in installed]


def venv_state(probe_output: str, returncode: int) -> dict:
    """The virtualenv's purelib and versions, or nothing when it is missing or broken."""
    if returncode != 0:
        return {}
    try:
        found = json.loads(probe_output)
    except ValueError:
        return {}
    if not isinstance(found, dict) or not isinstance(found.get("purelib"), str):
        return {}
    return {"purelib": found["purelib"], "versions": dict(found.get("versions") or {})}


def made_on_other_python(venv_dir: str, version: tuple[int, int]) -> bool:
    """Whether the virtualenv in ``venv_dir`` (one with a pyvenv.cfg) has no modules for
    Python ``version``."""
    major, minor = version
    return os.path.isfile(os.path.join(venv_dir, "pyvenv.cfg")) and not os.path.isdir(
        os.path.join(venv_dir, "lib", f"python{major}.{minor}")
    )


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    venv_python, wanted = argv[1], argv[2:]
    dpkg = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n", *wanted],
        capture_output=True,
        text=True,
        check=False,
    )
    found: dict = {"missing_packages": missing_packages(dpkg.stdout, wanted)}
    if made_on_other_python(os.path.dirname(os.path.dirname(venv_python)), sys.version_info[:2]):
        found["stale"] = True
        print(json.dumps(found))
        return 0
    try:
        probe = subprocess.run([venv_python, "-c", VENV_PROBE], capture_output=True, text=True, timeout=120)
        found.update(venv_state(probe.stdout, probe.returncode))
    except (OSError, subprocess.TimeoutExpired):
        pass
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
