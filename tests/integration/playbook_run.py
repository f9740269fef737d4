"""Run one of the collection's playbooks the way an operator does, for tests that check its output."""

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_playbook(name, inventory, extra_vars, scratch, timeout=300):
    """Run playbooks/<name>.yml with extra_vars (passed as a JSON file, so types survive); return its output and rc."""
    varfile = Path(scratch) / "extra-vars.json"
    varfile.write_text(json.dumps(extra_vars))
    result = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / f"{name}.yml"), "-e", f"@{varfile}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )
    return result.returncode, result.stdout + result.stderr
