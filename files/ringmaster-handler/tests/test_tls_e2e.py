"""Mongrel2's own TLS with the settings the mongrel2 role writes: a real Mongrel2, a real handler.

What the role relies on, measured here rather than read from the source: the file names Mongrel2
looks for in certdir (<server uuid>.crt/.key for clients without SNI, <host>.crt/.key and
_.<domain>.crt/.key for SNI), that the role's cipher list leaves no protocol below TLS 1.2 while
Mongrel2's defaults do, and that the app sees wsgi.url_scheme https.
"""

import json
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from harness import Handler, Mongrel2, handler_route, running

pytestmark = pytest.mark.skipif(
    not (shutil.which("mongrel2") and shutil.which("m2sh") and shutil.which("openssl")),
    reason="needs mongrel2, m2sh and openssl",
)

ROLE_DEFAULTS = Path(__file__).resolve().parents[3] / "roles" / "mongrel2" / "defaults" / "main.yml"
AEAD = {
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
}
WEAK = (
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-ECDSA-AES128-CCM8",
    "AES128-GCM-SHA256",
)


def role_ciphers() -> str:
    """The cipher list the mongrel2 role ships, as Mongrel2's ssl_ciphers setting."""
    return " ".join(yaml.safe_load(ROLE_DEFAULTS.read_text())["mongrel2_tls_ciphers"])


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(tmp: Path) -> Path:
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=tmp)
    openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/CN=ringmaster test CA",
        "-days",
        "2",
        "-out",
        "ca.crt",
        cwd=tmp,
    )
    return tmp / "ca.crt"


def issue(tmp: Path, certdir: Path, file_stem: str, dns_name: str) -> None:
    """A P-256 leaf for dns_name, signed by the test CA, written as certdir/<file_stem>.crt/.key."""
    key, csr = certdir / f"{file_stem}.key", tmp / f"{file_stem}.csr"
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key), cwd=tmp)
    openssl("req", "-new", "-key", str(key), "-subj", f"/CN={dns_name}", "-out", str(csr), cwd=tmp)
    ext = tmp / f"{file_stem}.ext"
    ext.write_text(f"subjectAltName=DNS:{dns_name}\n")
    openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(certdir / f"{file_stem}.crt"),
        cwd=tmp,
    )


def start_tls_stack(root: Path, ciphers: str | None):
    """Mongrel2 with use_ssl and certdir /certs/ (relative to its root, as in the role's chroot)."""
    route = handler_route()
    settings = {"certdir": "/certs/"}
    if ciphers is not None:
        settings["ssl_ciphers"] = ciphers
    m2 = Mongrel2(root, {"/": route}, settings, use_ssl=True)
    certdir = root / "certs"
    certdir.mkdir(parents=True)
    issue(root, certdir, m2.uuid, "localhost")
    issue(root, certdir, "app.test", "app.test")
    issue(root, certdir, "_.wild.test", "*.wild.test")
    handler = Handler(root, "apps:router", route["send"], route["recv"], "--hsts-max-age", "600")
    return m2, handler


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("m2tls")
    ca = make_ca(root)
    m2, handler = start_tls_stack(root, role_ciphers())
    with running(m2.start(), handler.start()):
        yield m2, ca


