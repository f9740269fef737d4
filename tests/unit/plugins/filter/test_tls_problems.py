# Copyright (c) 2026, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The mongrel2 role's TLS preflight: real certificates and keys made here, one case per rule."""

from __future__ import annotations

import datetime

import pytest
from ansible_collections.ringmaster.stack.plugins.filter import tls_problems as tp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
CIPHERS = ["TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256", "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256"]


def key_pem(key, password=None):
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()


def cert_pem(key, dns=("www.example.com",), start=NOW - DAY, end=NOW + 90 * DAY):
    """A self-signed certificate for key, valid from start to end, with these DNS names."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0] if dns else "no-san")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM).decode()


KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())
RSA = rsa.generate_private_key(65537, 2048)
RSA_SMALL = rsa.generate_private_key(65537, 1024)
ED = ed25519.Ed25519PrivateKey.generate()
GOOD = {"names": ["www.example.com"], "cert": cert_pem(KEY), "key": key_pem(KEY)}


def entry(**changes):
    return {**GOOD, **changes}


# (certificates, hosts, ciphers, the sentences expected, in part; [] means no problem)
CASES = [
    pytest.param([GOOD], ["www.example.com"], CIPHERS, [], id="good-ecdsa"),
    pytest.param([entry(cert=cert_pem(RSA), key=key_pem(RSA))], ["www.example.com"], CIPHERS, [], id="good-rsa"),
    pytest.param(
        [entry(names=["*.example.com"], cert=cert_pem(KEY, dns=("*.example.com",)))],
        ["shop.example.com"],
        CIPHERS,
        [],
        id="wildcard-covers-one-label",
    ),
    pytest.param(
        [entry(names=["*.example.com"], cert=cert_pem(KEY, dns=("*.example.com",)))],
        ["a.shop.example.com"],
        CIPHERS,
        ["no entry's names cover the TLS host a.shop.example.com"],
        id="wildcard-covers-no-second-label",
    ),
    pytest.param([], ["www.example.com"], CIPHERS, ["mongrel2_tls_certificates must list at least one"], id="none"),
    pytest.param(
        [entry(key=key_pem(OTHER))],
        ["www.example.com"],
        CIPHERS,
        ["mongrel2_tls_certificates[0]: the key does not match the certificate"],
        id="key-does-not-match",
    ),
    pytest.param(
        [entry(cert=cert_pem(KEY, start=NOW - 100 * DAY, end=NOW - DAY))],
        ["www.example.com"],
        CIPHERS,
        ["mongrel2_tls_certificates[0]: the certificate expired on 2026-12-01 12:00 UTC"],
        id="expired",
    ),
    pytest.param(
        [entry(cert=cert_pem(KEY, start=NOW + DAY))],
        ["www.example.com"],
        CIPHERS,
        ["mongrel2_tls_certificates[0]: the certificate is not valid before 2026-12-03"],
        id="not-yet-valid",
    ),
    pytest.param(
        [GOOD],
        ["www.example.com", "api.example.com"],
        CIPHERS,
        ["no entry's names cover the TLS host api.example.com"],
        id="tls-host-without-certificate",
    ),
    pytest.param(
        [entry(names=["www.example.com", "example.com"])],
        ["www.example.com"],
        CIPHERS,
        ["mongrel2_tls_certificates[0]: the certificate does not cover example.com (its DNS names: www.example.com)"],
        id="name-not-in-the-certificate",
    ),
    pytest.param(
        [entry(cert=cert_pem(KEY, dns=()))],
        ["www.example.com"],
        CIPHERS,
        ["does not cover www.example.com (its DNS names: none)"],
        id="certificate-without-san",
    ),
    pytest.param(
        [entry(names=["WWW.example.com"])],
        ["www.example.com"],
        CIPHERS,
        ["mongrel2_tls_certificates[0].names must list host names in lower case"],
        id="name-not-lower-case",
    ),
    pytest.param(
        [GOOD, entry()],
        ["www.example.com"],
        CIPHERS,
        ["lists www.example.com in more than one entry"],
        id="name-twice",
    ),
    pytest.param(
        [entry(cert_file="/x.pem")],
        ["www.example.com"],
        CIPHERS,
        ["mongrel2_tls_certificates[0] needs exactly one of cert (PEM as text) and cert_file"],
        id="cert-and-cert-file",
    ),
    pytest.param(
        [{"names": ["www.example.com"], "cert": GOOD["cert"]}],
        ["www.example.com"],
        CIPHERS,
        ["mongrel2_tls_certificates[0] needs exactly one of key (PEM as text) and key_file"],
        id="no-key",
    ),
    pytest.param(
        [{"names": ["www.example.com"], "cert_file": "/nonexistent/www.crt", "key": GOOD["key"]}],
        ["www.example.com"],
        CIPHERS,
        ["mongrel2_tls_certificates[0].cert_file: cannot read /nonexistent/www.crt on the controller"],
        id="unreadable-cert-file",
    ),
    pytest.param(
        [entry(cert="not a certificate")],
        ["www.example.com"],
        CIPHERS,
        ["mongrel2_tls_certificates[0]: the certificate is not PEM"],
        id="cert-not-pem",
    ),
    pytest.param(
        [entry(key="-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")],
        ["www.example.com"],
        CIPHERS,
        ["mongrel2_tls_certificates[0]: the key is not an unencrypted PEM private key"],
        id="key-not-pem",
    ),
    pytest.param(
        [entry(key=key_pem(KEY, b"secret"))],
        ["www.example.com"],
        CIPHERS,
        ["the key is encrypted, and Mongrel2 has no passphrase setting"],
        id="key-encrypted",
    ),
    pytest.param(
        [entry(cert=cert_pem(RSA_SMALL), key=key_pem(RSA_SMALL))],
        ["www.example.com"],
        CIPHERS,
        ["an RSA key of 1024 bits; at least 2048"],
        id="rsa-too-small",
    ),
    pytest.param(
        [entry(cert=cert_pem(ED), key=key_pem(ED))],
        ["www.example.com"],
        CIPHERS,
        ["takes RSA or ECDSA keys only"],
        id="ed25519-key",
    ),
    pytest.param(
        [GOOD],
        ["www.example.com"],
        [*CIPHERS, "TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA"],
        ["mongrel2_tls_ciphers may hold only TLS 1.2 ECDHE AEAD suites", "AES-128-CBC-SHA"],
        id="cbc-cipher-lets-tls-1.0-in",
    ),
    pytest.param(
        [GOOD],
        ["www.example.com"],
        ["TLS-RSA-WITH-AES-128-GCM-SHA256"],
        ["mongrel2_tls_ciphers may hold only"],
        id="no-forward-secrecy",
    ),
    pytest.param([GOOD], ["www.example.com"], [], ["mongrel2_tls_ciphers must list at least one"], id="no-cipher"),
]


@pytest.mark.parametrize(("certificates", "hosts", "ciphers", "expected"), CASES)
def test_tls_problems(certificates, hosts, ciphers, expected):
    problems = tp.tls_problems(certificates, hosts, ciphers, now=NOW.isoformat())
    if not expected:
        assert problems == []
    for part in expected:
        assert any(part in p for p in problems), problems


def test_files_on_the_controller(tmp_path):
    (tmp_path / "www.crt").write_text(GOOD["cert"])
    (tmp_path / "www.key").write_text(GOOD["key"])
    files = {"names": ["www.example.com"], "cert_file": str(tmp_path / "www.crt")}
    files["key_file"] = str(tmp_path / "www.key")
    assert tp.tls_problems([files], ["www.example.com"], CIPHERS, now=NOW.isoformat()) == []
    directory = {**files, "key_file": str(tmp_path)}
    assert tp.tls_problems([directory], ["www.example.com"], CIPHERS, now=NOW.isoformat()) == [
        f"mongrel2_tls_certificates[0].key_file: cannot read {tmp_path} on the controller (Is a directory)."
    ]


def test_no_sentence_carries_key_material():
    secret_body = GOOD["key"].splitlines()[1]
    bad = [entry(key=GOOD["key"].replace(secret_body, secret_body[::-1])), entry(names=["x.example.com"])]
    problems = tp.tls_problems(bad, ["www.example.com"], CIPHERS, now=NOW.isoformat())
    assert problems
    assert not any(secret_body in p or secret_body[::-1] in p for p in problems)


@pytest.mark.parametrize(
    ("pattern", "name", "covered"),
    [
        ("www.example.com", "www.example.com", True),
        ("*.example.com", "www.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", "*.example.com", True),
        ("www.example.com", "*.example.com", False),
    ],
)
def test_covers(pattern, name, covered):
    assert tp.covers(pattern, name) is covered


def test_the_role_default_ciphers_pass():
    import pathlib

    import yaml

    defaults = pathlib.Path(__file__).resolve().parents[4] / "roles" / "mongrel2" / "defaults" / "main.yml"
    ciphers = yaml.safe_load(defaults.read_text())["mongrel2_tls_ciphers"]
    assert tp.tls_problems([GOOD], ["www.example.com"], ciphers, now=NOW.isoformat()) == []


# The tls_proxy role: the same certificate rules, its own variables, OpenSSL's cipher names.
PROXY_CIPHERS = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305"]
PROXY_CASES = [
    pytest.param([GOOD], ["www.example.com"], PROXY_CIPHERS, [], id="proxy-good"),
    pytest.param([], [], PROXY_CIPHERS, ["tls_proxy_certificates must list at least one certificate"], id="proxy-none"),
    pytest.param(
        [entry(names=["other.example.com"])],
        ["www.example.com"],
        PROXY_CIPHERS,
        ["tls_proxy_certificates[0]: the certificate does not cover other.example.com",
         "tls_proxy_certificates: no entry's names cover the TLS host www.example.com"],
        id="proxy-names",
    ),
    pytest.param(
        [entry(key=key_pem(OTHER))], ["www.example.com"], PROXY_CIPHERS,
        ["tls_proxy_certificates[0]: the key does not match the certificate"], id="proxy-wrong-key",
    ),
    pytest.param(
        [entry(cert=cert_pem(KEY, end=NOW - DAY, start=NOW - 9 * DAY))], ["www.example.com"], PROXY_CIPHERS,
        ["tls_proxy_certificates[0]: the certificate expired"], id="proxy-expired",
    ),
    pytest.param(
        [entry(key=key_pem(KEY, b"secret"))], ["www.example.com"], PROXY_CIPHERS,
        ["tls_proxy_certificates[0]: the key is encrypted, and HAProxy would ask"], id="proxy-key-encrypted",
    ),
    pytest.param(
        [GOOD], ["www.example.com"], [*PROXY_CIPHERS, "ECDHE-RSA-AES128-SHA"],
        ["tls_proxy_ciphers may hold only TLS 1.2 ECDHE AEAD suites in OpenSSL names", "ECDHE-RSA-AES128-SHA"],
        id="proxy-cbc-cipher",
    ),
    pytest.param(
        [GOOD], ["www.example.com"], ["TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256"],
        ["tls_proxy_ciphers may hold only"], id="proxy-mbedtls-name",
    ),
    pytest.param([GOOD], ["www.example.com"], [], ["tls_proxy_ciphers must list at least one"], id="proxy-no-cipher"),
]  # fmt: skip


@pytest.mark.parametrize(("certificates", "hosts", "ciphers", "expected"), PROXY_CASES)
def test_tls_proxy_problems(certificates, hosts, ciphers, expected):
    problems = tp.tls_problems(certificates, hosts, ciphers, now=NOW.isoformat(), role="tls_proxy")
    if not expected:
        assert problems == []
    for part in expected:
        assert any(part in p for p in problems), problems
    assert not any("mongrel2" in p for p in problems), problems


def test_the_tls_proxy_role_default_ciphers_pass():
    import pathlib

    import yaml

    defaults = pathlib.Path(__file__).resolve().parents[4] / "roles" / "tls_proxy" / "defaults" / "main.yml"
    ciphers = yaml.safe_load(defaults.read_text())["tls_proxy_ciphers"]
    assert tp.tls_problems([GOOD], ["www.example.com"], ciphers, now=NOW.isoformat(), role="tls_proxy") == []
