"""The sample app's build and deploy commands (wsgi_app_build_commands, wsgi_app_deploy_commands).

python manage.py build    writes BUILD_INFO.json into the release it runs in: who built
                          it, with which Python environment, when (a stand-in for
                          collectstatic)
python manage.py migrate  appends one JSON line to $SAMPLE_APP_MIGRATIONS (default
                          /var/tmp/sample_app-migrations.jsonl): the release, when, on which
                          host, as whom, and the names (never the values) of its
                          environment (a stand-in for a database migration)

Molecule's cluster scenario reads both to prove where, when and how often they ran.
"""

import json
import os
import pwd
import socket
import sys
import time


def _who():
    return {
        "user": pwd.getpwuid(os.getuid()).pw_name,
        "cwd": os.getcwd(),
        "venv": sys.prefix,
        "at": time.time(),
        "host": socket.gethostname(),
    }


def build():
    with open("BUILD_INFO.json", "w") as fh:
        json.dump(_who(), fh)
        fh.write("\n")
    print("built", os.getcwd())


def migrate():
    record = _who() | {"release": os.path.basename(os.getcwd()), "env": sorted(os.environ)}
    path = os.environ.get("SAMPLE_APP_MIGRATIONS", "/var/tmp/sample_app-migrations.jsonl")
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    print("migrated", record["release"])


if __name__ == "__main__":
    {"build": build, "migrate": migrate}[sys.argv[1]]()
