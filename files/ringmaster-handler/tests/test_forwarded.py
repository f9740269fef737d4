"""--forwarded-allow-ips: X-Forwarded-For and -Proto believed only from a trusted peer."""

import io
import json

import pytest

from ringmaster_handler.environ import EnvironBuilder
from ringmaster_handler.forwarded import (
    TrustedProxies,
    TrustError,
    forwarded_address,
    forwarded_scheme,
    parse_allow_ips,
)
from ringmaster_handler.request import parse_message

LOCAL = parse_allow_ips("127.0.0.1,::1")
NET = parse_allow_ips("10.1.0.0/16")
CLIENT = "203.0.113.7"

# (trusted, peer, X-Forwarded-For, X-Forwarded-Proto, Mongrel2's scheme) -> (REMOTE_ADDR, scheme)
CASES = [
    # Behind the proxy: its headers give the client and the scheme.
    (LOCAL, "127.0.0.1", CLIENT, "https", "http", (CLIENT, "https")),
    (LOCAL, "::1", "2001:db8::7", "https", "http", ("2001:db8::7", "https")),
    # The proxy sets one entry; were it to append, the last is the one it wrote.
    (LOCAL, "127.0.0.1", "6.6.6.6, " + CLIENT, "https", "http", (CLIENT, "https")),
    # Repeated headers arrive from Mongrel2 as a list: the last one's last entry.
    (
        LOCAL,
        "127.0.0.1",
        ["6.6.6.6", "10.0.0.1, " + CLIENT],
        ["http", "https"],
        "http",
        (CLIENT, "https"),
    ),
    (LOCAL, "127.0.0.1", "[2001:db8::7]", "HTTPS", "http", ("2001:db8::7", "https")),
    (LOCAL, "127.0.0.1", f" {CLIENT} ", " http ", "https", (CLIENT, "http")),
    # A peer that is not a trusted proxy: whatever it wrote is ignored.
    (LOCAL, "198.51.100.9", "127.0.0.1", "https", "http", ("198.51.100.9", "http")),
    (LOCAL, "198.51.100.9", CLIENT, None, "https", ("198.51.100.9", "https")),
    (parse_allow_ips(""), "127.0.0.1", CLIENT, "https", "http", ("127.0.0.1", "http")),
    # Trusted peer, but missing or malformed values: Mongrel2's own.
    (LOCAL, "127.0.0.1", None, None, "http", ("127.0.0.1", "http")),
    (LOCAL, "127.0.0.1", "unknown", "ftp", "http", ("127.0.0.1", "http")),
    (LOCAL, "127.0.0.1", CLIENT + ", ", "https, ", "http", ("127.0.0.1", "http")),
    (LOCAL, "127.0.0.1", CLIENT + ":4711", "https", "http", ("127.0.0.1", "https")),
    (LOCAL, "127.0.0.1", [], [], "http", ("127.0.0.1", "http")),
    # Networks, and a peer Mongrel2 wrote in some other form.
    (NET, "10.1.2.3", CLIENT, "https", "http", (CLIENT, "https")),
    (NET, "10.2.0.1", CLIENT, "https", "http", ("10.2.0.1", "http")),
    (LOCAL, "localhost", CLIENT, "https", "http", ("localhost", "http")),
    (LOCAL, "", CLIENT, "https", "http", ("", "http")),
]


@pytest.mark.parametrize(("trusted", "peer", "xff", "proto", "scheme", "expected"), CASES)
def test_client_address_and_scheme(trusted, peer, xff, proto, scheme, expected):
    assert trusted.client(peer, xff, proto, scheme) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("2001:DB8::7", "2001:db8::7"),
        ("", None),
        (None, None),
        (7, None),
        ("1.2.3", None),
    ],
)
def test_forwarded_address(value, expected):
    assert forwarded_address(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [("https", "https"), ("HTTP", "http"), ("wss", None), ("", None)]
)
def test_forwarded_scheme(value, expected):
    assert forwarded_scheme(value) == expected


@pytest.mark.parametrize("text", ["proxy", "10.0.0.1/8", "127.0.0.1/33", "*"])
def test_bad_allow_ips_are_refused(text):
    with pytest.raises(TrustError, match="neither an IP address nor a network"):
        parse_allow_ips(text)


def test_no_entries_trust_nothing():
    assert not parse_allow_ips(" , ")
    assert parse_allow_ips("127.0.0.1")


def test_the_cache_stays_bounded():
    trusted = TrustedProxies(["127.0.0.1"])
    for i in range(3000):
        trusted.trusts(f"10.{i // 256 % 256}.{i % 256}.1")
    assert len(trusted._seen) <= 1024
    assert trusted.trusts("127.0.0.1")


def message(headers: dict) -> bytes:
    base = {
        "PATH": "/",
        "METHOD": "GET",
        "VERSION": "HTTP/1.1",
        "URI": "/",
        "PATTERN": "/",
        "host": "example.com",
    }
    text = json.dumps({**base, **headers}).encode()
    return b"uuid 1 / %d:%s,0:," % (len(text), text)


def build(headers: dict, trusted=None) -> dict:
    req = parse_message(message(headers))
    return EnvironBuilder(trusted_proxies=trusted).build(req, io.BytesIO(b""))


PROXIED = {
    "URL_SCHEME": "http",
    "REMOTE_ADDR": "127.0.0.1",
    "x-forwarded-for": CLIENT,
    "x-forwarded-proto": "https",
}


def test_environ_behind_a_trusted_proxy():
    env = build(PROXIED, LOCAL)
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"], env["SERVER_PORT"]) == (
        CLIENT,
        "https",
        "443",
    )
    # The headers stay visible to the app, as sent.
    assert env["HTTP_X_FORWARDED_FOR"] == CLIENT


def test_environ_without_trust_keeps_mongrel2s_values():
    env = build(PROXIED)
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"], env["SERVER_PORT"]) == (
        "127.0.0.1",
        "http",
        "80",
    )
    env = build({**PROXIED, "REMOTE_ADDR": "198.51.100.9"}, LOCAL)
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("198.51.100.9", "http")
