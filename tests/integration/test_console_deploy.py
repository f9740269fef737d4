"""The console roles, for real: deploy.yml with ringmaster_console into a fresh systemd container,
then a real HTTP client logs in to the console through Mongrel2 and sees the host's watchers.

One container is front, worker and the console's host; the sample app and the console are the
fleet's two apps. Nothing is stubbed: Mongrel2, the dispatchers, circusd, the agent's systemd unit
and the CURVE link between console and agent are the ones deploy.yml installs.
"""

import json
import subprocess

import pytest
from playbook_run import IMAGE, booted_container, one_host_inventory, podman, run_playbook
from werkzeug.security import generate_password_hash

PASSWORD = "a long enough test password"
CONSOLE_HOST = "console.test"
# A client in the container: Mongrel2's port there, the console's host name, a cookie jar.
# Prints what it saw as JSON: the statuses of a wrong and a right login, and /api/status once every
# host shows its watchers ("up") or none does ("down").
CLIENT = r"""
import http.cookiejar, json, re, sys, time, urllib.error, urllib.parse, urllib.request
base, host, password, want = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
def call(path, data=None):
    req = urllib.request.Request(base + path, data=urllib.parse.urlencode(data).encode() if data else None,
                                 headers={"Host": host})
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
for attempt in range(30):
    status, page = call("/login")
    if status == 200:
        break
    time.sleep(1)
token = lambda page: re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
wrong, _ = call("/login", {"csrf_token": token(page), "password": "not the password"})
_, page = call("/login")
right, overview = call("/login", {"csrf_token": token(page), "password": password})
for attempt in range(20):
    status, body = call("/api/status")
    hosts = json.loads(body)["hosts"] if status == 200 else []
    if hosts and all(bool(h.get("watchers")) == (want == "up") for h in hosts):
        break
    time.sleep(1)
print(json.dumps({"wrong": wrong, "right": right, "overview": "Apps" in overview, "api": status, "hosts": hosts}))
"""


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with booted_container("ringmaster-console", IMAGE) as name:
        inventory = one_host_inventory(
            tmp_path_factory.mktemp("inventory") / "hosts.yml",
            name,
            wsgi_app_processes=1,
            ringmaster_apps=[{"name": "app"}],
            ringmaster_console=True,
            console_server_names=[CONSOLE_HOST],
            console_processes=1,
            # Plain HTTP in this lab: the cookie without Secure (docs/console.md).
            console_https=False,
            console_password_hash=generate_password_hash(PASSWORD, method="scrypt"),
        )
        yield name, inventory


def _journal(name):
    """What circusd and the agent logged, to read when a deploy failed."""
    units = ["-u", "circusd", "-u", "ringmaster-console-agent"]
    return podman("exec", name, "journalctl", "--no-pager", "-n", "80", *units, check=False).stdout


def test_deployed_console_logs_in_and_lists_the_hosts_watchers(host, tmp_path):
    name, inventory = host
    try:
        _deploy_and_use_the_console(name, inventory, tmp_path)
    except (AssertionError, subprocess.CalledProcessError) as exc:
        raise AssertionError(f"{exc}\n--- the host's journal ---\n{_journal(name)}") from exc


def _deploy_and_use_the_console(name, inventory, tmp_path):
    rc, output = run_playbook("deploy", inventory, {}, tmp_path, timeout=1800)
    assert rc == 0, output[-6000:]
    # Secrets never in the output: the hash, nor any CURVE secret key file's content.
    assert "scrypt:" not in output
    assert "secret-key" not in output

    # The agent: a systemd unit after circusd, root's keys 0600, the console's key let in.
    state = podman("exec", name, "systemctl", "is-active", "ringmaster-console-agent").stdout.strip()
    assert state == "active"
    modes = podman(
        "exec",
        name,
        "stat",
        "-c",
        "%n %a %U",
        "/etc/ringmaster/console-agent/agent.key_secret",
        "/etc/ringmaster/console/console.key_secret",
        "/etc/ringmaster/console/console.toml",
    ).stdout.split("\n")
    assert modes[0] == "/etc/ringmaster/console-agent/agent.key_secret 600 root", modes
    assert modes[1] == "/etc/ringmaster/console/console.key_secret 600 ringmaster-console", modes
    assert modes[2] == "/etc/ringmaster/console/console.toml 600 ringmaster-console", modes
    authorized = podman("exec", name, "ls", "/etc/ringmaster/console-agent/authorized").stdout.split()
    assert authorized == [f"{name}.key"]

    result = podman("exec", name, "python3", "-c", CLIENT, "http://127.0.0.1:6767", CONSOLE_HOST, PASSWORD, "up")
    seen = json.loads(result.stdout)
    assert seen["wrong"] == 403, seen
    assert seen["right"] == 200 and seen["overview"], seen
    assert seen["api"] == 200, seen
    (entry,) = seen["hosts"]
    assert entry["host"] == name and entry["up"] is True, entry
    watchers = {w["name"]: w for w in entry["watchers"]}
    assert {"app", "console", "app-dispatcher", "console-dispatcher", "mongrel2"} <= set(watchers), watchers

    # A second deploy changes nothing of the console's.
    rc, output = run_playbook("deploy", inventory, {}, tmp_path, timeout=1800)
    assert rc == 0, output[-6000:]
    recap = output[output.rindex("PLAY RECAP") :]
    assert "changed=0" in recap, recap

    # The control: without its key let in, the restarted agent answers nothing and the console
    # shows the host down (so the watchers above came over the authenticated channel). ZAP is
    # asked only when a connection starts: removing the file alone keeps the open one.
    podman("exec", name, "rm", f"/etc/ringmaster/console-agent/authorized/{name}.key")
    podman("exec", name, "systemctl", "restart", "ringmaster-console-agent")
    result = podman("exec", name, "python3", "-c", CLIENT, "http://127.0.0.1:6767", CONSOLE_HOST, PASSWORD, "down")
    (entry,) = json.loads(result.stdout)["hosts"]
    assert entry["up"] is False, entry
