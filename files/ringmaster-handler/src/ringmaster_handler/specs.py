"""Endpoint specs as m2wsgi spelled them: ``tcp://[ident@]host:port`` or ``ipc://[ident@]path``.

A spec argument may list several endpoints separated by commas, one per Mongrel2 front.
"""

from dataclasses import dataclass


class SpecError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str  # "tcp" or "ipc"
    address: str  # host:port or a filesystem path
    ident: str | None = None  # becomes the socket IDENTITY

    @property
    def url(self) -> str:
        """What ZeroMQ connects to (the ident is not part of it)."""
        return f"{self.scheme}://{self.address}"

    def __str__(self) -> str:
        ident = f"{self.ident}@" if self.ident else ""
        return f"{self.scheme}://{ident}{self.address}"

    def next_port(self) -> "Endpoint":
        """m2wsgi's convention: the reply endpoint is the request endpoint's port + 1."""
        if self.scheme != "tcp":
            raise SpecError(f"cannot derive a reply endpoint from {self}: give recv_spec")
        host, port = _split_host_port(self.address)
        if port >= 65535:
            raise SpecError(f"cannot derive a reply endpoint from {self}: port {port} is last")
        return Endpoint("tcp", f"{host}:{port + 1}", self.ident)


def parse_spec(text: str) -> Endpoint:
    scheme, sep, rest = text.strip().partition("://")
    if not sep or scheme not in ("tcp", "ipc"):
        raise SpecError(f"bad spec {text!r}: expected tcp://[ident@]host:port or ipc://path")
    ident = None
    if "@" in rest:
        ident, _, rest = rest.rpartition("@")
        if not ident:
            raise SpecError(f"bad spec {text!r}: empty ident before '@'")
    if scheme == "tcp":
        _split_host_port(rest, text)
    elif not rest:
        raise SpecError(f"bad spec {text!r}: empty ipc path")
    return Endpoint(scheme, rest, ident)


def parse_spec_list(text: str) -> list[Endpoint]:
    items = [item for item in text.split(",")]
    if any(not item.strip() for item in items):
        raise SpecError(f"bad spec list {text!r}: empty entry")
    return [parse_spec(item) for item in items]


def pair_specs(send_text: str, recv_text: str | None) -> list[tuple[Endpoint, Endpoint]]:
    """Pair each request endpoint with its reply endpoint (one pair per Mongrel2 front)."""
    sends = parse_spec_list(send_text)
    if recv_text is None:
        return [(s, s.next_port()) for s in sends]
    recvs = parse_spec_list(recv_text)
    if len(recvs) != len(sends):
        raise SpecError(f"send_spec lists {len(sends)} endpoints but recv_spec lists {len(recvs)}")
    return list(zip(sends, recvs, strict=True))


def _split_host_port(address: str, original: str | None = None) -> tuple[str, int]:
    where = original or address
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise SpecError(f"bad spec {where!r}: expected host:port")
    port = int(port_text)
    if not 0 < port < 65536:
        raise SpecError(f"bad spec {where!r}: port out of range")
    return host, port
