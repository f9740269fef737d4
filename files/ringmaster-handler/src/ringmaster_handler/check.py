"""``ringmaster-wsgi --check``: can this app be served at all, before any process serves it?

A deploy runs this with the new release's code and environment before it switches over, so
a version that cannot be imported, or that fails on its most basic request, never replaces
the one that works. The request goes through the same environ code as real requests.
"""

import io
import sys
from urllib.parse import quote

from ringmaster_handler.digits import is_digits
from ringmaster_handler.environ import EnvironBuilder
from ringmaster_handler.request import Request


class CheckFailed(Exception):
    """The one-line reason the app is not fit to serve."""


def check_request(path: str) -> Request:
    """A GET for ``path`` ("/health?deep=1"), shaped as Mongrel2 would deliver it."""
    target, _, query = path.partition("?")
    target = quote(target, safe="/%:@!$&'()*+,;=-._~")
    headers = {
        "PATH": target,
        "URI": f"{target}?{query}" if query else target,
        "METHOD": "GET",
        "VERSION": "HTTP/1.1",
        "PATTERN": "/",
        "REMOTE_ADDR": "127.0.0.1",
        "host": "localhost",
        "user-agent": "ringmaster-wsgi --check",
    }
    if query:
        headers["QUERY"] = query
    return Request(b"ringmaster-check", b"0", target, headers, b"")


def run_check(app, path: str) -> str:
    """Call ``app`` once with a GET for ``path``; return its status line or raise CheckFailed."""
    env = EnvironBuilder().build(check_request(path), io.BytesIO(b""))
    started: list[str] = []

    def start_response(status, headers, exc_info=None):
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status]
        return lambda data: None

    try:
        result = app(env, start_response)
        try:
            # Many apps only fail while the body is produced (generators, lazy templates).
            for _ in result:
                pass
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    except Exception as exc:
        raise CheckFailed(f"GET {path} raised {_describe(exc)}") from None
    if not started:
        raise CheckFailed(f"GET {path}: the app returned without calling start_response")
    status = started[0]
    code = status.split(" ", 1)[0]
    if not (len(code) == 3 and is_digits(code)):
        raise CheckFailed(f"GET {path}: the app answered a malformed status {status!r}")
    if int(code) >= 500:
        raise CheckFailed(f"GET {path} answered {status}")
    return status


def _describe(exc: BaseException) -> str:
    where = ""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        where = f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}{where}" if text else f"{type(exc).__name__}{where}"


def report(prog: str, app_spec: str, path: str, app) -> int:
    """Run the check and print its outcome: stdout when it passes, one stderr line when not."""
    if not path:
        print(f"{prog}: check passed: {app_spec} imports")
        return 0
    try:
        status = run_check(app, path)
    except CheckFailed as exc:
        print(f"{prog}: check failed: {app_spec}: {exc}", file=sys.stderr)
        return 1
    print(f"{prog}: check passed: {app_spec}: GET {path} answered {status}")
    return 0
