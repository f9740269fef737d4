"""Bad input fails deploy.yml early, names the variable, and leaves the host untouched.

Runs the real playbook against a fresh systemd container from the test image.
"""

import datetime
import json
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playbook_run import IMAGE, REPO, booted_container, one_host_inventory, podman, run_playbook

SHOP_PORTS = {"dispatcher_port": 9989, "front_send_port": 9987, "front_recv_port": 9988}

CASES = [
    pytest.param({"wsgi_app_processes": -1}, "wsgi_app_processes", id="negative-process-count"),
    pytest.param({"wsgi_app_processes": "many"}, "wsgi_app_processes", id="process-count-not-a-number"),
    pytest.param({"mongrel2_port": 70000}, "mongrel2_port", id="port-above-range"),
    pytest.param({"mongrel2_port": 0}, "mongrel2_port", id="port-zero"),
    pytest.param({"mongrel2_request_head_size": 1024}, "mongrel2_request_head_size", id="head-size-below-4096"),
    pytest.param(
        {"mongrel2_handlers": [{"name": "app", "send_port": 9997, "recv_port": 99999}]},
        "mongrel2_handlers[0]",
        id="handler-port-out-of-range",
    ),
    pytest.param({"wsgi_app_front_send_port": -5}, "wsgi_app_front_send_port", id="front-port-negative"),
    pytest.param({"wsgi_app_module": "hello"}, "wsgi_app_module", id="app-without-callable"),
    pytest.param({"wsgi_app_module": "hello:"}, "wsgi_app_module", id="app-empty-callable"),
    pytest.param({"wsgi_app_source_dir": "/nonexistent/app"}, "wsgi_app_source_dir", id="missing-app-source"),
    pytest.param(
        {"mongrel2_routes": [{"path": "/", "handler": "nope"}]}, "mongrel2_routes[0]", id="route-to-unknown-handler"
    ),
    pytest.param({"wsgi_app_static_dir": "/nonexistent/static"}, "wsgi_app_static_dir", id="missing-static-dir"),
    pytest.param(
        {"wsgi_app_static_dir": str(REPO / "files"), "wsgi_app_static_release_dir": "static"},
        "wsgi_app_static_release_dir",
        id="static-from-two-places",
    ),
    pytest.param(
        {
            "wsgi_app_static_dir": str(REPO / "files"),
            "mongrel2_routes": [{"path": "/", "handler": "app"}, {"path": "/static/", "dir": "static/"}],
        },
        "mongrel2_app_routes",
        id="static-url-taken-by-a-route",
    ),
    pytest.param(
        {"ringmaster_tls_proxy": True, "mongrel2_bind_address": "0.0.0.0"},
        "mongrel2_bind_address must be 127.0.0.1 or ::1",
        id="tls-proxy-with-mongrel2-on-every-interface",
    ),
    pytest.param(
        {"ringmaster_tls_proxy": True},
        "tls_proxy_certificates must list at least one certificate",
        id="tls-proxy-without-certificate",
    ),
    pytest.param(
        {"wsgi_app_forwarded_allow_ips": ["proxy.example.com"]},
        "wsgi_app_forwarded_allow_ips must list IP addresses or networks",
        id="trusted-proxy-not-an-address",
    ),
    pytest.param({"circus_log_level": "loud"}, "circus_log_level", id="bad-choice"),
    pytest.param({"circus_metrics_port": 70000}, "circus_metrics_port", id="circus-metrics-port-above-range"),
    pytest.param(
        {"circus_metrics_address": "metrics.example"}, "circus_metrics_address", id="circus-metrics-address-not-ipv4"
    ),
    pytest.param({"wsgi_app_mode": "proxy"}, "wsgi_app_mode", id="unknown-mode"),
    pytest.param({"wsgi_app_dispatcher_port": 9997}, "wsgi_app_dispatcher_port", id="dispatcher-on-mongrel2-port"),
    pytest.param(
        {"wsgi_app_dispatcher_bind_address": "front.example"},
        "wsgi_app_dispatcher_bind_address",
        id="dispatcher-bind-not-an-address",
    ),
    pytest.param(
        {"wsgi_app_dispatcher_queue_timeout": -1},
        "wsgi_app_dispatcher_queue_timeout",
        id="negative-queue-timeout",
    ),
    pytest.param({"wsgi_app_dispatcher_heartbeat": 0}, "wsgi_app_dispatcher_heartbeat", id="heartbeat-zero"),
    pytest.param({"circus_venv_dir": "relative/venv"}, "circus_venv_dir", id="relative-path"),
    pytest.param({"wsgi_app_curve": "maybe"}, "wsgi_app_curve", id="curve-not-a-bool"),
    pytest.param({"wsgi_app_curve_dir": "keys"}, "wsgi_app_curve_dir", id="curve-dir-relative"),
    pytest.param({"wsgi_app_check_path": "health"}, "wsgi_app_check_path", id="check-path-not-absolute"),
    pytest.param({"wsgi_app_check_timeout": 0}, "wsgi_app_check_timeout", id="check-timeout-zero"),
    pytest.param({"wsgi_app_ready_timeout": 3}, "wsgi_app_ready_timeout", id="ready-timeout-not-above-ready-seconds"),
    pytest.param({"wsgi_app_module": ""}, "wsgi_app_module is not set", id="no-app-named"),
    pytest.param({"wsgi_app_request_timeout": 0}, "wsgi_app_request_timeout", id="request-timeout-zero"),
    pytest.param({"wsgi_app_max_body_size": -1}, "wsgi_app_max_body_size", id="negative-body-size"),
    pytest.param(
        {"wsgi_app_processes": 5, "wsgi_app_dispatcher_max_handlers_per_key": 4},
        "wsgi_app_dispatcher_max_handlers_per_key",
        id="more-processes-than-a-key-may-hold",
    ),
    pytest.param(
        {"wsgi_app_processes": 3, "wsgi_app_threads": 2, "wsgi_app_dispatcher_max_handlers_per_key": 4},
        "wsgi_app_threads",
        id="more-threads-than-a-key-may-hold",
    ),
    pytest.param(
        {"wsgi_app_mode": "direct", "wsgi_app_curve": False, "mongrel2_upload_stream": False, "wsgi_app_threads": 2},
        "wsgi_app_threads",
        id="threads-in-direct-mode",
    ),
    pytest.param({"wsgi_app_max_requests": "1k"}, "wsgi_app_max_requests", id="max-requests-not-a-number"),
    pytest.param(
        {"wsgi_app_max_requests_jitter": 10}, "wsgi_app_max_requests_jitter", id="jitter-without-max-requests"
    ),
    pytest.param(
        {"wsgi_app_mode": "direct", "wsgi_app_curve": False, "mongrel2_upload_stream": False, "wsgi_app_max_rss": 200},
        "wsgi_app_max_rss",
        id="recycling-in-direct-mode",
    ),
    pytest.param(
        {"wsgi_app_dispatcher_metrics_port": 9999}, "wsgi_app_dispatcher_metrics_port", id="metrics-on-dispatcher-port"
    ),
    pytest.param({"mongrel2_handler_transport": "udp"}, "mongrel2_handler_transport", id="unknown-transport"),
    pytest.param(
        {"wsgi_app_mode": "direct", "wsgi_app_curve": False}, "mongrel2_upload_stream", id="direct-mode-with-streaming"
    ),
    pytest.param(
        {"wsgi_app_dispatcher_user": "ringmaster"}, "wsgi_app_dispatcher_user", id="dispatcher-as-the-app-account"
    ),
    pytest.param({"wsgi_app_env": "SECRET=x"}, "wsgi_app_env must be a mapping", id="env-not-a-mapping"),
    pytest.param({"mongrel2_upload_max_age": "1 hour"}, "mongrel2_upload_max_age", id="spool-age-not-a-span"),
    pytest.param(
        {"wsgi_app_mode": "direct", "wsgi_app_curve": False, "mongrel2_upload_stream": False},
        "wsgi_app_direct_unordered",
        id="direct-mode-with-two-processes-reorders-pipelines",
    ),
    pytest.param(
        {"ringmaster_apps": [{"name": "app"}, {"name": "app", "hosts": ["b.test"]}]},
        "ringmaster_apps[1] (app): the name 'app' is already used",
        id="apps-same-name",
    ),
    pytest.param(
        {"ringmaster_apps": [{"name": "app"}, {"name": "shop", **SHOP_PORTS}]},
        "ringmaster_apps[1] (shop): the default host / is already claimed by ringmaster_apps[0] (app)",
        id="apps-same-host-and-path",
    ),
    pytest.param(
        {"ringmaster_apps": [{"name": "app", "procesess": 3}]},
        "ringmaster_apps[0] (app): unknown setting(s) procesess",
        id="apps-unknown-setting",
    ),
    pytest.param(
        {"ringmaster_apps": [{"name": "app"}, {"name": "shop", "hosts": ["shop.test"]}]},
        "ringmaster_apps[1] (shop): dispatcher_port 9999 is already dispatcher_port of ringmaster_apps[0]",
        id="apps-same-port",
    ),
    pytest.param(
        {"ringmaster_apps": [{"name": "app"}, {"name": "shop", "hosts": ["shop.test"], "processes": -1, **SHOP_PORTS}]},
        "wsgi_app_processes",
        id="apps-one-app-s-bad-setting",
    ),
    pytest.param(
        {"wsgi_app_data_dirs": ["/tmp/app-data"]},
        "wsgi_app_data_dirs[0] /tmp/app-data is emptied",
        id="data-dir-in-tmp",
    ),
    pytest.param(
        {
            "ringmaster_apps": [
                {"name": "app", "data_dirs": ["/srv/data"]},
                {"name": "shop", "hosts": ["shop.test"], "data_dirs": ["/srv/data/shop"], **SHOP_PORTS},
            ]
        },
        "ringmaster_apps[1] (shop): data_dirs /srv/data/shop overlaps /srv/data of ringmaster_apps[0] (app)",
        id="apps-sharing-a-data-dir",
    ),
]


