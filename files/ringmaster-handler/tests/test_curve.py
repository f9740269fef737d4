"""CURVE between the dispatcher and its handlers: key files, options, and who gets requests.

The end-to-end tests run real Mongrel2, a real dispatcher and real handler processes; an
intruder runs an app that leaves a mark if it is ever called.
"""

import os
import shutil
import time
from pathlib import Path

import pytest
import zmq

from dispatch_harness import Worker
from harness import wait_for
from loadclient import Load
from ringmaster_handler import cli, curve, dispatcher_cli
from ringmaster_handler.zap import DenialLog
from test_dispatcher import Stack

needs_mongrel2 = pytest.mark.skipif(
    not (shutil.which("mongrel2") and shutil.which("m2sh")), reason="needs mongrel2 and m2sh"
)


@pytest.fixture
def keys(tmp_path):
    """Keypairs "dispatcher", "good", "late", "rogue"; only "good" is authorised."""
    d = tmp_path / "keys"
    d.mkdir()
    for name in ("dispatcher", "good", "late", "rogue"):
        curve.generate(str(d), name)
    (d / "authorized").mkdir()
    shutil.copy(d / "good.key", d / "authorized" / "good.key")
    return d


def public(keys: Path, name: str) -> str:
    return curve.load_public(str(keys / f"{name}.key")).decode()


# -- key files ------------------------------------------------------------------------------


def test_generated_keypairs_load_and_only_the_owner_reads_the_secret(keys):
    pair = curve.load_keypair(str(keys / "good.key_secret"))
    assert pair.public.decode() == public(keys, "good")
    assert zmq.curve_public(pair.secret) == pair.public
    assert (keys / "good.key_secret").stat().st_mode & 0o777 == 0o600
    assert (keys / "good.key").stat().st_mode & 0o777 == 0o644
    assert "secret-key" not in (keys / "good.key").read_text()
    assert pair.secret.decode() not in repr(pair)
    assert [p.name for p in keys.iterdir() if p.name.startswith(".")] == []


def test_generating_again_replaces_the_pair(keys):
    before = public(keys, "good")
    curve.generate(str(keys), "good")
    assert public(keys, "good") != before
    curve.load_keypair(str(keys / "good.key_secret"))


def _secret_text(keys, name="good"):
    return (keys / f"{name}.key_secret").read_text()


KEYPAIR_ERRORS = [
    ("missing", None, "cannot read"),
    ("group-readable", 0o640, "chmod 600"),
    ("world-readable", 0o644, "chmod 600"),
    ("public only", "public", "holds no secret-key"),
    ("garbage", "garbage", "not a ZeroMQ certificate"),
    ("short key", "short", "40 Z85 characters"),
    ("mismatched", "mismatched", "does not belong"),
    ("directory", "directory", "not a regular file"),
]


@pytest.mark.parametrize(
    ("case", "how", "message"), KEYPAIR_ERRORS, ids=[c[0] for c in KEYPAIR_ERRORS]
)
def test_bad_keypair_files_are_refused(keys, case, how, message):
    path = keys / "bad.key_secret"
    if how == "public":
        shutil.copy(keys / "good.key", path)
    elif how == "garbage":
        path.write_text("not a certificate\n")
    elif how == "short":
        path.write_text('curve\n    public-key = "abc"\n    secret-key = "def"\n')
    elif how == "mismatched":
        good, rogue = _secret_text(keys), _secret_text(keys, "rogue")
        mixed = [ln for ln in good.splitlines() if "secret-key" not in ln]
        mixed += [ln for ln in rogue.splitlines() if "secret-key" in ln]
        path.write_text("\n".join(mixed) + "\n")
    elif how == "directory":
        path.mkdir()
    elif isinstance(how, int):
        shutil.copy(keys / "good.key_secret", path)
    if path.is_file():
        path.chmod(how if isinstance(how, int) else 0o600)
    with pytest.raises(curve.CurveError, match=message):
        curve.load_keypair(str(path))


