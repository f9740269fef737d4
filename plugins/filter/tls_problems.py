# Copyright (c) 2026, Ringmaster engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What is wrong with the TLS input of the mongrel2 or tls_proxy role, in sentences naming the variable (preflight)."""

from __future__ import annotations

import datetime
import re

from ansible_collections.ringmaster.stack.plugins.module_utils.tls_names import covers

DOCUMENTATION = r"""
name: tls_problems
short_description: Problems with the TLS certificates, keys and cipher list of Mongrel2 or the TLS proxy
version_added: 0.3.0
description:
  - Reads each entry of O(_input) (C(mongrel2_tls_certificates) or C(tls_proxy_certificates), see O(role)) on the
    controller and returns one sentence per problem, naming the variable.
  - It finds a file that cannot be read, a certificate or key that does not parse, a key that does not match its
    certificate, a certificate that has expired or is not valid yet, a name the certificate does not cover, a host
    no entry covers, and a cipher that is not a TLS 1.2 ECDHE AEAD suite.
  - No sentence contains key material. An empty list means the input is good.
options:
  _input:
    description: The certificates, as in C(mongrel2_tls_certificates) or C(tls_proxy_certificates).
    type: list
    elements: dict
    required: true
  hosts:
    description: The host names the server answers to; each must be covered by some entry's O(_input[].names).
    type: list
    elements: str
    required: true
  ciphers:
    description: The cipher list, as in C(mongrel2_tls_ciphers) (mbedTLS names) or C(tls_proxy_ciphers) (OpenSSL's).
    type: list
    elements: str
    required: true
  role:
    description: Whose input it is, for the variable names in the sentences and the cipher names allowed.
    type: str
    choices: [mongrel2, tls_proxy]
    default: mongrel2
  now:
    description: The time to judge validity at (ISO 8601 with a zone); the controller's clock when omitted.
    type: str
"""

EXAMPLES = r"""
- name: Check the certificates
  ansible.builtin.set_fact:
    __problems: >-
      {{ mongrel2_tls_certificates | ringmaster.stack.tls_problems([mongrel2_default_host], mongrel2_tls_ciphers) }}
  no_log: true
"""

RETURN = r"""
_value:
  description: One sentence per problem, each naming the variable; empty when there is none.
  type: list
  elements: str
"""

VAR = "mongrel2_tls_certificates"
# mbedTLS 2.28 suite names that are ECDHE (forward secrecy) with an AEAD cipher: none exists
# before TLS 1.2, so a list of these alone is what keeps TLS 1.0 and 1.1 out (Mongrel2 has no
# protocol setting).
AEAD_SUITE = re.compile(
    r"^TLS-ECDHE-(ECDSA|RSA)-WITH-(AES-128-GCM-SHA256|AES-256-GCM-SHA384|CHACHA20-POLY1305-SHA256)$"
)
# The same suites in OpenSSL's names (HAProxy's TLS 1.2 list; TLS 1.3 has only AEAD suites).
OPENSSL_AEAD_SUITE = re.compile(r"^ECDHE-(ECDSA|RSA)-(AES128-GCM-SHA256|AES256-GCM-SHA384|CHACHA20-POLY1305)$")
# What differs between the two roles: their variables, the server, the cipher names.
ROLES = {
    "mongrel2": {
        "certificates": VAR,
        "ciphers": "mongrel2_tls_ciphers",
        "switch": "mongrel2_tls is true",
        "encrypted": "Mongrel2 has no passphrase setting",
        "key_types": "Mongrel2's mbedTLS 2.28 takes RSA or ECDSA keys only",
        "duplicate": "Mongrel2 finds one file per name",
        "suite": AEAD_SUITE,
        "suite_names": "mbedTLS names (TLS-ECDHE-ECDSA|RSA-WITH-AES-128-GCM-SHA256, -AES-256-GCM-SHA384, "
        "-CHACHA20-POLY1305-SHA256)",
    },
    "tls_proxy": {
        "certificates": "tls_proxy_certificates",
        "ciphers": "tls_proxy_ciphers",
        "switch": "the TLS proxy runs",
        "encrypted": "HAProxy would ask for the passphrase at every start",
        "key_types": "the proxy takes RSA or ECDSA keys only, which every client accepts",
        "duplicate": "one certificate per name",
        "suite": OPENSSL_AEAD_SUITE,
        "suite_names": "OpenSSL names (ECDHE-ECDSA|RSA-AES128-GCM-SHA256, -AES256-GCM-SHA384, -CHACHA20-POLY1305)",
    },
}
DNS_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
NAME = re.compile(rf"^(\*\.)?{DNS_LABEL}(\.{DNS_LABEL})*$")
MIN_RSA_BITS = 2048