# One container per module and pytest-xdist worker (tools/test.sh runs these on two), with a
# unique name: the cases that rewrite the release files change only their own worker's container.
@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with booted_container("ringmaster-preflight", IMAGE) as name:
        # Everything a deploy would touch is compared against this moment.
        podman("exec", name, "touch", "-d", "@1", "/root/.before-preflight")
        time.sleep(1.1)
        podman("exec", name, "touch", "/root/.before-preflight")
        inventory = one_host_inventory(tmp_path_factory.mktemp("inventory") / "hosts.yml", name)
        yield name, inventory


def _changed_paths(name):
    found = podman(
        "exec",
        name,
        "find",
        "/etc",
        "/opt",
        "/usr/local",
        "/var/lib/mongrel2",
        "-newer",
        "/root/.before-preflight",
        check=False,
    )
    return [line for line in found.stdout.splitlines() if line]


def _refused_before_any_change(name, inventory, extra_vars, named, tmp_path):
    """Run deploy.yml: it must fail naming ``named``, in its first play (the preflight; no later
    play started), with nothing changed on the host. Returns its output for further checks."""
    returncode, output = run_playbook("deploy", inventory, extra_vars, tmp_path)
    assert returncode != 0, output
    assert named in output, output
    assert "PLAY [Circus on every host]" not in output, output
    assert _changed_paths(name) == []
    return output


