"""--hsts-max-age: the header over https only, never over the app's own."""

import pytest

from ringmaster_handler.cli import main
from ringmaster_handler.hsts import with_hsts

OWN = ("strict-transport-security", "max-age=5")


def app_setting(headers):
    def app(environ, start_response):
        start_response("200 OK", list(headers))
        return [b"ok"]

    return app


def call(app, scheme):
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = status, headers

    body = b"".join(app({"wsgi.url_scheme": scheme}, start_response))
    return seen["status"], seen["headers"], body


@pytest.mark.parametrize(
    ("scheme", "own", "subdomains", "expected"),
    [
        pytest.param("https", [], False, ["max-age=31536000"], id="https-gets-it"),
        pytest.param("https", [], True, ["max-age=31536000; includeSubDomains"], id="subdomains"),
        pytest.param("http", [], False, [], id="plain-http-never"),
        pytest.param(
            "https",
            [("strict-transport-security", "max-age=5")],
            False,
            ["max-age=5"],
            id="apps-own-wins",
        ),
    ],
)
def test_hsts(scheme, own, subdomains, expected):
    status, headers, body = call(with_hsts(app_setting(own), 31536000, subdomains), scheme)
    assert status == "200 OK" and body == b"ok"
    assert [v for n, v in headers if n.lower() == "strict-transport-security"] == expected


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--hsts-max-age", "-1"], "--hsts-max-age must be 0 (off) or positive"),
        (["--hsts-include-subdomains"], "--hsts-include-subdomains needs --hsts-max-age"),
    ],
)
def test_bad_flags(capsys, flags, message):
    assert main([*flags, "--check", "apps:hello"]) == 2
    assert message in capsys.readouterr().err
