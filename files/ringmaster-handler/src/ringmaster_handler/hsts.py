"""Strict-Transport-Security on responses to requests that came over TLS (--hsts-max-age).

Mongrel2 cannot add a header, so the handler does, around the app: only when Mongrel2 says the
connection is TLS (``wsgi.url_scheme`` ``https``, from its URL_SCHEME), since a browser must
ignore the header over plain HTTP (RFC 6797, 8.1), and never over a value the app set itself.
"""

from collections.abc import Callable, Iterable

HEADER = "Strict-Transport-Security"


def header_value(max_age: int, include_subdomains: bool = False) -> str:
    return f"max-age={max_age}" + ("; includeSubDomains" if include_subdomains else "")


def with_hsts(app: Callable, max_age: int, include_subdomains: bool = False) -> Callable:
    """The app, answering with Strict-Transport-Security over https unless it sets one."""
    value = header_value(max_age, include_subdomains)

    def hsts_app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("wsgi.url_scheme") != "https":
            return app(environ, start_response)

        def start(status, headers, exc_info=None):
            if not any(name.lower() == "strict-transport-security" for name, _ in headers):
                headers = [*headers, (HEADER, value)]
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return hsts_app
