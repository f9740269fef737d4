import subprocess
import sys

import pytest

from ringmaster_handler import __version__, cli
from ringmaster_handler.proctitle import set_title


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no_such_module_xyz:app", "tcp://127.0.0.1:20001"], "cannot import 'no_such_module_xyz'"),
        (["apps:nope", "tcp://127.0.0.1:20001"], "has no attribute 'nope'"),
        (["apps:CLOSED", "tcp://127.0.0.1:20001"], "is not callable"),
        (["bad app", "tcp://127.0.0.1:20001"], "bad app"),
        (["apps:hello", "udp://127.0.0.1:20001"], "bad spec"),
        (["apps:hello", "tcp://h:1,tcp://h:3", "tcp://h:2"], "lists 2 endpoints"),
        (["apps:hello", "ipc:///tmp/x"], "give recv_spec"),
        (["broken_app:app", "tcp://127.0.0.1:20001"],
         "cannot import 'broken_app': ZeroDivisionError"),
        (["--max-body-size", "-1", "apps:hello", "tcp://127.0.0.1:20001"], "--max-body-size"),
        (["--request-timeout", "-1", "apps:hello", "tcp://127.0.0.1:20001"],
         "--request-timeout"),
        (["--upload-temp-store", "/uploads/upload", "apps:hello", "tcp://127.0.0.1:20001"],
         "must end in XXXXXX"),
        (["--forwarded-allow-ips", "127.0.0.1,proxy", "apps:hello", "tcp://127.0.0.1:20001"],
         "--forwarded-allow-ips: 'proxy' is neither an IP address nor a network"),
        (["--forwarded-allow-ips", "10.0.0.1/8", "apps:hello", "tcp://127.0.0.1:20001"],
         "--forwarded-allow-ips: '10.0.0.1/8'"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, message):
    (tmp_path / "broken_app.py").write_text("1 / 0\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("ringmaster-wsgi: error: ")
    assert message in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"ringmaster-wsgi {__version__}"


def test_version_matches_pyproject():
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    assert tomllib.loads(pyproject.read_text())["project"]["version"] == __version__


def test_load_app_default_attribute(tmp_path, monkeypatch):
    (tmp_path / "myapp.py").write_text("def app(e, s):\n    return []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli.load_app("myapp").__name__ == "app"


def test_process_title_in_a_child():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from ringmaster_handler.proctitle import set_title;"
        "set_title('ringmaster-wsgi hello:app -> front1');"
        "print(open('/proc/self/comm').read().strip());"
        "print(open('/proc/self/cmdline','rb').read().split(b'\\0')[0].decode())"
    )
    from conftest import HERE

    out = subprocess.run(
        [sys.executable, "-c", code, str(HERE.parent / "src"), "padding" * 10],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.splitlines()
    assert out == ["ringmaster-wsgi", "ringmaster-wsgi hello:app -> front1"]
    assert callable(set_title)


def test_log_formatter_escapes_request_text():
    import logging

    from ringmaster_handler.logs import SafeFormatter

    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "path %r then %s", ("/a", "b\nc\r"), None
    )
    line = SafeFormatter("%(levelname)s %(message)s").format(record)
    assert line == "ERROR path '/a' then b\\nc\\r"
    try:
        raise RuntimeError("one\nFORGED line")
    except RuntimeError:
        import sys as _sys

        record.exc_info = _sys.exc_info()
    text = SafeFormatter("%(message)s").format(record)
    assert all(ln.startswith("  | ") for ln in text.splitlines()[1:])
    assert "FORGED" in text and not any(ln.startswith("FORGED") for ln in text.splitlines())


def test_help_states_the_same_timeout_grace_as_the_loop():
    from ringmaster_handler import loop

    assert cli.TIMEOUT_GRACE == loop.TIMEOUT_GRACE
