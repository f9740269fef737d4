"""The circus role's first look at a host (roles/circus/files/circus_installed.py)."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "roles" / "circus" / "files" / "circus_installed.py"
spec = importlib.util.spec_from_file_location("circus_installed", SCRIPT)
circus_installed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(circus_installed)


@pytest.mark.parametrize(
    ("dpkg_output", "wanted", "missing"),
    [
        ("python3-venv ii \npython3-packaging ii \n", ["python3-venv", "python3-packaging"], []),
        ("python3-venv ii \n", ["python3-venv", "python3-packaging"], ["python3-packaging"]),
        # Removed but its configuration kept ("rc"), or half-installed: not there.
        ("python3-venv rc \npython3-packaging iU \n", ["python3-venv", "python3-packaging"],
         ["python3-venv", "python3-packaging"]),
        ("", ["python3-venv"], ["python3-venv"]),
        ("libzmq5:amd64 ii \n", ["libzmq5"], []),
    ],
    ids=["all-there", "one-missing", "removed-or-half-installed", "dpkg-knows-none", "arch-qualified"],
)  # fmt: skip
def test_missing_packages(dpkg_output, wanted, missing):
    assert circus_installed.missing_packages(dpkg_output, wanted) == missing


@pytest.mark.parametrize(
    ("output", "returncode", "state"),
    [
        (json.dumps({"purelib": "/v/lib", "versions": {"circus": "0.19.0"}}), 0,
         {"purelib": "/v/lib", "versions": {"circus": "0.19.0"}}),
        ("", 127, {}),
        ("Traceback ...", 1, {}),
        ("not json", 0, {}),
        (json.dumps({"versions": {}}), 0, {}),
    ],
    ids=["venv-there", "no-venv", "broken-venv", "garbage", "no-purelib"],
)  # fmt: skip
def test_venv_state(output, returncode, state):
    assert circus_installed.venv_state(output, returncode) == state


def test_a_host_without_the_virtualenv(capsys, tmp_path):
    # A real run on this machine: the packages dpkg knows, and a virtualenv that does not exist.
    assert circus_installed.main(["circus_installed.py", str(tmp_path / "no" / "python"), "dpkg"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found == {"missing_packages": []}


@pytest.mark.parametrize(
    ("dirs", "stale"),
    [
        (["venv/lib/python3.13"], False),
        (["venv/lib/python3.11"], True),
        (["venv/lib/python3.11", "venv/lib/python3.13"], False),
        (["venv"], True),
        ([], False),
    ],
    ids=["this-python", "other-python", "both", "no-modules", "no-venv"],
)
def test_made_on_other_python(tmp_path, dirs, stale):
    for d in dirs:
        (tmp_path / d).mkdir(parents=True)
    if dirs:
        (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    assert circus_installed.made_on_other_python(str(tmp_path / "venv"), (3, 13)) is stale


def test_a_virtualenv_of_another_python_is_only_reported_stale(capsys, tmp_path):
    (tmp_path / "venv" / "lib" / "python2.7").mkdir(parents=True)
    (tmp_path / "venv" / "bin").mkdir()
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    assert circus_installed.main(["circus_installed.py", str(tmp_path / "venv" / "bin" / "python"), "dpkg"]) == 0
    assert json.loads(capsys.readouterr().out) == {"missing_packages": [], "stale": True}
