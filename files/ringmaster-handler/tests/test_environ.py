import io
from wsgiref.validate import check_environ

import pytest

from ringmaster_handler.environ import EnvironBuilder, header_environ_key, split_host
from ringmaster_handler.request import parse_message

# fixture -> expected environ entries
CASES = {
    "get_json": {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/hello/w\xc3\xb6rld/x",  # UTF-8 bytes seen through latin-1, %2F decoded
        "QUERY_STRING": "a=1&b=%20c",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "21080",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_X_DUP": "one, two",
        "HTTP_X_BIN": '\xff\xfe"q\\',
        "HTTP_USER_AGENT": "t",
        "HTTP_METHOD": "evil",  # a client header, not Mongrel2's METHOD
        "HTTP_X_FORWARDED_FOR": "127.0.0.1",
        "wsgi.url_scheme": "http",
    },
    "get_tns": {"SCRIPT_NAME": "/tns", "PATH_INFO": "/x", "QUERY_STRING": "q=1"},
    "post_json": {"CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "11", "PATH_INFO": "/echo"},
    "post_tns_http10": {"SERVER_PROTOCOL": "HTTP/1.0", "CONTENT_LENGTH": "5"},
    "get_regex_route_http10": {"SCRIPT_NAME": "", "PATH_INFO": "/app/foo/bar"},
    "get_http10_no_host": {"SERVER_NAME": "localhost", "SERVER_PORT": "80", "QUERY_STRING": ""},
    "head_connection_close": {"REQUEST_METHOD": "HEAD", "HTTP_CONNECTION": "close"},
}
ABSENT = {
    "get_json": ["HTTP_PATH", "HTTP_URI", "HTTP_PATTERN", "HTTP_CONTENT_LENGTH", "CONTENT_LENGTH"],
    "spoofed_upload_headers": ["HTTP_X_MONGREL2_UPLOAD_START", "HTTP_X_MONGREL2_UPLOAD_DONE"],
    "post_json": ["HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"],
}


def build(raw: bytes, **kw) -> dict:
    req = parse_message(raw)
    return EnvironBuilder(**kw).build(req, io.BytesIO(req.body))


@pytest.mark.parametrize("name", sorted(CASES))
def test_environ_from_captured_requests(fixture_bytes, name):
    env = build(fixture_bytes(name))
    for key, value in CASES[name].items():
        assert env[key] == value, key
    check_environ(env)  # wsgiref's PEP 3333 checks


@pytest.mark.parametrize("name", sorted(ABSENT))
def test_keys_that_must_not_appear(fixture_bytes, name):
    env = build(fixture_bytes(name))
    for key in ABSENT[name]:
        assert key not in env


def test_pep3333_invariants(fixture_bytes):
    env = build(fixture_bytes("post_json"))
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.multiprocess"] is True
    assert env["wsgi.multithread"] is False
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input"].read() == b"hello world"
    for key, value in env.items():
        if key.isupper():
            assert type(value) is str, key
            value.encode("latin-1")  # native strings hold only latin-1 code points


def test_script_name_can_be_disabled(fixture_bytes):
    env = build(fixture_bytes("get_tns"), script_name_from_route=False)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/tns/x")


def test_wsgi_errors_goes_to_logging(fixture_bytes, caplog):
    env = build(fixture_bytes("get_json"))
    env["wsgi.errors"].write("first line\nsecond ")
    env["wsgi.errors"].write("part\n")
    env["wsgi.errors"].flush()
    assert [r.getMessage() for r in caplog.records] == ["first line", "second part"]


@pytest.mark.parametrize(
    ("host", "scheme", "expected"),
    [
        ("example.com", "http", ("example.com", "80")),
        ("example.com", "https", ("example.com", "443")),
        ("example.com:8080", "http", ("example.com", "8080")),
        ("[::1]:8080", "http", ("[::1]", "8080")),
        ("[::1]", "https", ("[::1]", "443")),
        (None, "http", ("localhost", "80")),
        (["a.example:81", "b.example"], "http", ("a.example", "81")),
        ("weird:port", "http", ("weird:port", "80")),
    ],
)
def test_split_host(host, scheme, expected):
    assert split_host(host, scheme) == expected


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("user-agent", "HTTP_USER_AGENT"),
        ("content-type", "CONTENT_TYPE"),
        ("content-length", "CONTENT_LENGTH"),
        ("x_forwarded_for", None),  # underscores would let it spoof x-forwarded-for
        ("METHOD", None),
        ("x-mongrel2-upload-done", None),
    ],
)
def test_header_keys(name, key):
    assert header_environ_key(name) == key


def test_repeated_cookie_headers_join_with_semicolon():
    from ringmaster_handler.netstrings import write_netstring

    headers = b'{"METHOD":"GET","PATH":"/","cookie":["a=1","b=2"],"accept":["x","y"]}'
    env = build(b"s 1 / " + write_netstring(headers) + b"0:,")
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_ACCEPT"] == "x, y"
