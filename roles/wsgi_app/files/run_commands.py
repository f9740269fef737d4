"""Run an app's build or deploy commands as its account, with its environment (roles/wsgi_app).

Usage: run_commands.py SPEC_FILE

SPEC_FILE is a root-only JSON file the role writes just before; it holds the
app's environment, secrets included, which is why nothing of it is on a
command line (any local user reads /proc/*/cmdline) or in Ansible's task
environment. It is removed as soon as it is read. Its keys:

  commands  shell command lines, run one after the other with /bin/sh -c
  cwd       the directory they run in (the release)
  env       their whole environment
  redact    strings never to print (the values of wsgi_app_env)
  prefix    argv run in front of each command: the drop to the app's account
            (setpriv --reuid --regid --init-groups --)
  timeout   seconds each command may run before its process group is killed
  tail      how many of the last output lines to report per command

Prints one JSON object: {"results": [{"command", "rc", "seconds", "tail"}]},
stopping after the first command that fails (rc 124 for one that ran out of
time). Exits 0 whatever the commands did: the caller decides.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

REDACTED = "********"


def redact(text, secrets):
    """Text with every secret replaced, longest first (so a secret inside another never leaves a piece)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def last_lines(output, count, secrets):
    lines = [line.rstrip() for line in output.decode("utf-8", "replace").splitlines()]
    return [redact(line, secrets) for line in lines if line.strip()][-count:] if count > 0 else []


def run_one(command, spec):
    started = time.monotonic()
    proc = subprocess.Popen(
        [*spec["prefix"], "/bin/sh", "-c", command],
        cwd=spec["cwd"],
        env=spec["env"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # Its own process group, so that a timeout kills what it started too.
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=spec["timeout"])
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        output, rc = b"", 124
    # Nothing the command started outlives it (and goes on writing a release
    # that is root's again, or holding its output open).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    if rc == 124:
        output, _ = proc.communicate()
    return {
        "command": command,
        "rc": rc,
        "seconds": round(time.monotonic() - started, 1),
        "tail": last_lines(output, spec["tail"], spec["redact"]),
    }


def run(spec):
    results = []
    for command in spec["commands"]:
        results.append(run_one(command, spec))
        if results[-1]["rc"] != 0:
            break
    return {"results": results}


def load(path):
    with open(path) as fh:
        spec = json.load(fh)
    os.unlink(path)
    spec["env"] = {str(k): str(v) for k, v in spec["env"].items()}
    spec["redact"] = [str(v) for v in spec["redact"]]
    return spec


def main(argv):
    print(json.dumps(run(load(argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
