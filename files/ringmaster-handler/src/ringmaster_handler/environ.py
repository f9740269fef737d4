"""Build the PEP 3333 ``environ`` for a parsed Mongrel2 request."""

import io
import logging
from typing import IO
from urllib.parse import unquote

from ringmaster_handler import __version__
from ringmaster_handler.digits import is_digits
from ringmaster_handler.forwarded import TrustedProxies
from ringmaster_handler.request import Request

SERVER_SOFTWARE = f"ringmaster-handler/{__version__}"

_errors_log = logging.getLogger("ringmaster_handler.wsgi_errors")

# Header names seen so far -> environ key (None: not passed to the app). Bounded, because
# a client chooses header names and could otherwise grow it without limit.
_MAX_CACHED_NAMES = 1024
_SKIP = None
_FIXED_NAMES: dict[str, str | None] = {
    "content-type": "CONTENT_TYPE",
    "content-length": "CONTENT_LENGTH",
    # Mongrel2's own notices, and a client's attempt to forge them, are not HTTP headers.
    "x-mongrel2-upload-start": _SKIP,
    "x-mongrel2-upload-done": _SKIP,
    "x-mongrel2-download-credits": _SKIP,
}
_DEFAULT_PORTS = {"http": "80", "https": "443"}


class ErrorStream(io.TextIOBase):
    """``wsgi.errors``: text written by the app ends up in our log, one record per line."""

    def __init__(self, logger: logging.Logger = _errors_log) -> None:
        self._logger = logger
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        text = self._partial + s
        *lines, self._partial = text.split("\n")
        for line in lines:
            self._logger.error("%s", line)
        return len(s)

    def writelines(self, lines) -> None:  # type: ignore[override]
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._partial:
            self._logger.error("%s", self._partial)
            self._partial = ""


def header_environ_key(name: str) -> str | None:
    """Map a (lower-case) Mongrel2 header name to its environ key, or None to drop it."""
    fixed = _FIXED_NAMES.get(name, "")
    if fixed != "":
        return fixed
    # Mongrel2's own keys are upper case and every client header arrives lower-cased, so
    # anything that is not lower case is not an HTTP header. Names with '_' are dropped:
    # "X_Auth" and "X-Auth" would both become HTTP_X_AUTH and one could spoof the other.
    if not name.islower() or "_" in name:
        return _SKIP
    return "HTTP_" + name.upper().replace("-", "_")


