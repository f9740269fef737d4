"""X-Forwarded-For through a real Mongrel2 to a real handler: what the tls_proxy setup relies on.

Read in Mongrel2 1.12's source and measured here: without no_clobber_xff Mongrel2 replaces the
header with its TCP peer on every request (so behind a proxy on loopback the client's address is
lost); with it the header arrives as sent (repeated ones as a list); REMOTE_ADDR is always the
peer. The handler believes the header only with --forwarded-allow-ips naming that peer.
"""

import http.client
import json
import shutil

import pytest

from harness import Handler, Mongrel2, handler_route, running

pytestmark = pytest.mark.skipif(
    not (shutil.which("mongrel2") and shutil.which("m2sh")), reason="needs mongrel2 and m2sh"
)

CLIENT = "203.0.113.7"
# Handlers by route: what each trusts (--forwarded-allow-ips).
TRUST = {"/trusted/": "127.0.0.1", "/elsewhere/": "10.0.0.0/8", "/none/": ""}
SENT = [("X-Forwarded-For", CLIENT), ("X-Forwarded-Proto", "https")]
# (no_clobber_xff, route, headers) -> (REMOTE_ADDR, scheme, X-Forwarded-For the app sees)
CASES = [
    pytest.param(1, "/trusted/", SENT, (CLIENT, "https", CLIENT), id="behind-the-proxy"),
    pytest.param(
        1, "/trusted/", [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", CLIENT)],
        (CLIENT, "http", f"6.6.6.6, {CLIENT}"), id="repeated-header-last-entry",
    ),
    pytest.param(
        0, "/trusted/", SENT, ("127.0.0.1", "https", "127.0.0.1"),
        id="mongrel2-clobbers-without-no_clobber_xff",
    ),
    pytest.param(1, "/none/", SENT, ("127.0.0.1", "http", CLIENT), id="untrusted-peer-ignored"),
    pytest.param(
        1, "/elsewhere/", SENT, ("127.0.0.1", "http", CLIENT), id="peer-outside-the-trusted-network"
    ),
]  # fmt: skip


@pytest.fixture
def front(request, tmp_path_factory):
    """A real Mongrel2 with no_clobber_xff 0 or 1, one handler per entry of TRUST."""
    root = tmp_path_factory.mktemp(f"m2-{request.param}")
    routes = {path: handler_route() for path in TRUST}
    m2 = Mongrel2(root, routes, settings={"no_clobber_xff": request.param})
    handlers = []
    for path, allow in TRUST.items():
        route = routes[path]
        send = route["send"].replace("tcp://", f"tcp://{route['ident']}@")
        args = ["--upload-root", str(root)] + (["--forwarded-allow-ips", allow] if allow else [])
        handlers.append(Handler(root, "apps:router", send, route["recv"], *args))
    with running(m2.start(), *(h.start() for h in handlers)):
        yield m2
        # Its graceful stop waits 8 s after a served request; not what this test is about.
        m2.proc.kill()


# A Mongrel2 per case, with the case's no_clobber_xff.
@pytest.mark.parametrize(("front", "route", "headers", "expected"), CASES, indirect=["front"])
def test_client_address_through_mongrel2(front, route, headers, expected):
    m2 = front
    conn = http.client.HTTPConnection("127.0.0.1", m2.port, timeout=10)
    conn.putrequest("GET", route + "environ")
    for name, value in headers:
        conn.putheader(name, value)
    conn.endheaders()
    resp = conn.getresponse()
    env = json.loads(resp.read())
    conn.close()
    assert resp.status == 200
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"], env.get("HTTP_X_FORWARDED_FOR")) == expected
