"""Bad values of `workers` stop scale.yml before any host is touched.

The workers in this inventory do not exist: had the play reached them, the
run would fail as unreachable instead of with the message checked here.
"""

import json

import pytest
from playbook_run import run_playbook


def _inventory(tmp_path, workers):
    inventory = tmp_path / "hosts.yml"
    hosts = {name: {"ansible_connection": "containers.podman.podman"} for name in workers}
    inventory.write_text(json.dumps({"all": {"children": {"worker": {"hosts": hosts}}}}))
    return inventory


@pytest.mark.parametrize(
    ("workers", "extra", "message"),
    [
        pytest.param(["nowhere-w1", "nowhere-w2"], {}, "-e workers=N", id="missing"),
        pytest.param(["nowhere-w1", "nowhere-w2"], {"workers": -1}, "whole number", id="negative"),
        pytest.param(["nowhere-w1", "nowhere-w2"], {"workers": "3.5"}, "whole number", id="not-an-integer"),
        pytest.param(["nowhere-w1", "nowhere-w2"], {"workers": "ten"}, "whole number", id="not-a-number"),
        pytest.param(["nowhere-w1", "nowhere-w2"], {"workers": 1000}, "scale_max_workers", id="above-maximum"),
        pytest.param(
            ["nowhere-w1", "nowhere-w2"],
            {"workers": 20, "scale_max_workers": 10},
            "scale_max_workers",
            id="above-configured-maximum",
        ),
        pytest.param([], {"workers": 4}, "no hosts in the group 'worker'", id="no-workers"),
        pytest.param(
            ["nowhere-w1", "nowhere-w2"],
            {"workers": 2, "wsgi_app_mode": "direct"},
            "wsgi_app_direct_unordered",
            id="direct-mode-past-one-process",
        ),
    ],
)
def test_bad_workers_fail_before_any_host(tmp_path, workers, extra, message):
    returncode, output = run_playbook("scale", _inventory(tmp_path, workers), extra, tmp_path, timeout=120)
    assert returncode != 0, output
    assert message in output, output
    assert "PLAY [Scale the handlers live" not in output, output
    assert "UNREACHABLE" not in output, output