class EnvironBuilder:
    """Turns requests into environ dicts; one per serving thread, holding what never changes.

    ``multithread``: other threads of this process run the app at the same time (--threads).
    ``trusted_proxies``: peers whose X-Forwarded-For and X-Forwarded-Proto give REMOTE_ADDR and
    wsgi.url_scheme (--forwarded-allow-ips, forwarded.py); none by default.
    """

    def __init__(
        self,
        *,
        script_name_from_route: bool = True,
        multithread: bool = False,
        trusted_proxies: TrustedProxies | None = None,
    ) -> None:
        self.script_name_from_route = script_name_from_route
        self.trusted_proxies = trusted_proxies if trusted_proxies else None
        self.errors = ErrorStream()
        self._base = {
            "wsgi.version": (1, 0),
            "wsgi.multithread": multithread,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.errors": self.errors,
            # The input stream ends where the body ends, so apps may read to EOF even when
            # there was no Content-Length (chunked uploads).
            "wsgi.input_terminated": True,
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
            "SCRIPT_NAME": "",
        }
        self._names: dict[str, str] = {}  # header name -> environ key, "" to drop
        self._prefixes: dict[str, str] = {}
        self._hosts: dict[tuple[object, str], tuple[str, str]] = {}

    def build(self, req: Request, wsgi_input: IO[bytes], content_length: str | None = None) -> dict:
        h = req.headers
        env = self._base.copy()
        names = self._names
        for name, value in h.items():
            key = names.get(name)
            if key is None:
                key = header_environ_key(name) or ""
                if len(names) >= _MAX_CACHED_NAMES:
                    names.clear()
                names[name] = key
            if key:
                env[key] = value if type(value) is str else _join_repeated(name, value)
        if content_length is not None:
            env["CONTENT_LENGTH"] = content_length

        path = req.path
        if self.script_name_from_route:
            pattern = h.get("PATTERN")
            if type(pattern) is str and len(pattern) > 1:
                prefix = self._route_prefix(pattern)
                plen = len(prefix)
                if plen and path.startswith(prefix) and (len(path) == plen or path[plen] == "/"):
                    env["SCRIPT_NAME"] = unquote(prefix, "latin-1") if "%" in prefix else prefix
                    path = path[plen:]
        # PATH arrives percent-encoded; PEP 3333 wants it decoded, bytes mapped as latin-1.
        env["PATH_INFO"] = unquote(path, "latin-1") if "%" in path else path
        env["REQUEST_METHOD"] = h["METHOD"]
        get = h.get
        env["QUERY_STRING"] = get("QUERY", "")
        env["SERVER_PROTOCOL"] = get("VERSION", "HTTP/1.0")
        peer = get("REMOTE_ADDR", "")
        scheme = get("URL_SCHEME", "http")
        if self.trusted_proxies is not None:
            peer, scheme = self.trusted_proxies.client(
                peer, get("x-forwarded-for"), get("x-forwarded-proto"), scheme
            )
        env["REMOTE_ADDR"] = peer
        env["wsgi.url_scheme"] = scheme
        host = get("host")
        try:
            env["SERVER_NAME"], env["SERVER_PORT"] = self._hosts[host, scheme]
        except (KeyError, TypeError):
            env["SERVER_NAME"], env["SERVER_PORT"] = self._server_name_port(host, scheme)
        env["wsgi.input"] = wsgi_input
        return env

    def _route_prefix(self, pattern: str) -> str:
        """The literal prefix a route stands for, or "" when the route is a pattern.

        Mongrel2 matches everything before the first '(' literally, and a route without
        '(' is a plain prefix. Only a plain prefix is a mount point the app can be told about.
        """
        prefix = self._prefixes.get(pattern)
        if prefix is None:
            prefix = "" if "(" in pattern else pattern.rstrip("/")
            if len(self._prefixes) < _MAX_CACHED_NAMES:
                self._prefixes[pattern] = prefix
        return prefix

    def _server_name_port(self, host: object, scheme: str) -> tuple[str, str]:
        cache_key = (host, scheme)
        try:
            return self._hosts[cache_key]
        except (KeyError, TypeError):
            pass
        result = split_host(host, scheme)
        if type(host) is str and len(self._hosts) < _MAX_CACHED_NAMES:
            self._hosts[cache_key] = result
        return result


def split_host(host: object, scheme: str) -> tuple[str, str]:
    """SERVER_NAME and SERVER_PORT from a Host header (Mongrel2 does not know its own name)."""
    if type(host) is list:
        host = host[0] if host else None
    default_port = _DEFAULT_PORTS.get(scheme, "80")
    if type(host) is not str or not host:
        return "localhost", default_port
    if host.startswith("["):  # IPv6 literal
        end = host.find("]")
        if end > 0:
            rest = host[end + 1 :]
            if rest.startswith(":") and is_digits(rest[1:]):
                return host[: end + 1], rest[1:]
            return host[: end + 1], default_port
    name, sep, port = host.rpartition(":")
    if sep and is_digits(port) and name:
        return name, port
    return host, default_port


def _join_repeated(name: str, value: object) -> str:
    if type(value) is list:
        # RFC 9110 joins repeated fields with ", "; Cookie is the exception (RFC 6265: "; ").
        sep = "; " if name == "cookie" else ", "
        return sep.join(v if type(v) is str else str(v) for v in value)
    return str(value)
