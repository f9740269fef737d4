"""Run one of the collection's playbooks the way an operator does, for tests that check its output."""

import contextlib
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The test image tools/build-image.sh makes (its tag names its contents), unless the run names one.
IMAGE = os.environ.get("RINGMASTER_IMAGE", "localhost/ringmaster-debian12:2")


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


def one_host_inventory(path, name, **extra):
    """An inventory in which the container ``name`` is front and worker, reached with podman exec,
    serving the sample app; ``extra`` adds group_vars/all. Written to ``path``, which is returned."""
    variables = {
        "ansible_connection": "containers.podman.podman",
        "ansible_python_interpreter": "/usr/bin/python3",
        "wsgi_app_module": "hello:application",
        "wsgi_app_source_dir": str(REPO / "files" / "sample_app"),
        **extra,
    }
    groups = {"front": {"hosts": {name: None}}, "worker": {"hosts": {name: None}}}
    path.write_text(json.dumps({"all": {"vars": variables, "children": groups}}))
    return path


def podman(*args, check=True):
    return subprocess.run(["podman", *args], check=check, capture_output=True, text=True)


@contextlib.contextmanager
def booted_container(prefix, image):
    """A fresh systemd container from image, once systemd is up; removed afterwards. Yields its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    if podman("image", "exists", image, check=False).returncode:
        raise RuntimeError(f"no image {image}: run tools/build-image.sh (or tools/bootstrap.sh) first")
    podman("run", "-d", "--name", name, "--hostname", name, "--systemd=always", image, "/sbin/init")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = podman("exec", name, "systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(1)
        yield name
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