def _read(entry, where, content_key, file_key, what, problems):
    """The PEM text of one part of an entry (content or a file on the controller), or None."""
    has_content, has_file = entry.get(content_key) is not None, entry.get(file_key) is not None
    if has_content == has_file:
        problems.append(f"{where} needs exactly one of {content_key} ({what} as text) and {file_key} (a file).")
        return None
    if has_content:
        return str(entry[content_key])
    path = str(entry[file_key])
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError as exc:
        problems.append(f"{where}.{file_key}: cannot read {path} on the controller ({exc.strerror}).")
        return None


def _certificate(text, where, problems):
    from cryptography import x509

    try:
        chain = x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        problems.append(f"{where}: the certificate is not PEM holding at least one certificate.")
        return None
    return chain[0]


def _key(text, where, problems, words):
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    try:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    except TypeError:
        problems.append(f"{where}: the key is encrypted, and {words['encrypted']}.")
        return None
    except (ValueError, UnsupportedAlgorithm):  # never say more: the text is a secret
        problems.append(f"{where}: the key is not an unencrypted PEM private key.")
        return None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            problems.append(f"{where}: an RSA key of {key.key_size} bits; at least {MIN_RSA_BITS}.")
            return None
    elif not isinstance(key, ec.EllipticCurvePrivateKey):
        problems.append(f"{where}: a {type(key).__name__}; {words['key_types']}.")
        return None
    return key


def _same_public_key(cert, key):
    from cryptography.hazmat.primitives import serialization

    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def _dns_names(cert):
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [name.lower() for name in san.get_values_for_type(x509.DNSName)]


def _when(now):
    if now is None:
        return datetime.datetime.now(datetime.UTC)
    return datetime.datetime.fromisoformat(str(now))


def entry_problems(entry, index, now, role="mongrel2"):
    """Problems with one entry of mongrel2_tls_certificates (or the role's own variable)."""
    words = ROLES[role]
    where = f"{words['certificates']}[{index}]"
    if not isinstance(entry, dict):
        return [f"{where} must be a mapping with names, cert or cert_file, and key or key_file."]
    problems = []
    names = entry.get("names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and NAME.match(n) for n in names):
        problems.append(
            f"{where}.names must list host names in lower case ('*.example.com' for a wildcard), got {names!r}."
        )
        names = []
    cert_text = _read(entry, where, "cert", "cert_file", "PEM", problems)
    key_text = _read(entry, where, "key", "key_file", "PEM", problems)
    cert = _certificate(cert_text, where, problems) if cert_text is not None else None
    key = _key(key_text, where, problems, words) if key_text is not None else None
    if cert is None:
        return problems
    if key is not None and not _same_public_key(cert, key):
        problems.append(f"{where}: the key does not match the certificate (the first one in it, the leaf).")
    if now < cert.not_valid_before_utc:
        problems.append(f"{where}: the certificate is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC.")
    if now > cert.not_valid_after_utc:
        problems.append(f"{where}: the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC.")
    dns = _dns_names(cert)
    for name in names:
        if not any(covers(pattern, name) for pattern in dns):
            problems.append(
                f"{where}: the certificate does not cover {name} (its DNS names: {', '.join(dns) or 'none'})."
            )
    return problems


def tls_problems(certificates, hosts, ciphers, now=None, role="mongrel2"):
    """Every problem with the TLS input, as sentences naming the variable."""
    when = _when(now)
    words = ROLES[role]
    var = words["certificates"]
    if not isinstance(certificates, list) or not certificates:
        return [f"{var} must list at least one certificate when {words['switch']}."]
    problems = []
    for index, entry in enumerate(certificates):
        problems.extend(entry_problems(entry, index, when, role))
    names = [n for e in certificates if isinstance(e, dict) and isinstance(e.get("names"), list) for n in e["names"]]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{var} lists {name} in more than one entry ({words['duplicate']}).")
    for host in hosts:
        if not any(covers(pattern, str(host).lower()) for pattern in names if isinstance(pattern, str)):
            problems.append(f"{var}: no entry's names cover the TLS host {host}.")
    if not isinstance(ciphers, list) or not ciphers:
        problems.append(f"{words['ciphers']} must list at least one cipher suite.")
    else:
        bad = [c for c in ciphers if not (isinstance(c, str) and words["suite"].match(c))]
        if bad:
            problems.append(
                f"{words['ciphers']} may hold only TLS 1.2 ECDHE AEAD suites in {words['suite_names']}: "
                f"any other would let older protocols or ciphers in; got {bad!r}."
            )
    return problems


class FilterModule:
    def filters(self):
        return {"tls_problems": tls_problems}