def client(ca: Path | None, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(ca)
    if version is not None:
        # Security level 0, so that this client really offers the old protocols (the
        # control test below proves it does).
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def get(port: int, ctx: ssl.SSLContext, server_name: str, path: str = "/environ"):
    """One HTTP/1.0 request over TLS; the negotiated session's facts and the response body."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        facts = {"version": tls.version(), "cipher": tls.cipher()[0], "cert": tls.getpeercert()}
        tls.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return facts, head.decode(), body


def test_the_app_sees_https_and_the_chain_verifies(tls_stack):
    m2, ca = tls_stack
    facts, head, body = get(m2.port, client(ca), "localhost")
    assert head.startswith("HTTP/1.1 200"), head
    environ = json.loads(body)
    assert environ["wsgi.url_scheme"] == "https"
    assert "\r\nStrict-Transport-Security: max-age=600\r\n" in head + "\r\n", head
    assert facts["version"] == "TLSv1.2"
    assert facts["cipher"] in AEAD


@pytest.mark.parametrize(
    ("server_name", "subject"),
    [
        pytest.param("app.test", "app.test", id="exact-name-file"),
        pytest.param("x.wild.test", "*.wild.test", id="wildcard-file-with-underscore"),
        pytest.param("unknown.test", "localhost", id="no-file-falls-back-to-the-server-uuid-cert"),
    ],
)
def test_sni_picks_the_file_named_after_the_host(tls_stack, server_name, subject):
    m2, ca = tls_stack
    ctx = client(ca)
    ctx.check_hostname = False
    facts = get(m2.port, ctx, server_name)[0]
    served = dict(x[0] for x in facts["cert"]["subject"])["commonName"]
    assert served == subject, facts


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["tls1.0", "tls1.1"]
)
def test_no_protocol_below_tls_1_2(tls_stack, version):
    m2, _ = tls_stack
    with pytest.raises(ssl.SSLError) as refused:
        get(m2.port, client(None, version), "localhost")
    # The server's alert, not this client declining to offer the protocol.
    assert "ALERT" in str(refused.value).upper(), refused.value


def test_tls_1_2_offers_only_ecdhe_aead(tls_stack):
    m2, _ = tls_stack
    seen = set()
    for cipher in sorted(AEAD):
        ctx = client(None, ssl.TLSVersion.TLSv1_2)
        ctx.set_ciphers(f"{cipher}:@SECLEVEL=0")
        seen.add(get(m2.port, ctx, "localhost")[0]["cipher"])
    assert seen == AEAD
    for weak in WEAK:
        ctx = client(None, ssl.TLSVersion.TLSv1_2)
        ctx.set_ciphers(f"{weak}:@SECLEVEL=0")
        with pytest.raises(ssl.SSLError):
            get(m2.port, ctx, "localhost")


def test_without_the_cipher_list_mongrel2_speaks_tls_1_1(tmp_path):
    """The control: this client reaches TLS 1.1, so the refusal above is the cipher list's doing."""
    make_ca(tmp_path)
    m2, handler = start_tls_stack(tmp_path, None)
    with running(m2.start(), handler.start()):
        facts, head, _ = get(m2.port, client(None, ssl.TLSVersion.TLSv1_1), "localhost")
    assert facts["version"] == "TLSv1.1"
    assert head.startswith("HTTP/1.1 200"), head


def served_serial(port: int, server_name: str) -> str:
    """The serial number of the certificate Mongrel2 sends for server_name."""
    ctx = client(None)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    out = subprocess.run(
        ["openssl", "x509", "-inform", "DER", "-noout", "-serial"],
        input=der,
        capture_output=True,
        check=True,
    )
    return out.stdout.decode().strip()


def test_sighup_swaps_sni_certificates_and_keeps_open_connections(tmp_path):
    """What a renewal without a restart could use: SIGHUP empties Mongrel2's SNI cache (the
    server's own certificate stays until a restart), and an open TLS connection carries on."""
    make_ca(tmp_path)
    m2, handler = start_tls_stack(tmp_path, role_ciphers())
    with running(m2.start(), handler.start()):
        ctx = client(None)
        with (
            socket.create_connection(("127.0.0.1", m2.port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="app.test") as open_conn,
        ):
            request = b"GET /environ HTTP/1.1\r\nHost: localhost\r\n\r\n"
            open_conn.sendall(request)
            assert open_conn.recv(65536).startswith(b"HTTP/1.1 200")
            before_sni, before_default = (
                served_serial(m2.port, "app.test"),
                served_serial(m2.port, "x.test"),
            )
            issue(tmp_path, tmp_path / "certs", "app.test", "app.test")
            issue(tmp_path, tmp_path / "certs", m2.uuid, "localhost")
            assert served_serial(m2.port, "app.test") == before_sni  # cached
            m2.proc.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            assert served_serial(m2.port, "app.test") != before_sni
            assert served_serial(m2.port, "x.test") == before_default  # read once, at start
            open_conn.sendall(request)
            assert open_conn.recv(65536).startswith(b"HTTP/1.1 200")
