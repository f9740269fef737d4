"""The runner of an app's build and deploy commands (roles/wsgi_app/files/run_commands.py), with real shells.

The role runs it as root with setpriv in front of each command; here the
prefix is empty, so the commands run as the test's user.
"""

import importlib.util
import json
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "roles" / "wsgi_app" / "files" / "run_commands.py"
spec = importlib.util.spec_from_file_location("run_commands", SCRIPT)
run_commands = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_commands)

SECRET = "s3cr3t-value-42"


def _spec(tmp_path, commands, **overrides):
    spec = {
        "commands": commands,
        "cwd": str(tmp_path),
        "env": {"PATH": "/usr/bin:/bin", "APP_SECRET": SECRET, "APP_SHORT": "xy"},
        "redact": [SECRET, "xy"],
        "prefix": [],
        "timeout": 10,
        "tail": 3,
    }
    spec.update(overrides)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    path.chmod(0o600)
    return path


def test_commands_run_in_order_in_the_release_with_exactly_the_environment(tmp_path, capsys):
    path = _spec(tmp_path, ['echo "one $PWD" > out', "env | sort >> out; echo done"])
    assert run_commands.main(["run_commands.py", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["rc"] for r in report["results"]] == [0, 0]
    assert report["results"][1]["tail"] == ["done"]
    lines = (tmp_path / "out").read_text().splitlines()
    assert lines[0] == f"one {tmp_path}"
    names = {line.split("=", 1)[0] for line in lines[1:]}
    # The shell adds PWD, SHLVL and _ of its own; nothing comes from the caller's environment.
    assert names - {"PWD", "SHLVL", "_"} == {"PATH", "APP_SECRET", "APP_SHORT"}


def test_the_spec_file_is_gone_once_read(tmp_path):
    path = _spec(tmp_path, ["true"])
    run_commands.run(run_commands.load(str(path)))
    assert not path.exists()


def test_the_first_failure_stops_the_rest_and_reports_the_last_lines_without_secrets(tmp_path):
    path = _spec(
        tmp_path,
        [
            "true",
            'for i in 1 2 3 4; do echo "line $i"; done; echo "password $APP_SECRET and xy" >&2; exit 3',
            "touch never",
        ],
    )
    report = run_commands.run(run_commands.load(str(path)))
    assert [r["rc"] for r in report["results"]] == [0, 3]
    assert report["results"][1]["tail"] == ["line 3", "line 4", "password ******** and ********"]
    assert SECRET not in json.dumps(report)
    assert not (tmp_path / "never").exists()


def test_a_longer_secret_is_blanked_whole_before_a_shorter_one_inside_it(tmp_path):
    assert run_commands.redact("abc-abcdef", ["abc", "abcdef"]) == "********-********"
    assert run_commands.redact("nothing", ["", "zzz"]) == "nothing"


def test_a_command_past_its_time_is_killed_with_what_it_started(tmp_path):
    started = time.monotonic()
    path = _spec(tmp_path, ["sleep 30 & echo $! > child; echo waiting; wait"], timeout=1)
    report = run_commands.run(run_commands.load(str(path)))
    assert report["results"][0]["rc"] == 124
    assert report["results"][0]["tail"] == ["waiting"]
    assert time.monotonic() - started < 10
    child = int((tmp_path / "child").read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


def test_what_a_command_left_running_is_stopped_with_it(tmp_path):
    path = _spec(tmp_path, ["sleep 30 > /dev/null 2>&1 & echo $! > child"])
    report = run_commands.run(run_commands.load(str(path)))
    assert report["results"][0]["rc"] == 0
    child = int((tmp_path / "child").read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