def test_the_authorised_set_is_the_public_certificates(keys):
    auth = keys / "authorized"
    shutil.copy(keys / "rogue.key_secret", auth / "rogue.key_secret")  # not a *.key: ignored
    (auth / ".hidden.key").write_text("not even a certificate")
    assert curve.load_authorized(str(auth)) == {public(keys, "good").encode(): "good"}
    (auth / "broken.key").write_text("curve\n")
    with pytest.raises(curve.CurveError, match=r"broken\.key"):
        curve.load_authorized(str(auth))
    with pytest.raises(curve.CurveError, match="not a directory"):
        curve.load_authorized(str(keys / "good.key"))


def test_server_keys_file(keys):
    key = public(keys, "dispatcher")
    text = f"# the fronts\n\ntcp://front1:9999 {key}\n  tcp://10.0.0.2:9999\t{key}  \n"
    assert curve.parse_server_keys(text, "f") == {
        "tcp://front1:9999": key.encode(),
        "tcp://10.0.0.2:9999": key.encode(),
    }


SERVER_KEY_ERRORS = [
    ("tcp://front1:9999", "expected '<endpoint> <public key>'"),
    ("tcp://front1:9999 {key} extra", "expected '<endpoint> <public key>'"),
    ("udp://front1:9999 {key}", "bad spec"),
    ("tcp://front1:9999 tooshort", "40 Z85 characters"),
    ("tcp://front1:9999 " + "\\" * 40, "not valid Z85"),
    ("tcp://front1:9999 {key}\ntcp://front1:9999 {key}", "a second key for tcp://front1:9999"),
]


@pytest.mark.parametrize(("text", "message"), SERVER_KEY_ERRORS)
def test_bad_server_keys_files_are_refused(keys, text, message):
    with pytest.raises(curve.CurveError, match=message):
        curve.parse_server_keys(text.format(key=public(keys, "dispatcher")), "servers")


def test_every_dispatcher_needs_a_server_key(keys, tmp_path):
    servers = tmp_path / "servers"
    servers.write_text(f"tcp://a:1 {public(keys, 'dispatcher')}\n")
    assert curve.load_server_keys(str(servers), ["tcp://a:1"]) == {
        "tcp://a:1": public(keys, "dispatcher").encode()
    }
    with pytest.raises(curve.CurveError, match="no public key for tcp://b:2"):
        curve.load_server_keys(str(servers), ["tcp://a:1", "tcp://b:2"])


def test_denials_are_logged_once_per_address_per_interval(caplog):
    now = [100.0]
    denials = DenialLog(every=60, clock=lambda: now[0])
    logged = []
    for t, address in [(0, "a"), (1, "a"), (2, "b"), (30, "a"), (59.9, "a"), (60, "a"), (62, "b")]:
        now[0] = 100.0 + t
        logged.append(denials.refused(address, "its key K is not authorised"))
    assert logged == [True, False, True, False, False, True, True]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[2] == (
        "refused a handler connection from a: its key K is not authorised "
        "(and 3 more refusals since the last warning)"
    )


# -- command lines --------------------------------------------------------------------------


