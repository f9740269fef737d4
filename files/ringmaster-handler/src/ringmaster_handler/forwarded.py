"""The client's address and scheme behind a trusted TLS proxy (--forwarded-allow-ips).

Mongrel2 gives every request REMOTE_ADDR, the address of the TCP peer it accepted, and
URL_SCHEME, https only when it terminated TLS itself. Behind a proxy on the front (the
tls_proxy role), the peer is the proxy, 127.0.0.1. The proxy sets (never appends)
X-Forwarded-For to the address it accepted and X-Forwarded-Proto to its scheme; Mongrel2 with
no_clobber_xff passes them through (without it, Mongrel2 replaces X-Forwarded-For with the peer).

Like Gunicorn's forwarded_allow_ips, the headers are believed only when the peer Mongrel2 saw is
one of the trusted addresses: anyone else can write them. Then the last X-Forwarded-For entry
(the one the trusted proxy wrote) becomes REMOTE_ADDR and X-Forwarded-Proto, http or https,
becomes wsgi.url_scheme. Anything else (an untrusted peer, a missing or malformed value) leaves
Mongrel2's own values. Only one proxy hop is trusted: the entries before the last are the
client's to write and are never believed.
"""

import ipaddress
from collections.abc import Iterable

_SCHEMES = ("http", "https")
# Peers seen so far -> trusted or not; bounded (a peer is an address Mongrel2 accepted).
_MAX_CACHED = 1024


class TrustError(ValueError):
    """A --forwarded-allow-ips entry that is neither an address nor a network."""


def _last_entry(value: object) -> str:
    """The last comma-separated entry of a header, which may have been repeated (a list)."""
    if type(value) is list:
        value = value[-1] if value else ""
    if type(value) is not str:
        return ""
    return value.rpartition(",")[2].strip()


def forwarded_address(value: object) -> str | None:
    """The address in the last X-Forwarded-For entry, normalised; None unless it is one."""
    entry = _last_entry(value)
    if entry.startswith("[") and entry.endswith("]"):  # an IPv6 literal, as some proxies write it
        entry = entry[1:-1]
    try:
        return str(ipaddress.ip_address(entry))
    except ValueError:
        return None


def forwarded_scheme(value: object) -> str | None:
    """http or https from the last X-Forwarded-Proto entry; None for anything else."""
    entry = _last_entry(value).lower()
    return entry if entry in _SCHEMES else None


class TrustedProxies:
    """The peers whose X-Forwarded-For and X-Forwarded-Proto are believed."""

    def __init__(self, entries: Iterable[str]) -> None:
        networks = []
        for entry in entries:
            text = entry.strip()
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text, strict=True))
            except ValueError:
                raise TrustError(
                    f"{text!r} is neither an IP address nor a network such as 10.0.0.0/8"
                ) from None
        self.networks = tuple(networks)
        self._seen: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self.networks]!r})"

    def trusts(self, peer: str) -> bool:
        """Whether a peer address (Mongrel2's REMOTE_ADDR) is one of the trusted proxies."""
        known = self._seen.get(peer)
        if known is not None:
            return known
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            trusted = False
        else:
            trusted = any(address in network for network in self.networks)
        if len(self._seen) >= _MAX_CACHED:
            self._seen.clear()
        self._seen[peer] = trusted
        return trusted

    def client(
        self, peer: str, forwarded_for: object, forwarded_proto: object, scheme: str
    ) -> tuple[str, str]:
        """(REMOTE_ADDR, wsgi.url_scheme) of a request Mongrel2 got from ``peer``."""
        if not self.trusts(peer):
            return peer, scheme
        address = forwarded_address(forwarded_for) if forwarded_for is not None else None
        proto = forwarded_scheme(forwarded_proto) if forwarded_proto is not None else None
        return address or peer, proto or scheme


def parse_allow_ips(text: str) -> TrustedProxies:
    """--forwarded-allow-ips: comma-separated addresses and networks."""
    return TrustedProxies(text.split(","))