@pytest.mark.parametrize(("extra_vars", "named"), CASES)
def test_bad_input_fails_before_any_change(host, tmp_path, extra_vars, named):
    name, inventory = host
    _refused_before_any_change(name, inventory, extra_vars, named, tmp_path)
    assert podman("exec", name, "dpkg-query", "-W", "mongrel2-core", check=False).returncode != 0


def _tls_pair(days_left=90, name="localhost"):
    """A self-signed P-256 certificate for name and its key, as PEM text."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=100))
        .not_valid_after(now + datetime.timedelta(days=days_left))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


_GOOD_CERT, _GOOD_KEY = _tls_pair()
_OTHER_KEY = _tls_pair()[1]
_EXPIRED_CERT, _EXPIRED_KEY = _tls_pair(days_left=-1)

TLS_CASES = [
    pytest.param(
        {"names": ["localhost"], "cert": _GOOD_CERT, "key": _OTHER_KEY},
        "mongrel2_tls_certificates[0]: the key does not match the certificate",
        id="tls-key-does-not-match",
    ),
    pytest.param(
        {"names": ["localhost"], "cert": _EXPIRED_CERT, "key": _EXPIRED_KEY},
        "mongrel2_tls_certificates[0]: the certificate expired on",
        id="tls-certificate-expired",
    ),
    pytest.param(
        {"names": ["www.example.com"], **dict(zip(("cert", "key"), _tls_pair(name="www.example.com"), strict=True))},
        "mongrel2_tls_certificates: no entry's names cover the TLS host localhost",
        id="tls-host-without-certificate",
    ),
    pytest.param(
        {"names": ["localhost"], "cert_file": "/nonexistent/site.crt", "key": _GOOD_KEY},
        "mongrel2_tls_certificates[0].cert_file: cannot read /nonexistent/site.crt on the controller",
        id="tls-certificate-file-unreadable",
    ),
]


_TLS_ON = {
    "mongrel2_tls": True,
    "mongrel2_tls_certificates": [{"names": ["localhost"], "cert": _GOOD_CERT, "key": _GOOD_KEY}],
}

PLAIN_HTTP_CASES = [
    pytest.param(
        {"mongrel2_http_port": 8080},
        "mongrel2_http_port (8080) adds a plain-HTTP server next to the TLS one",
        id="plain-http-without-tls",
    ),
    pytest.param(
        {**_TLS_ON, "mongrel2_http_port": 6767},
        "mongrel2_http_port (6767) must differ from mongrel2_port",
        id="plain-http-on-the-tls-port",
    ),
    pytest.param(
        {**_TLS_ON, "mongrel2_http_port": 8080, "mongrel2_handler_transport": "tcp"},
        "mongrel2_http_port needs mongrel2_handler_transport ipc",
        id="plain-http-with-tcp-handler-sockets",
    ),
    pytest.param(
        {"mongrel2_https_public_port": 70000}, "mongrel2_https_public_port", id="public-https-port-above-range"
    ),
    pytest.param(
        {"wsgi_app_hsts_include_subdomains": True},
        "wsgi_app_hsts_include_subdomains",
        id="hsts-subdomains-without-max-age",
    ),
]


@pytest.mark.parametrize(("extra_vars", "named"), PLAIN_HTTP_CASES)
def test_bad_plain_http_and_hsts_input_fails_before_any_change(host, tmp_path, extra_vars, named):
    test_bad_input_fails_before_any_change(host, tmp_path, extra_vars, named)


@pytest.mark.parametrize(("certificate", "named"), TLS_CASES)
def test_bad_tls_input_fails_before_any_change_and_shows_no_key(host, tmp_path, certificate, named):
    name, inventory = host
    extra_vars = {"mongrel2_tls": True, "mongrel2_tls_certificates": [certificate]}
    output = _refused_before_any_change(name, inventory, extra_vars, named, tmp_path)
    for key in (_GOOD_KEY, _OTHER_KEY, _EXPIRED_KEY):
        assert key.splitlines()[1] not in output, "key material in the output"


def test_bad_tls_proxy_certificate_fails_before_any_change_and_shows_no_key(host, tmp_path):
    name, inventory = host
    certificate = {"names": ["localhost"], "cert": _GOOD_CERT, "key": _OTHER_KEY}
    extra_vars = {"ringmaster_tls_proxy": True, "tls_proxy_certificates": [certificate]}
    named = "tls_proxy_certificates[0]: the key does not match the certificate"
    output = _refused_before_any_change(name, inventory, extra_vars, named, tmp_path)
    assert _OTHER_KEY.splitlines()[1] not in output, "key material in the output"


# The console (ringmaster_console): its preflight, and its agents'. A password hash that would
# pass, so each case breaks one thing; the plain password must never be shown.
CONSOLE_PASSWORD = "plain-console-password-in-the-inventory"
CONSOLE = {
    "ringmaster_apps": [{"name": "app"}],
    "ringmaster_console": True,
    "console_server_names": ["console.test"],
    "console_password_hash": "scrypt:32768:8:1$abcdefghijklmnop$" + "0" * 128,
}
CONSOLE_CASES = [
    pytest.param(
        {k: v for k, v in CONSOLE.items() if k != "ringmaster_apps"},
        "without ringmaster_apps",
        id="console-without-apps",
    ),
    pytest.param(
        {**CONSOLE, "ringmaster_console": "yes"}, "ringmaster_console must be true or false", id="console-not-bool"
    ),
    pytest.param(
        {**CONSOLE, "console_password_hash": ""}, "console_password_hash is not set", id="console-no-password"
    ),
    pytest.param(
        {**CONSOLE, "console_password_hash": CONSOLE_PASSWORD},
        "console_password_hash is not a password hash (a plain password?)",
        id="console-plain-password",
    ),
    pytest.param(
        {**CONSOLE, "console_password_hash": "pbkdf2:sha256:1000$abcdefghij$" + "0" * 64},
        "console_password_hash is a weak pbkdf2 hash",
        id="console-weak-hash",
    ),
    pytest.param(
        {**CONSOLE, "console_secret_key": "short-" + CONSOLE_PASSWORD[:10]},
        "console_secret_key must be empty",
        id="console-short-secret-key",
    ),
    pytest.param({**CONSOLE, "console_server_names": []}, "console_server_names []", id="console-no-host-name"),
    pytest.param({**CONSOLE, "console_group": "consoles"}, "console_group must name", id="console-group-missing"),
    pytest.param(
        {**CONSOLE, "console_timeout": 0}, "console_timeout must be a number above 0", id="console-timeout-zero"
    ),
    pytest.param(
        {**CONSOLE, "console_dispatcher_port": 9999},
        "ringmaster_apps[1] (console)",
        id="console-port-of-another-app",
    ),
    pytest.param({**CONSOLE, "console_agent_address": "0.0.0.0"}, "console_agent_address", id="agent-any-address"),
    pytest.param({**CONSOLE, "console_agent_port": 70000}, "console_agent_port", id="agent-port-above-range"),
    pytest.param({**CONSOLE, "console_agent_log_level": "loud"}, "console_agent_log_level", id="agent-bad-choice"),
]


@pytest.mark.parametrize(("extra_vars", "named"), CONSOLE_CASES)
def test_bad_console_input_fails_before_any_change_and_shows_no_secret(host, tmp_path, extra_vars, named):
    name, inventory = host
    output = _refused_before_any_change(name, inventory, extra_vars, named, tmp_path)
    for secret in (CONSOLE_PASSWORD, CONSOLE["console_password_hash"]):
        assert secret not in output, "a console secret in the output"


# A second inventory name for the same container is a worker on "another host": enough to
# check the rules about links between hosts without a second container.
TWO_HOST_CASES = [
    pytest.param(
        {"wsgi_app_mode": "direct"},
        {},
        "wsgi_app_curve: false to run them in plaintext",
        id="direct-mode-between-hosts-needs-curve-off",
    ),
    pytest.param({}, {"wsgi_app_curve": False}, "wsgi_app_curve is", id="curve-differs-between-hosts"),
    pytest.param(
        {"wsgi_app_curve": False},
        {},
        "wsgi_app_insecure_links: true to accept unencrypted links",
        id="plaintext-dispatcher-links-between-hosts",
    ),
    pytest.param(
        {"wsgi_app_mode": "direct", "wsgi_app_curve": False, "mongrel2_upload_stream": False},
        {},
        "need mongrel2_handler_transport: tcp",
        id="direct-mode-between-hosts-over-ipc",
    ),
    pytest.param(
        {**CONSOLE, "wsgi_app_dispatcher_bind_address": "0.0.0.0"},
        {},
        "a loopback address, but the console runs on",
        id="console-agent-on-loopback-of-another-host",
    ),
]


@pytest.mark.parametrize(("extra_vars", "worker_vars", "message"), TWO_HOST_CASES)
def test_links_between_hosts_fail_before_any_change(host, tmp_path, extra_vars, worker_vars, message):
    name, inventory = host
    two = json.loads(inventory.read_text())
    two["all"]["children"]["worker"]["hosts"] = {f"{name}-worker": {"ansible_host": name, **worker_vars}}
    two_hosts = tmp_path / "two-hosts.yml"
    two_hosts.write_text(json.dumps(two))
    _refused_before_any_change(name, two_hosts, extra_vars, message, tmp_path)


# The release is read from the host itself: the container is made to say it runs another
# Debian (its os-release and debian_version rewritten in place), the real facts and the real
# check do the rest. Both files are restored afterwards, their times too.
OTHER_RELEASES = [
    pytest.param(
        'PRETTY_NAME="Debian GNU/Linux 14 (forky)"\nNAME="Debian GNU/Linux"\nVERSION_ID="14"\n'
        'VERSION="14 (forky)"\nVERSION_CODENAME=forky\nID=debian\n',
        "14.0\n",
        "runs Debian 14",
        id="debian-14",
    ),
    pytest.param(
        'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\n'
        'VERSION="24.04.1 LTS (Noble Numbat)"\nVERSION_CODENAME=noble\nID=ubuntu\nID_LIKE=debian\n',
        "trixie/sid\n",
        "runs Ubuntu 24.04",
        id="ubuntu-24.04",
    ),
]


@pytest.mark.parametrize(("os_release", "debian_version", "message"), OTHER_RELEASES)
def test_unsupported_release_fails_before_any_change(host, tmp_path, os_release, debian_version, message):
    name, inventory = host
    saved = {path: podman("exec", name, "cat", path).stdout for path in ("/usr/lib/os-release", "/etc/debian_version")}

    def write(path, text):
        # In place (no new inode), so /etc itself does not look changed.
        subprocess.run(["podman", "exec", "-i", name, "sh", "-c", f"cat > {path}"], input=text, text=True, check=True)

    try:
        write("/usr/lib/os-release", os_release)
        write("/etc/debian_version", debian_version)
        returncode, output = run_playbook("deploy", inventory, {}, tmp_path)
    finally:
        for path, text in saved.items():
            write(path, text)
        podman("exec", name, "touch", "-d", "@1", "/etc/debian_version")
    assert returncode != 0, output
    # The host, what it runs and what is supported, for the front and the worker checks alike.
    assert f"{name} {message}" in output, output
    assert "supports Debian 12 and 13 only" in output, output
    assert "PLAY [Circus on every host]" not in output, output
    assert _changed_paths(name) == []