def _dispatcher_argv(*options):
    return [*options, "tcp://h:1", "tcp://h:2", "tcp://h:3"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--curve-secret-key", "{keys}/dispatcher.key_secret"], "go together"),
        (["--curve-authorized-keys", "{keys}/authorized"], "go together"),
        (["--curve-secret-key", "{keys}/nope", "--curve-authorized-keys", "{keys}/authorized"],
         "cannot read"),
        (["--curve-secret-key", "{keys}/dispatcher.key", "--curve-authorized-keys",
          "{keys}/authorized"], "holds no secret-key"),
        (["--curve-secret-key", "{keys}/dispatcher.key_secret", "--curve-authorized-keys",
          "{keys}/nope"], "cannot read"),
        (["--curve-secret-key", "{keys}/open.key_secret", "--curve-authorized-keys",
          "{keys}/authorized"], "chmod 600"),
    ],
)  # fmt: skip
def test_dispatcher_curve_usage_errors(keys, capsys, options, message):
    shutil.copy(keys / "dispatcher.key_secret", keys / "open.key_secret")
    (keys / "open.key_secret").chmod(0o640)
    argv = _dispatcher_argv(*(o.format(keys=keys) for o in options))
    assert dispatcher_cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("ringmaster-dispatcher: error: ") and message in err, err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--dispatcher", "--curve-secret-key", "{keys}/good.key_secret"], "go together"),
        (["--dispatcher", "--curve-server-keys", "{servers}"], "go together"),
        (["--curve-secret-key", "{keys}/good.key_secret", "--curve-server-keys", "{servers}"],
         "CURVE needs --dispatcher"),
        (["--dispatcher", "--curve-secret-key", "{keys}/good.key", "--curve-server-keys",
          "{servers}"], "holds no secret-key"),
        (["--dispatcher", "--curve-secret-key", "{keys}/good.key_secret", "--curve-server-keys",
          "{keys}/nope"], "cannot read"),
        (["--dispatcher", "--curve-secret-key", "{keys}/good.key_secret", "--curve-server-keys",
          "{other}"], "no public key for tcp://127.0.0.1:20001"),
    ],
)  # fmt: skip
def test_handler_curve_usage_errors(keys, capsys, options, message):
    servers, other = keys / "servers", keys / "other"
    servers.write_text(f"tcp://127.0.0.1:20001 {public(keys, 'dispatcher')}\n")
    other.write_text(f"tcp://127.0.0.1:20002 {public(keys, 'dispatcher')}\n")
    argv = [o.format(keys=keys, servers=servers, other=other) for o in options]
    assert cli.main([*argv, "apps:hello", "tcp://127.0.0.1:20001"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("ringmaster-wsgi: error: ") and message in err, err


def test_key_generator_command(tmp_path, capsys):
    assert curve.main([str(tmp_path), "w1"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "w1.key")
    assert (tmp_path / "w1.key_secret").stat().st_mode & 0o777 == 0o600
    assert curve.main([str(tmp_path / "nope"), "w1"]) == 2
    assert "cannot write into" in capsys.readouterr().err
    assert curve.main(["only-one"]) == 2


# -- end to end -----------------------------------------------------------------------------


def _server_args(keys: Path) -> tuple:
    return (
        "--curve-secret-key",
        str(keys / "dispatcher.key_secret"),
        "--curve-authorized-keys",
        str(keys / "authorized"),
    )


def _client_args(keys: Path, name: str, servers: Path) -> tuple:
    return (
        "--curve-secret-key",
        str(keys / f"{name}.key_secret"),
        "--curve-server-keys",
        str(servers),
    )


def _curve_stack(tmp_path, keys, workers=1):
    servers = keys / "servers"
    stack = Stack(tmp_path, workers=workers, app="apps:router", dispatcher_args=_server_args(keys))
    servers.write_text(f"{stack.bind} {public(keys, 'dispatcher')}\n")
    stack.worker_args = _client_args(keys, "good", servers)
    return stack, servers


def _intruder(tmp_path, name, bind, *args) -> tuple[Worker, Path]:
    where = tmp_path / name
    where.mkdir()
    return Worker(where, "apps:rogue", bind, *args).start(wait=False), where / "ROGUE-CALLED"


@needs_mongrel2
def test_only_handlers_with_an_authorised_key_get_requests(tmp_path, keys):
    stack, servers = _curve_stack(tmp_path, keys)
    # An impostor's view of the dispatcher: the right client key, the wrong server key.
    wrong_server = keys / "wrong-server"
    wrong_server.write_text(f"{stack.bind} {public(keys, 'rogue')}\n")
    with stack:
        assert stack.get("/") == (200, b"Hello, World!")
        assert stack.get("/echo", "POST", b"sealed") == (200, b"sealed")
        intruders = [
            _intruder(tmp_path, "rogue", stack.bind, *_client_args(keys, "rogue", servers)),
            _intruder(tmp_path, "plain", stack.bind),
            _intruder(tmp_path, "impostor", stack.bind, *_client_args(keys, "good", wrong_server)),
        ]
        stack.others += [w for w, _ in intruders]
        wait_for(
            lambda: "its key " + public(keys, "rogue") in stack.dispatcher.log_text(),
            10,
            "the dispatcher to refuse the rogue key",
        )
        wait_for(lambda: "handshake failed" in stack.dispatcher.log_text(), 10, "plaintext refusal")
        rogue = intruders[0][0]
        wait_for(lambda: "refused the CURVE handshake" in rogue.log_text(), 10, "the rogue's note")
        refused_at = time.monotonic()
        result = Load(stack.m2.port, clients=8, duration=2.0, timeout=3).start().join()
        assert result.ok == result.sent > 100, result
        for _ in range(20):
            assert stack.get("/") == (200, b"Hello, World!")
        # Long enough for the rogue's own retry (worker.REFUSED_RETRY) and the plaintext ones.
        time.sleep(max(0.0, refused_at + 6.5 - time.monotonic()))
        for worker, mark in intruders:
            assert worker.proc.poll() is None, worker.log_text()
            assert not mark.exists(), worker.log_text()
            assert "connected to dispatcher" not in worker.log_text() or worker is intruders[1][0]
        log = stack.dispatcher.log_text()
        assert stack.dispatcher.connected() == 1, log
        # Denials are rate-limited per peer: one warning each despite the retries.
        assert log.count("its key " + public(keys, "rogue")) == 1, log
        assert log.count("handshake failed") == 1, log
        assert "Traceback" not in log
        assert public(keys, "good") + '"' not in log
        for name in ("dispatcher", "good", "rogue"):
            secret = curve.load_keypair(str(keys / f"{name}.key_secret")).secret.decode()
            for text in [log, stack.workers[0].log_text(), *(w.log_text() for w, _ in intruders)]:
                assert secret not in text


@needs_mongrel2
def test_a_key_authorised_later_is_let_in_without_a_restart(tmp_path, keys):
    stack, servers = _curve_stack(tmp_path, keys)
    with stack:
        late, mark = _intruder(tmp_path, "late", stack.bind, *_client_args(keys, "late", servers))
        stack.others.append(late)
        wait_for(lambda: "refused the CURVE handshake" in late.log_text(), 10, "the refusal")
        assert "connected to dispatcher" not in late.log_text()
        # As Ansible and mv do it: a complete file renamed into place.
        shutil.copy(keys / "late.key", keys / "late.tmp")
        os.replace(keys / "late.tmp", keys / "authorized" / "late.key")
        wait_for(
            lambda: "connected to dispatcher" in late.log_text(), 15, "the late key to be let in"
        )
        stack.dispatcher.wait_connected(2)
        deadline = time.monotonic() + 10
        while not mark.exists() and time.monotonic() < deadline:
            stack.get("/")
        assert mark.exists()  # the newly authorised handler serves


@needs_mongrel2
def test_a_plaintext_stack_is_unchanged_and_rejects_curve_handlers(tmp_path, keys):
    with Stack(tmp_path, workers=1) as stack:
        servers = keys / "servers"
        servers.write_text(f"{stack.bind} {public(keys, 'dispatcher')}\n")
        sealed, mark = _intruder(
            tmp_path, "sealed", stack.bind, *_client_args(keys, "good", servers)
        )
        stack.others.append(sealed)
        wait_for(lambda: "refused the CURVE handshake" in sealed.log_text(), 10, "the refusal")
        for _ in range(10):
            assert stack.get("/") == (200, b"Hello, World!")
        assert not mark.exists()
        assert stack.dispatcher.connected() == 1


@needs_mongrel2
def test_replies_of_whole_frames_pass_the_sealed_link(tmp_path, keys):
    # A 1 MB body fills reply frames to MAX_FRAME; CURVE adds its own bytes to each frame on
    # the wire, where libzmq checks MAXMSGSIZE: a limit of exactly MAX_FRAME cut the handler
    # off at every large reply (the bench's slow clients, 1 MB each, stalled the stack).
    stack, _servers = _curve_stack(tmp_path, keys)
    with stack:
        for mb in (1, 3):
            status, body = stack.get(f"/big?mb={mb}", timeout=20)
            assert (status, len(body)) == (200, mb << 20)
        assert stack.get("/") == (200, b"Hello, World!")
        log = stack.dispatcher.log_text()
        assert "left (disconnected)" not in log, log
        assert stack.dispatcher.connected() == 1
