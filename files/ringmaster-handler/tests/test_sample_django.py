"""The sample Django site (files/sample_django) as a deploy runs it: migrate (twice: the second
applies nothing), collectstatic, then served by a real Mongrel2 -> ringmaster-dispatcher -> two
handler processes, mounted under /django/ with its static files on a Mongrel2 Dir route."""

import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from dispatch_harness import DispatcherProc, Worker
from harness import SRC, Mongrel2, free_port, handler_route, running

SAMPLE = Path(__file__).resolve().parents[2] / "sample_django"
HOST = "site.example"

pytestmark = [
    pytest.mark.skipif(
        not (shutil.which("mongrel2") and shutil.which("m2sh")), reason="needs mongrel2 and m2sh"
    ),
    pytest.mark.skipif(
        __import__("importlib").util.find_spec("django") is None,
        reason="Django is not installed (see requirements-test.txt)",
    ),
]


def manage(env: dict, *args: str) -> str:
    """``manage.py ARGS`` as a deploy hook runs it: the site's directory, its environment."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=SAMPLE,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def migration_rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT app, name, applied FROM django_migrations ORDER BY id"
        ).fetchall()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("django-site")
    state = root / "state"
    env = {
        "RINGMASTER_DJANGO_SECRET_KEY": uuid.uuid4().hex * 2,
        "RINGMASTER_DJANGO_ALLOWED_HOSTS": f"{HOST}, localhost",
        "RINGMASTER_DJANGO_DB": str(state / "db.sqlite3"),
        "RINGMASTER_DJANGO_MEDIA_ROOT": str(state / "media"),
        # Where the front's Dir route looks (Mongrel2 in test mode: relative to its directory).
        "RINGMASTER_DJANGO_STATIC_ROOT": str(root / "static"),
    }
    state.mkdir()
    first = manage(env, "migrate", "--noinput")
    rows_after_first = migration_rows(state / "db.sqlite3")
    second = manage(env, "migrate", "--noinput")
    collected = manage(env, "collectstatic", "--noinput")
    # The committed migrations match the models (exit status 1 otherwise).
    manage(env, "makemigrations", "--check", "--dry-run")

    route = handler_route()
    m2 = Mongrel2(
        root,
        {"/django/": route, "/django/static/": {"dir": "static/"}},
        {"upload.stream": 1},
    )
    bind = f"tcp://127.0.0.1:{free_port()}"
    disp = DispatcherProc(root, route, bind)
    workers = []
    for _ in range(2):
        w = Worker(
            root, "sample_django.wsgi:application", bind,
            "--pythonpath", str(SAMPLE), "--max-body-size", str(100 << 20),
        )  # fmt: skip
        w.env.update(env)
        workers.append(w)
    with running(m2.start(), disp.start(), *(w.start() for w in workers)):
        disp.wait_connected(2)
        yield {
            "root": root,
            "state": state,
            "m2": m2,
            "workers": workers,
            "migrate": (first, rows_after_first, second),
            "collected": collected,
        }


def call(site, method, path, body=None, headers=None, conn=None):
    c = conn or site["m2"].connection(timeout=30)
    c.request(method, path, body=body, headers={"Host": HOST, **(headers or {})})
    resp = c.getresponse()
    body = resp.read()
    if conn is None:
        c.close()  # an open keep-alive connection holds Mongrel2's shutdown for seconds
    return resp, body


def csrf(site) -> tuple[str, str]:
    """The CSRF cookie the index page sets and the form token it embeds."""
    resp, body = call(site, "GET", "/django/")
    cookie = re.search(r"csrftoken=([^;]+)", resp.getheader("Set-Cookie") or "")
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body)
    assert cookie and token, (resp.getheaders(), body[:500])
    return cookie.group(1), token.group(1).decode()


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    for k, (filename, data) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_migrate_twice_applies_once(site):
    first, rows_after_first, second = site["migrate"]
    assert "Applying notes.0001_initial... OK" in first
    assert "No migrations to apply." in second
    assert [r[:2] for r in rows_after_first] == [("notes", "0001_initial")]
    assert migration_rows(site["state"] / "db.sqlite3") == rows_after_first
    # The site tells the same over HTTP.
    resp, body = call(site, "GET", "/django/migrations")
    assert resp.status == 200
    assert [(r["app"], r["name"]) for r in json.loads(body)["applied"]] == [
        ("notes", "0001_initial")
    ]


def test_collectstatic_and_the_front_serves_it(site):
    assert "1 static file copied" in site["collected"]
    source = (SAMPLE / "notes" / "static" / "notes" / "site.css").read_bytes()
    assert (site["root"] / "static" / "notes" / "site.css").read_bytes() == source
    resp, page = call(site, "GET", "/django/")
    assert resp.status == 200
    # {% static %} follows the mount point (SCRIPT_NAME), where the Dir route serves it.
    assert b'href="/django/static/notes/site.css"' in page
    conn = site["m2"].connection()
    resp, css = call(site, "GET", "/django/static/notes/site.css", conn=conn)
    assert (resp.status, css) == (200, source)
    etag = resp.getheader("ETag")
    assert etag
    resp, body = call(
        site, "GET", "/django/static/notes/site.css", headers={"If-None-Match": etag}, conn=conn
    )
    assert (resp.status, body) == (304, b"")
    conn.close()


def test_health(site):
    resp, body = call(site, "GET", "/django/health")
    assert (resp.status, body) == (200, b"ok")
    assert resp.getheader("Content-Type").startswith("text/plain")


def test_whoami(site):
    resp, body = call(site, "GET", "/django/whoami")
    assert resp.status == 200
    data = json.loads(body)
    assert data["pid"] in {w.proc.pid for w in site["workers"]}
    del data["pid"]
    assert data == {
        "app": "sample_django",
        "host": HOST,
        "script_name": "/django",
        "path_info": "/whoami",
        "url_scheme": "http",
        "is_secure": False,
        "remote_addr": "127.0.0.1",
        "hostname": socket.gethostname(),
    }


def test_a_host_not_allowed_is_refused(site):
    resp, _ = call(site, "GET", "/django/health", headers={"Host": "evil.example"})
    assert resp.status == 400


def test_notes_from_both_processes_land_in_one_database(site):
    cookie, token = csrf(site)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"csrftoken={cookie}"}

    def add(i):
        resp, _ = call(
            site,
            "POST",
            "/django/",
            body=f"csrfmiddlewaretoken={token}&text=note+{i}",
            headers=headers,
        )
        return resp.status, resp.getheader("Location")

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(add, range(16)))
    assert answers == [(302, "/django/")] * 16
    with sqlite3.connect(site["state"] / "db.sqlite3") as conn:
        texts = {t for (t,) in conn.execute("SELECT text FROM notes_note WHERE text LIKE 'note %'")}
    assert texts == {f"note {i}" for i in range(16)}
    _, page = call(site, "GET", "/django/")
    assert b"note 15" in page


def test_upload_streams_through_the_dispatcher(site):
    cookie, token = csrf(site)
    payload = os.urandom(3 * 1024 * 1024 + 7)
    body, content_type = multipart({"csrfmiddlewaretoken": token}, {"file": ("big.bin", payload)})
    headers = {"Content-Type": content_type, "Cookie": f"csrftoken={cookie}"}
    resp, reply = call(site, "POST", "/django/upload", body=body, headers=headers)
    assert resp.status == 201, reply[:500]
    data = json.loads(reply)
    digest = hashlib.sha256(payload).hexdigest()
    assert (data["name"], data["size"], data["sha256"]) == ("big.bin", len(payload), digest)
    stored = site["state"] / "media" / data["stored"]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest
    assert not list((site["root"] / "uploads").iterdir()), "Mongrel2 spooled instead of streaming"
    _, page = call(site, "GET", "/django/")
    assert b"uploaded big.bin" in page


def test_upload_form_and_csrf_refusal(site):
    resp, page = call(site, "GET", "/django/upload")
    assert resp.status == 200
    assert b'name="csrfmiddlewaretoken"' in page and b'enctype="multipart/form-data"' in page
    cookie, _ = csrf(site)
    body, content_type = multipart({}, {"file": ("x.txt", b"no token")})
    for headers in ({}, {"Cookie": f"csrftoken={cookie}"}):
        resp, _ = call(
            site,
            "POST",
            "/django/upload",
            body=body,
            headers={"Content-Type": content_type, **headers},
        )
        assert resp.status == 403
    assert not list((site["state"] / "media").rglob("x*.txt"))


def wsgi_check(env: dict, path: str) -> subprocess.CompletedProcess:
    """``ringmaster-wsgi --check`` as a deploy runs it on a new release, with only ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "ringmaster_handler", "--check", "--check-path", path,
         "--chdir", str(SAMPLE), "sample_django.wsgi:application"],
        env={"PYTHONPATH": str(SRC), "PYTHONDONTWRITEBYTECODE": "1", **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_deploy_check_before_migrate(tmp_path):
    env = {
        "RINGMASTER_DJANGO_SECRET_KEY": "k" * 50,
        "RINGMASTER_DJANGO_DB": str(tmp_path / "db.sqlite3"),
        "RINGMASTER_DJANGO_MEDIA_ROOT": str(tmp_path / "media"),
    }
    # /health needs no table: it passes on a release whose migrations have not run yet...
    done = wsgi_check(env, "/health")
    assert done.returncode == 0, done.stderr
    # ...while / reads the notes, so a check of / fails until migrate has run.
    done = wsgi_check(env, "/")
    assert done.returncode != 0 and "500" in done.stderr, done.stderr
    # Without the secret key the release does not even import.
    del env["RINGMASTER_DJANGO_SECRET_KEY"]
    done = wsgi_check(env, "/health")
    assert done.returncode != 0
    assert "RINGMASTER_DJANGO_SECRET_KEY must be set" in done.stderr
