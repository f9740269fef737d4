"""The circus contract reaches everything that talks to circusd, and the playbooks use the app's groups.

One fresh systemd container from the test image, in inventory groups named neither front nor
worker, with circus in a virtualenv and a runtime directory other than the defaults. deploy.yml
(whose readiness wait reads circusd), scale.yml and status.yml must all work there: they get
circusd's endpoint and circusctl from the circus role (module_defaults of the action group
ringmaster.stack.circus), not from the modules' own defaults. A control run of circus_info
without them must fail, or this test would prove nothing.
"""

import json
import subprocess

import pytest
from playbook_run import IMAGE, REPO, booted_container, podman, run_playbook

RUNTIME_DIR = "/run/circus-contract"
VENV_DIR = "/opt/ringmaster/circus-contract/venv"
# A GET through Mongrel2 from inside the container, retried while the stack settles.
GET = (
    "import sys, time, urllib.request\n"
    "for attempt in range(20):\n"
    "    try:\n"
    "        print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()); break\n"
    "    except OSError:\n"
    "        time.sleep(1)\n"
)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with booted_container("ringmaster-contract", IMAGE) as name:
        inventory = tmp_path_factory.mktemp("inventory") / "hosts.yml"
        inventory.write_text(
            json.dumps(
                {
                    "all": {
                        "vars": {
                            "ansible_connection": "containers.podman.podman",
                            "ansible_python_interpreter": "/usr/bin/python3",
                            "wsgi_app_module": "hello:application",
                            "wsgi_app_source_dir": str(REPO / "files" / "sample_app"),
                            "wsgi_app_processes": 1,
                            "wsgi_app_front_group": "edge",
                            "wsgi_app_worker_group": "app_servers",
                            "circus_runtime_dir": RUNTIME_DIR,
                            "circus_venv_dir": VENV_DIR,
                        },
                        "children": {"edge": {"hosts": {name: None}}, "app_servers": {"hosts": {name: None}}},
                    }
                }
            )
        )
        yield name, inventory


def _status(inventory, tmp_path):
    document = tmp_path / "status.json"
    rc, output = run_playbook(
        "status", inventory, {"status_format": "json", "status_output": str(document), "status_sample": 0}, tmp_path
    )
    assert rc == 0, output
    return json.loads(document.read_text())


def test_deploy_scale_and_status_reach_a_circusd_set_up_elsewhere(host, tmp_path):
    name, inventory = host
    rc, output = run_playbook("deploy", inventory, {}, tmp_path, timeout=1500)
    assert rc == 0, output
    # The first deploy writes the watcher file, so the readiness wait (circus_info) ran and passed.
    assert "Ready | The new processes are up" in output, output
    assert podman("exec", name, "test", "-S", f"{RUNTIME_DIR}/control.sock", check=False).returncode == 0
    assert podman("exec", name, "test", "-e", "/run/circus", check=False).returncode != 0
    assert podman("exec", name, "test", "-e", "/opt/ringmaster/circus/venv", check=False).returncode != 0
    greeting = podman("exec", name, "python3", "-c", GET, "http://127.0.0.1:6767/")
    assert greeting.stdout.startswith("Hello from ringmaster"), greeting.stdout + greeting.stderr

    rc, output = run_playbook("scale", inventory, {"workers": 3}, tmp_path)
    assert rc == 0, output

    watchers = {row["name"]: row for row in _status(inventory, tmp_path)["watchers"]}
    assert watchers["app"]["numprocesses"] == 3, watchers
    assert watchers["app"]["status"] == "active", watchers
    assert watchers["app-dispatcher"]["status"] == "active", watchers

    # The control: without the contract, circus_info looks for circusd where it is not.
    result = subprocess.run(
        ["ansible", "-i", str(inventory), name, "-m", "ringmaster.stack.circus_info", "-a", "sample_interval=0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode != 0, result.stdout
    assert "circusctl executable not found at /opt/ringmaster/circus/venv/bin/circusctl" in result.stdout, result.stdout
