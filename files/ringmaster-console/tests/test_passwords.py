import subprocess
import sys

import pytest

from ringmaster_console.passwords import make_hash, matches
from stack import PYTHONPATH


def test_hash_and_match():
    made = make_hash("a long enough password")
    assert made.startswith("scrypt:")
    assert matches(made, "a long enough password")
    assert not matches(made, "a long enough passworD")
    assert not matches("scrypt:broken", "a long enough password")


def test_short_password_refused():
    with pytest.raises(ValueError, match="at least 12"):
        make_hash("short")


def test_cli_reads_standard_input():
    """The password comes on stdin, never as an argument ``ps`` would show."""
    out = subprocess.run(
        [sys.executable, "-m", "ringmaster_console.passwords"],
        input="a long enough password\n",
        capture_output=True,
        text=True,
        env={"PYTHONPATH": PYTHONPATH},
        check=True,
    ).stdout.strip()
    assert matches(out, "a long enough password")
