"""The console's web side (Flask's test client) against a real agent and circusd."""

import os
import re

import pytest

from ringmaster_console.config import ConfigError
from ringmaster_console.web import app_from_file
from stack import PASSWORD, console_toml

BASE = "https://console.test"


@pytest.fixture(scope="module")
def app(stack):
    # A second host where nothing listens: shown down, never blocking the page.
    config = console_toml(stack, [stack.host("w1"), stack.host("gone", port=1)])
    application = app_from_file(str(config))
    yield application
    application.extensions["ringmaster_fleet"].close()


@pytest.fixture
def client(app):
    app.extensions["ringmaster_throttle"].records.clear()
    return app.test_client()


def token(client, path="/login"):
    page = client.get(path, base_url=BASE).get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


def login(client, password=PASSWORD):
    return client.post(
        "/login",
        data={"password": password, "csrf_token": token(client)},
        base_url=BASE,
        headers={"Referer": f"{BASE}/login"},
    )


def post(client, path, data):
    return client.post(
        path,
        data={**data, "csrf_token": token(client, "/")},
        base_url=BASE,
        headers={"Referer": f"{BASE}/"},
    )


def test_config_file_must_be_private(stack):
    config = console_toml(stack, [stack.host("w1")])
    os.chmod(config, 0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        app_from_file(str(config))


def test_pages_need_a_login(client):
    assert client.get("/", base_url=BASE).headers["Location"].endswith("/login")
    assert client.get("/api/status", base_url=BASE).status_code == 401
    assert client.post("/act", base_url=BASE).status_code in (302, 400)


def test_wrong_password_refused_right_one_accepted(client):
    response = login(client, "wrong password")
    assert response.status_code == 403 and "Wrong password." in response.get_data(as_text=True)
    assert client.get("/api/status", base_url=BASE).status_code == 401
    response = login(client)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" in cookie
    assert client.get("/api/status", base_url=BASE).status_code == 200


def test_repeated_failures_are_slowed_down(client):
    for _ in range(3):
        assert login(client, "nope").status_code == 403
    response = login(client, "nope")
    assert response.status_code == 403 and "Wait 1 s" in response.get_data(as_text=True)
    # During the wait even the right password is not checked.
    response = login(client)
    assert response.status_code == 429 and "try again in" in response.get_data(as_text=True)
    assert client.get("/api/status", base_url=BASE).status_code == 401


def test_post_without_csrf_token_refused(client, stack):
    login(client)
    before = stack.pids("shop")
    for path, data in [
        ("/act", {"op": "scale", "watcher": "shop", "count": "3"}),
        ("/confirm", {"op": "scale", "watcher": "shop", "count": "3"}),
        ("/logout", {}),
    ]:
        response = client.post(path, data=data, base_url=BASE, headers={"Referer": f"{BASE}/"})
        assert response.status_code == 400, path
        assert "CSRF token is missing" in response.get_data(as_text=True)
    # A token from another session is refused too.
    response = client.post(
        "/act",
        data={"op": "scale", "watcher": "shop", "count": "3", "csrf_token": "x" * 40},
        base_url=BASE,
        headers={"Referer": f"{BASE}/"},
    )
    assert response.status_code == 400
    assert stack.pids("shop") == before


def test_status_shows_the_silent_host_down(client):
    login(client)
    hosts = client.get("/api/status", base_url=BASE).get_json()["hosts"]
    assert [(h["host"], h["up"]) for h in hosts] == [("w1", True), ("gone", False)]
    assert {w["name"] for w in hosts[0]["watchers"]} == {"shop", "other"}


def test_security_headers(client):
    response = client.get("/login", base_url=BASE)
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Strict-Transport-Security"]


@pytest.mark.parametrize(
    ("count", "why"),
    [
        ("2.5", "whole number"),
        ("abc", "whole number"),
        ("-1", "whole number"),
        ("9", "above the cap of 8"),
    ],
)
def test_bad_counts_refused_with_a_message(client, stack, count, why):
    login(client)
    before = stack.pids("shop")
    for path in ("/confirm", "/act"):
        response = post(client, path, {"op": "scale", "watcher": "shop", "count": count})
        assert response.status_code == 400 and why in response.get_data(as_text=True)
    assert stack.pids("shop") == before


def test_scale_with_confirmation(client, stack):
    login(client)
    before = stack.pids("shop")
    page = post(client, "/confirm", {"op": "scale", "watcher": "shop", "count": "3"}).get_data(
        as_text=True
    )
    assert "Set shop to 3 processes in all (w1: 3)?" in page
    assert "Not answering, left out: gone." in page
    assert stack.pids("shop") == before  # nothing done before the confirmation
    response = post(client, "/act", {"op": "scale", "watcher": "shop", "count": "3"})
    assert response.status_code == 200, response.get_data(as_text=True)
    after = stack.pids("shop")
    assert len(after) == 3 and set(before) <= set(after)
    assert ", ".join(map(str, after)) in response.get_data(as_text=True)
    assert post(client, "/act", {"op": "scale", "watcher": "shop", "count": "2"}).status_code == 200
    assert len(stack.pids("shop")) == 2


def test_chart_js_from_debian(client):
    response = client.get("/static/chart.js", base_url=BASE)
    assert response.status_code == 200 and b"Chart" in response.data
