"""Flask and Django from PyPI served through a real Mongrel2 (skipped if not installed)."""

import hashlib
import importlib.util
import json
import os
import shutil
import uuid

import pytest

from harness import Handler, Mongrel2, handler_route, running

pytestmark = pytest.mark.skipif(
    not (shutil.which("mongrel2") and shutil.which("m2sh")), reason="needs mongrel2 and m2sh"
)


@pytest.fixture(scope="module", params=["flask", "django"])
def served(request, tmp_path_factory):
    framework = request.param
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed (see requirements-test.txt)")
    root = tmp_path_factory.mktemp(framework)
    route = handler_route()
    app = "flask_app:app" if framework == "flask" else "django_app:application"
    # Mounted under a prefix: the frameworks must see it as SCRIPT_NAME.
    m2 = Mongrel2(root, {"/site/": route})
    handler = Handler(root, app, route["send"], route["recv"], "--upload-root", str(root))
    with running(m2.start(), handler.start()):
        yield framework, m2, handler, root


def call(m2, method, path, body=None, headers=None, conn=None):
    c = conn or m2.connection()
    c.request(method, path, body=body, headers=headers or {})
    resp = c.getresponse()
    return resp, resp.read()


def test_get_and_keep_alive(served):
    framework, m2, _, _ = served
    conn = m2.connection()
    for _ in range(3):
        resp, body = call(m2, "GET", "/site/", conn=conn)
        assert (resp.status, body.decode()) == (200, f"Hello from {framework.capitalize()}")
        assert resp.getheader("Date")
    resp, body = call(m2, "HEAD", "/site/", conn=conn)
    assert (resp.status, body) == (200, b"")


def test_form_post_and_script_name(served):
    framework, m2, _, _ = served
    resp, body = call(
        m2, "POST", "/site/echo?q=1", body="a=1&b=%C3%A9",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    data = json.loads(body)
    assert resp.status == 200
    if framework == "flask":
        assert data["form"] == {"a": "1", "b": "é"} and data["args"] == {"q": "1"}
        assert (data["script_root"], data["path"]) == ("/site", "/echo")
    else:
        assert data["post"] == {"a": "1", "b": "é"} and data["get"] == {"q": "1"}
        assert (data["path"], data["path_info"]) == ("/site/echo", "/echo")


def test_multipart_upload_spooled_by_mongrel2(served):
    _framework, m2, _, root = served
    payload = os.urandom(2 * 1024 * 1024)
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f"multipart/form-data; boundary={boundary}"
    resp, reply = call(
        m2, "POST", "/site/upload", body=body, headers={"Content-Type": content_type}
    )
    assert resp.status == 200, reply[:500]
    data = json.loads(reply)
    assert data == {"name": "x.bin", "size": len(payload),
                    "sha256": hashlib.sha256(payload).hexdigest()}  # fmt: skip
    assert not list((root / "uploads").iterdir())


def test_streaming_response(served):
    _framework, m2, _, _ = served
    resp, body = call(m2, "GET", "/site/stream")
    assert resp.status == 200
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert body.decode().splitlines()[-1] in ("line 99", "row 99")


def test_view_exception_is_500_and_the_process_keeps_serving(served):
    _framework, m2, handler, _ = served
    conn = m2.connection()
    resp, _ = call(m2, "GET", "/site/fail", conn=conn)
    assert resp.status == 500
    resp, _ = call(m2, "GET", "/site/", conn=conn)
    assert resp.status == 200
    assert handler.proc.poll() is None


def test_not_found(served):
    _, m2, _, _ = served
    resp, _ = call(m2, "GET", "/site/nope")
    assert resp.status == 404
