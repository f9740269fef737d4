"""bench/whole.py's https workload: what nginx is given, what a TLS probe reads, which row each
ratio and target compares with, and that a dirty row never passes."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import run
import whole

ROOT = Path(__file__).resolve().parents[2]
ROLE_CIPHERS = yaml.safe_load((ROOT / "roles/mongrel2/defaults/main.yml").read_text())["mongrel2_tls_ciphers"]
RM, RM_TLS = whole.RingmasterDispatcher.name, whole.RingmasterDispatcherTLS.name
NGINX12, NGINX13 = whole.NginxTLS12GunicornSync.name, whole.NginxTLSDefaultGunicornSync.name


def test_nginx_gets_exactly_mongrel2s_suites_in_names_openssl_knows():
    ciphers = whole.openssl_ciphers(" ".join(ROLE_CIPHERS))
    # What OpenSSL (nginx's library) makes of the string: a suite it did not know would be
    # silently dropped, so the count is checked too.
    listed = subprocess.run(
        ["openssl", "ciphers", "-tls1_2", "-ciphersuites", "", ciphers], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert listed.split(":") == ciphers.split(":")
    assert len(listed.split(":")) == len(ROLE_CIPHERS)
    assert all(name.startswith("ECDHE-") for name in listed.split(":"))


@pytest.mark.parametrize(
    ("mbedtls", "openssl"),
    [
        ("TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"),
        ("TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384"),
        ("TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"),
    ],
)
def test_suite_names(mbedtls, openssl):
    assert whole.openssl_ciphers(mbedtls) == openssl


@pytest.mark.parametrize(
    "unknown", ["TLS-ECDHE-ECDSA-WITH-AES-128-CCM", "TLS-RSA-WITH-AES-128-GCM-SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"]
)
def test_a_suite_without_a_known_name_is_refused_not_dropped(unknown):
    with pytest.raises(ValueError, match=unknown):
        whole.openssl_ciphers(f"TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256 {unknown}")


def nginx_conf(kind, tmp_path) -> str:
    stack = kind(Path("/nonexistent-venv"), 2, tmp_path)
    stack.deploy = whole.load_deploy(
        type("Args", (), {"m2_setting": None, "dispatcher_args": None, "handler_args": None})()
    )
    stack.nofile, stack.certs = 1024, whole.Certs(tmp_path / "tls")
    stack.spawn = lambda argv, **kw: None  # only the configuration is looked at
    stack.start_nginx()
    return next(tmp_path.glob("*/nginx.conf")).read_text()


@pytest.mark.parametrize(
    ("kind", "wanted", "unwanted"),
    [
        (whole.NginxGunicornSync, ["listen 127.0.0.1:{port};"], ["ssl"]),
        (
            whole.NginxTLS12GunicornSync,
            ["listen 127.0.0.1:{port} ssl;", "ssl_protocols TLSv1.2;", "ssl_ciphers {ciphers};",
             "ssl_session_tickets off;", "ssl_certificate {tls}/server.crt;"],
            ["TLSv1.3"],
        ),
        (
            whole.NginxTLSDefaultGunicornSync,
            ["listen 127.0.0.1:{port} ssl;", "ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;",
             "ssl_session_tickets off;"],
            ["ssl_ciphers"],
        ),
    ],
    ids=["plain", "tls1.2", "debian"],
)  # fmt: skip
def test_nginx_configuration(tmp_path, kind, wanted, unwanted):
    conf = nginx_conf(kind, tmp_path)
    port = next(int(x.split(":")[1].split()[0].rstrip(";")) for x in conf.splitlines() if "listen" in x)
    for text in wanted:
        ciphers = whole.openssl_ciphers(" ".join(ROLE_CIPHERS))
        assert text.format(port=port, ciphers=ciphers, tls=tmp_path / "tls") in conf
    for text in unwanted:
        assert text not in conf


S_CLIENT_12 = """CONNECTED(00000003)
Server Temp Key: ECDH, secp521r1, 521 bits
---
New, TLSv1.2, Cipher is ECDHE-ECDSA-AES128-GCM-SHA256
drop connection and then reconnect
New, TLSv1.2, Cipher is ECDHE-ECDSA-AES128-GCM-SHA256
New, TLSv1.2, Cipher is ECDHE-ECDSA-AES128-GCM-SHA256
"""
S_CLIENT_13 = """Server Temp Key: X25519, 253 bits
New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384
Reused, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384
New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384
"""


@pytest.mark.parametrize(
    ("out", "facts"),
    [
        (S_CLIENT_12, {"protocol": "TLSv1.2", "cipher": "ECDHE-ECDSA-AES128-GCM-SHA256",
                       "group": "secp521r1", "resumed": "0/2"}),
        (S_CLIENT_13, {"protocol": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "group": "X25519",
                       "resumed": "1/2"}),
        ("connect: Connection refused", {"protocol": "?", "cipher": "?", "group": "?", "resumed": "0/0"}),
    ],
    ids=["mbedtls-p521", "tls1.3-resumed", "nothing"],
)  # fmt: skip
def test_tls_probe(out, facts):
    assert whole.parse_s_client(out) == facts


@pytest.mark.parametrize(
    ("variant", "name", "base"),
    [
        ("keep-alive", RM_TLS, RM),  # what TLS costs this stack: its own plain twin
        ("new connection", RM_TLS, NGINX12),  # the like-for-like handshake
        ("keep-alive", NGINX13, whole.BASE),
        ("new connection", f"{RM_TLS} x2", NGINX12),  # recommended group labels
        ("keep-alive", RM, whole.BASE),  # a plain row: the usual base
    ],
)
def test_ratio_bases(variant, name, base):
    assert whole.base_of("https", variant, name) == base


def cell(rps, errors=0, lost=0):
    return [{"rps": rps, "p99": 1.0, "errors": errors, "lost": lost}]


def verdicts(results, capsys) -> dict[str, str]:
    whole.targets(results)
    out = {}
    for line in capsys.readouterr().out.splitlines():
        if "[PASS]" in line or "[FAIL]" in line:
            out[line.split("] ", 1)[1].split(" (errors")[0]] = "PASS" if "[PASS]" in line else "FAIL"
    return out


KEEP = "https keep-alive >= 0.8x plain http (Mongrel2 TLS, same run)"
HS12 = "https new connections/s >= 0.8x nginx TLS 1.2, same suites + gunicorn sync"
HS13 = "https new connections/s >= 0.8x nginx TLS 1.3, Debian's + gunicorn sync"


@pytest.mark.parametrize(
    ("tls_keep", "tls_new", "expected"),
    [
        (cell(800.0), cell(400.0), {KEEP: "PASS", HS12: "PASS", HS13: "FAIL"}),
        (cell(799.0), cell(399.0), {KEEP: "FAIL", HS12: "FAIL", HS13: "FAIL"}),
        (cell(900.0, lost=1), cell(450.0, errors=1), {KEEP: "FAIL", HS12: "FAIL", HS13: "FAIL"}),
    ],
    ids=["at-the-line", "just-under", "dirty-rows-never-pass"],
)
def test_https_targets(capsys, tls_keep, tls_new, expected):
    results = {
        ("2 procs", "https", "keep-alive", RM): cell(1000.0),
        ("2 procs", "https", "keep-alive", RM_TLS): tls_keep,
        ("2 procs", "https", "new connection", RM_TLS): tls_new,
        ("2 procs", "https", "new connection", NGINX12): cell(500.0),
        ("2 procs", "https", "new connection", NGINX13): cell(600.0),
    }
    assert verdicts(results, capsys) == expected


def test_a_dirty_base_row_gives_no_pass(capsys):
    results = {
        ("2 procs", "https", "keep-alive", RM): cell(1000.0, lost=3),
        ("2 procs", "https", "keep-alive", RM_TLS): cell(950.0),
    }
    assert verdicts(results, capsys) == {KEEP: "FAIL"}


def test_the_https_workload_runs_its_own_stacks_with_their_plain_twins():
    args = type("Args", (), {"procs": [2], "recommended": False, "only": None, "extra_rows": False})()
    (setting, group), *_ = whole.runs(args, "https")
    names = [k.name for k, _ in group]
    assert setting == "2 procs" and names == [k.name for k in whole.HTTPS]
    for kind in whole.HTTPS:
        assert (kind.scheme == "https") == bool(kind.plain), kind.name
        assert not kind.plain or kind.plain in names
    hello = [k for k, _ in whole.runs(args, "hello")[0][1]]
    assert not [k for k in hello if k.scheme == "https"]


def test_wrk_output():
    out = """Running 5s test @ https://localhost:20000/
  Latency Distribution
     50%  812.00us
     99%    1.20s
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:   1234.50
"""
    assert run.parse_wrk(out) == {"rps": 1234.5, "p50": 0.812, "p99": 1200.0, "errors": 9}
