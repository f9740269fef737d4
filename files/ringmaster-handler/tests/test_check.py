"""``ringmaster-wsgi --check``: each fixture app is a module written to a temporary directory."""

import pytest

from ringmaster_handler import cli

OK_APP = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["PATH_INFO"].encode(), environ["QUERY_STRING"].encode()]
"""

# Answers from a table keyed by path, so one module covers many statuses.
ROUTED_APP = """
STATUS = {"/": "200 OK", "/missing": "404 Not Found", "/broken": "500 Internal Server Error",
          "/down": "503 Service Unavailable"}

def application(environ, start_response):
    start_response(STATUS[environ["PATH_INFO"]], [("Content-Type", "text/plain")])
    return [b""]
"""

RAISING_APP = """
def application(environ, start_response):
    raise RuntimeError("database   unreachable\\nsecond line")
"""

LAZY_FAILING_APP = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"partial"
    raise ValueError("template error")
"""

SILENT_APP = """
def application(environ, start_response):
    return [b"no status"]
"""

BAD_STATUS_APP = """
def application(environ, start_response):
    start_response("OK", [])
    return []
"""

CLOSING_APP = """
import os

class Body(list):
    def close(self):
        with open(os.environ["CHECK_CLOSED_FILE"], "w") as fh:
            fh.write("closed")

def application(environ, start_response):
    start_response("200 OK", [])
    return Body([b"x"])
"""

ERROR_HANDLER_APP = """
import sys

def application(environ, start_response):
    try:
        raise KeyError("session")
    except KeyError:
        start_response("500 Internal Server Error", [], sys.exc_info())
        return [b"sorry"]
"""

IMPORT_ERROR_APP = "import no_such_dependency_xyz\n"
IMPORT_CRASH_APP = "SETTINGS = {}\nDEBUG = SETTINGS['DEBUG']\n"


@pytest.mark.parametrize(
    ("source", "argv", "code", "stream", "message"),
    [
        (OK_APP, [], 0, "out", "check passed: {mod}:application: GET / answered 200 OK"),
        (OK_APP, ["--check-path", "/a b?x=1"], 0, "out", "GET /a b?x=1 answered 200 OK"),
        (OK_APP, ["--check-path", ""], 0, "out", "check passed: {mod}:application imports"),
        (ROUTED_APP, ["--check-path", "/missing"], 0, "out", "answered 404 Not Found"),
        (ROUTED_APP, ["--check-path", "/broken"], 1, "err",
         "check failed: {mod}:application: GET /broken answered 500 Internal Server Error"),
        (ROUTED_APP, ["--check-path", "/down"], 1, "err", "answered 503 Service Unavailable"),
        (ROUTED_APP, ["--check-path", "/nowhere"], 1, "err",
         "GET /nowhere raised KeyError: '/nowhere' at"),
        (RAISING_APP, [], 1, "err",
         "GET / raised RuntimeError: database unreachable second line at"),
        (LAZY_FAILING_APP, [], 1, "err", "GET / raised ValueError: template error"),
        (SILENT_APP, [], 1, "err", "the app returned without calling start_response"),
        (BAD_STATUS_APP, [], 1, "err", "malformed status 'OK'"),
        (ERROR_HANDLER_APP, [], 1, "err", "GET / answered 500 Internal Server Error"),
        (IMPORT_ERROR_APP, [], 2, "err",
         "check failed: cannot import '{mod}': ModuleNotFoundError: "
         "No module named 'no_such_dependency_xyz'"),
        (IMPORT_CRASH_APP, ["--check-path", ""], 2, "err",
         "cannot import '{mod}': KeyError: 'DEBUG'"),
        (OK_APP.replace("application", "app"), [], 2, "err", "has no attribute 'application'"),
    ],
)  # fmt: skip
def test_check_outcomes(
    tmp_path, monkeypatch, capsys, request, source, argv, code, stream, message
):
    # A fresh module name per case: the import cache must not answer for another case.
    mod = "checked_" + request.node.callspec.id.replace("-", "_").replace(".", "_")
    mod = "".join(c if c.isalnum() or c == "_" else "_" for c in mod)
    (tmp_path / f"{mod}.py").write_text(source)
    assert cli.main(["--check", *argv, "--chdir", str(tmp_path), f"{mod}:application"]) == code
    out, err = capsys.readouterr()
    text = out if stream == "out" else err
    assert (err if stream == "out" else out) == ""
    assert len(text.strip().splitlines()) == 1
    assert text.startswith("ringmaster-wsgi: check ")
    assert message.format(mod=mod) in text


def test_check_closes_the_body(tmp_path, monkeypatch, capsys):
    closed = tmp_path / "closed"
    monkeypatch.setenv("CHECK_CLOSED_FILE", str(closed))
    (tmp_path / "closing_app.py").write_text(CLOSING_APP)
    assert cli.main(["--check", "--chdir", str(tmp_path), "closing_app:application"]) == 0
    assert closed.read_text() == "closed"


def test_check_sees_the_same_environ_as_a_served_request(tmp_path, capsys):
    (tmp_path / "environ_app.py").write_text(
        "import json\n"
        "SEEN = {}\n"
        "def application(environ, start_response):\n"
        "    SEEN.update({k: v for k, v in environ.items() if type(v) is str})\n"
        "    SEEN['input'] = environ['wsgi.input'].read()\n"
        "    start_response('204 No Content', [])\n"
        "    return []\n"
    )
    assert cli.main(["--check", "--check-path", "/health?deep=1", "--chdir", str(tmp_path),
                     "environ_app:application"]) == 0  # fmt: skip
    import environ_app

    seen = environ_app.SEEN
    assert seen["REQUEST_METHOD"] == "GET"
    assert seen["PATH_INFO"] == "/health"
    assert seen["QUERY_STRING"] == "deep=1"
    assert seen["SCRIPT_NAME"] == ""
    assert seen["SERVER_NAME"] == "localhost"
    assert seen["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert seen["input"] == b""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["hello:app"], "send_spec is required (except with --check)"),
        (["--check", "hello:app", "udp://h:1"], "check failed: bad spec"),
    ],
)
def test_check_usage(capsys, argv, message):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
