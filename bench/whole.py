#!/usr/bin/env python3
"""Whole-machine benchmark: ringmaster against the stacks users would pick instead (issue 15).

One command, stdlib only (run it with Debian's python3, as root to let it install what it needs):

    python3 bench/whole.py [--procs 2,4] [--recommended] [--rounds 3] [--duration 10]
                           [--workloads hello,mixed,idle,slow,upload,https,fleet] [--only NAME ...]
                           [--m2-setting KEY=JSON ...] [--dispatcher-args "..."]
                           [--handler-args "..."] [--extra-rows]

Installs (as root, when missing) the Debian packages nginx, wrk and mongrel2-core, and builds
bench/run.py's throwaway venv under /tmp (bench/requirements.txt: Gunicorn, uWSGI, Granian,
pyzmq, plus files/ringmaster-handler). Every stack serves the same app (bench/apps.py) with the
same number of Python processes, on free loopback ports in 20000-29999:

- ringmaster dispatcher: Mongrel2 -> ringmaster-dispatcher -> ringmaster-wsgi --dispatcher, as
  the roles deploy it: loopback tcp between Mongrel2 and the dispatcher, CURVE on the handler
  link, Mongrel2 settings and flags from bench/deploy.json (one place to keep in step with
  roles/mongrel2 and roles/wsgi_app)
- ringmaster direct: Mongrel2 -> ringmaster-wsgi (PULL from Mongrel2)
- nginx + gunicorn sync, nginx + gunicorn gthread (4 threads), nginx + uwsgi (uwsgi
  protocol): Debian's nginx in front, on a unix socket, as their documentation deploys them
- uwsgi http11-socket (alone), granian wsgi (alone)
- --extra-rows adds labelled rows that are NOT what the roles deploy: ringmaster dispatcher
  with ipc:// to Mongrel2, and with CURVE off.
- ringmaster dispatcher, 16 threads: the same with wsgi_app_threads 16, what docs/operating.md
  recommends for thread-safe apps that wait on I/O; the mixed workload's targets use this row
- --recommended adds a group where each peer runs its own recommended worker count
  (RECOMMENDED).
- https workload only: ringmaster dispatcher with Mongrel2 terminating TLS (mongrel2_tls, its
  settings from bench/deploy.json), nginx terminating TLS 1.2 with the same suites in front of
  Gunicorn sync, nginx as Debian's nginx.conf sets TLS up (1.3), nginx TLS 1.2 in front of
  ringmaster (Mongrel2 plain on loopback; labelled extra), and the plain ringmaster dispatcher
  and nginx+gunicorn sync rows to compare with; one ECDSA P-256 certificate for all of them,
  from a throwaway CA made with openssl under the run's /tmp directory.

Workloads (interleaved rounds: each round runs every stack in a rotated order; medians):
1 hello     wrk -c64 keep-alive and Connection: close on /; req/s, p50/p99, CPU us per
            request by process group; then our own loss-counting client (bench/run.py)
2 mixed     64 keep-alive clients, 95% /fast (~1 ms CPU), 5% /slow (300 ms I/O wait), our
            client (bench/client.py): fast p50/p99, total req/s, lost
3 idle      wrk -c32 on / with and without 5,000 idle keep-alive connections held open
4 slow      wrk -c32 on / with and without 200 clients reading /big (1 MB) at 50 KB/s
5 upload    32 clients posting 5 MB bodies: MB/s, p99
6 https     its own stacks (HTTPS below): wrk -c64 keep-alive and `Connection: close` (a new
            connection, so a full TLS handshake, per request) over https and over plain http,
            then our loss client over the same; keep-alive https against the same stack's
            plain http, new TLS connections/s against nginx's
7 fleet     one dispatcher with 10/100/1,000 light handlers, handlers on 1/5/20 fronts
            (bench/fleet.py; not run by default)

A row with any error or lost request gets no ratio and no PASS. Everything it starts is
stopped at the end, on Ctrl-C too; nothing is written outside /tmp. The fd limit is raised to
the hard limit for itself and every server it starts (5,000 idle connections).
"""

import argparse
import contextlib
import json
import os
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dispatcher as m2  # bench/dispatcher.py: Mongrel2 fronts, dispatcher and direct mode
import run  # bench/run.py: tools, venv, ports, wrk and the loss client

BENCH = run.BENCH
DEPLOY = BENCH / "deploy.json"
APP = "apps:app"
run.DEBIAN_TOOLS.setdefault("nginx", "nginx")
CORES = os.cpu_count() or 1

# Each peer's own recommendation for this machine (the --recommended rows).
RECOMMENDED = {
    "gunicorn": 2 * CORES + 1,  # Gunicorn docs: (2 x cores) + 1 workers
    "granian": CORES,  # Granian docs: one worker per core
    "ringmaster": 2,  # roles/wsgi_app defaults: wsgi_app_processes 2
    # uWSGI's docs give no formula ("there is no magic rule"): no extra row.
}
# Threads per handler process of the "16 threads" dispatcher row: what docs/operating.md
# recommends for thread-safe apps that wait on I/O (wsgi_app_threads; the role's default is 1).
RECOMMENDED_THREADS = 16

_clients: list[subprocess.Popen] = []


def load_deploy(args) -> dict:
    deploy = json.loads(DEPLOY.read_text())
    overrides = {}
    for item in args.m2_setting or []:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    deploy["mongrel2"]["overrides"] = overrides
    if args.dispatcher_args is not None:
        deploy["dispatcher"]["args"] = shlex.split(args.dispatcher_args)
    if args.handler_args is not None:
        deploy["handler"]["args"] = shlex.split(args.handler_args)
    return deploy


def m2_settings(deploy: dict, mode: str, tls: bool = False) -> dict:
    """Mongrel2's settings table for one mode (dispatcher or direct), with TLS's (as
    mongrel2_tls adds them) when asked, --m2-setting last."""
    m2conf = deploy["mongrel2"]
    settings = {**m2conf["settings"], **m2conf.get("mode_settings", {}).get(mode, {}),
                **(m2conf["tls_settings"] if tls else {}), **m2conf.get("overrides", {})}  # fmt: skip
    if os.geteuid() != 0 and str(settings.get("upload.temp_store", "")).startswith("/"):
        # Unprivileged Mongrel2 does not chroot: keep its upload path inside its directory.
        settings["upload.temp_store"] = settings["upload.temp_store"].lstrip("/")
    return settings


def raise_fd_limit() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


# -- stacks --------------------------------------------------------------------------------


class Stack:
    """What every stack adds to bench/run.py's Server: its process groups, for CPU per request."""

    key = ""
    scheme = "http"  # what the clients speak to it (https: the https workload's TLS rows)
    plain = ""  # a TLS row: the row serving the same app the same way over plain http
    certs: "Certs"  # set by start_group: the run's certificate and key

    def groups(self) -> dict[str, list[int]]:
        raise NotImplementedError


class RingmasterDispatcher(m2.Dispatched, Stack):
    name = "ringmaster dispatcher"
    key = "ringmaster"
    app = APP
    curve = True  # as deployed
    ipc = False  # loopback tcp between Mongrel2 and the dispatcher, as deployed
    threads = 1  # wsgi_app_threads

    def start(self) -> None:
        root = self.workdir / self.name.replace(" ", "-")
        threads = ("--threads", str(self.threads)) if self.threads > 1 else ()
        self.handler_args = (*self.deploy["handler"]["args"], *threads, "--upload-root", str(root))
        self.settings = m2_settings(self.deploy, "dispatcher", tls=self.use_ssl)
        if self.use_ssl:
            self.certs.install_for_mongrel2(root / "certs", server_uuid="bench-server")
        self.extra_args = tuple(self.deploy["dispatcher"]["args"])
        super().start()

    def groups(self) -> dict[str, list[int]]:
        return {"mongrel2": [self.mongrel2.pid], "dispatcher": [self.dispatcher.pid],
                "workers": self.worker_pids()}  # fmt: skip


class RingmasterDispatcherThreads(RingmasterDispatcher):
    name = f"ringmaster dispatcher, {RECOMMENDED_THREADS} threads"
    threads = RECOMMENDED_THREADS


class RingmasterDispatcherIpc(RingmasterDispatcher):
    name = "ringmaster dispatcher ipc (extra)"
    ipc = True


class RingmasterDispatcherPlain(RingmasterDispatcher):
    name = "ringmaster dispatcher curve-off (extra)"
    curve = False


class RingmasterDispatcherTLS(RingmasterDispatcher):
    """The default deployment with mongrel2_tls: Mongrel2 itself terminates TLS (mbedTLS 2.28,
    TLS 1.2, the role's suites); its plain twin is the headline dispatcher row."""

    name = "ringmaster dispatcher, Mongrel2 TLS"
    use_ssl = True
    scheme = "https"
    plain = RingmasterDispatcher.name


class RingmasterDirect(m2.Direct, Stack):
    name = "ringmaster direct"
    key = "ringmaster"
    app = APP

    def start(self) -> None:
        root = self.workdir / self.name.replace(" ", "-")
        self.handler_args = (*self.deploy["handler"]["args"], "--upload-root", str(root))
        self.settings = m2_settings(self.deploy, "direct")
        super().start()

    def groups(self) -> dict[str, list[int]]:
        return {"mongrel2": [self.mongrel2.pid], "workers": self.worker_pids()}


NGINX_CONF = """
daemon off;
master_process on;
worker_processes auto;
worker_rlimit_nofile {nofile};
{user}
pid {w}/nginx.pid;
error_log {w}/error.log warn;
events {{ worker_connections {conns}; }}
http {{
    access_log off;
    client_max_body_size 64m;
    client_body_temp_path {w}/body;
    proxy_temp_path {w}/proxy;
    uwsgi_temp_path {w}/uwsgi;
    fastcgi_temp_path {w}/fastcgi;
    scgi_temp_path {w}/scgi;
{upstream}
    server {{
        listen 127.0.0.1:{port}{ssl};
{tls}
        location / {{
{location}
        }}
    }}
}}
"""
# Gunicorn's deploy docs: proxy_pass with these headers, buffering on (nginx's default).
PROXY = """            proxy_pass http://unix:{sock};
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_redirect off;"""
UWSGI_PASS = """            include /etc/nginx/uwsgi_params;
            uwsgi_pass unix:{sock};"""
# nginx terminating TLS. Session tickets off (nginx's session cache is off by default): every
# handshake is a full one, as with Mongrel2, which resumes none (each cell's TLS probe shows
# it), while wrk would resume where a server lets it.
NGINX_TLS = """        ssl_certificate {crt};
        ssl_certificate_key {key};
        ssl_session_tickets off;
{versions}"""
# The TLS 1.2 rows: Mongrel2's own protocol and suites (bench/deploy.json), in OpenSSL's names.
NGINX_TLS12 = """        ssl_protocols TLSv1.2;
        ssl_ciphers {ciphers};"""
# The TLS 1.3 row: what Debian's /etc/nginx/nginx.conf sets (nginx 1.22's own default has no
# TLS 1.3), suites at nginx's default.
NGINX_TLS_DEBIAN = """        ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
        ssl_prefer_server_ciphers on;"""
# In front of a keep-alive backend (ringmaster's Mongrel2): connections kept to it, as nginx's
# docs set up upstream keepalive.
RINGMASTER_UPSTREAM = """    upstream ringmaster {{
        server 127.0.0.1:{backend};
        keepalive 64;
    }}"""
PROXY_KEEPALIVE = """            proxy_pass http://ringmaster;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;"""

# mbedTLS's suite names (Mongrel2's ssl_ciphers) -> OpenSSL's (nginx's ssl_ciphers).
_OPENSSL_BULK = {
    "AES-128-GCM-SHA256": "AES128-GCM-SHA256",
    "AES-256-GCM-SHA384": "AES256-GCM-SHA384",
    "CHACHA20-POLY1305-SHA256": "CHACHA20-POLY1305",
}


def openssl_ciphers(mbedtls: str) -> str:
    """Mongrel2's ssl_ciphers (space-separated mbedTLS names) as an OpenSSL cipher string."""
    out = []
    for name in mbedtls.split():
        m = re.fullmatch(r"TLS-(ECDHE-ECDSA|ECDHE-RSA)-WITH-(.+)", name)
        if not m or m.group(2) not in _OPENSSL_BULK:
            raise ValueError(f"no OpenSSL name known for the mbedTLS suite {name}")
        out.append(f"{m.group(1)}-{_OPENSSL_BULK[m.group(2)]}")
    return ":".join(out)


class Certs:
    """A throwaway CA and one ECDSA P-256 leaf for localhost and 127.0.0.1, made with openssl:
    the same certificate and key for every TLS row."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.crt, self.key = directory / "server.crt", directory / "server.key"

    def make(self) -> "Certs":
        self.dir.mkdir(parents=True, exist_ok=True)

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=self.dir, check=True, capture_output=True, timeout=30)

        for key in ("ca.key", "server.key"):
            openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-pkeyopt", "ec_param_enc:named_curve", "-out", key)  # fmt: skip
        openssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=ringmaster bench CA",
                "-days", "2", "-out", "ca.crt")  # fmt: skip
        openssl("req", "-new", "-key", "server.key", "-subj", f"/CN={run.TLS_HOST}", "-out", "server.csr")
        (self.dir / "server.ext").write_text(f"subjectAltName=DNS:{run.TLS_HOST},IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.crt")  # fmt: skip
        return self

    def install_for_mongrel2(self, certdir: Path, server_uuid: str) -> None:
        """As roles/mongrel2 (tasks/tls.yml) writes them: <server uuid>.crt/.key, for clients
        without SNI, and <host>.crt/.key, the file Mongrel2 finds for the name a client sends."""
        certdir.mkdir(parents=True, exist_ok=True)
        for stem in (server_uuid, run.TLS_HOST):
            shutil.copyfile(self.crt, certdir / f"{stem}.crt")
            shutil.copyfile(self.key, certdir / f"{stem}.key")
            (certdir / f"{stem}.key").chmod(0o600)


class BehindNginx(Stack):
    """Debian's nginx in front of a Python server on a unix socket."""

    location = PROXY
    upstream = ""
    backend_port = 0  # a backend on loopback TCP (nginx in front of ringmaster)
    tls = ""  # "1.2": TLS 1.2 with Mongrel2's suites; "debian": Debian's nginx.conf (TLS 1.3)

    def nginx_tls(self) -> str:
        if not self.tls:
            return ""
        versions = NGINX_TLS_DEBIAN
        if self.tls == "1.2":
            ciphers = openssl_ciphers(self.deploy["mongrel2"]["tls_settings"]["ssl_ciphers"])
            versions = NGINX_TLS12.format(ciphers=ciphers)
        return NGINX_TLS.format(crt=self.certs.crt, key=self.certs.key, versions=versions)

    def start_nginx(self) -> None:
        w = self.workdir / re.sub(r"[^A-Za-z0-9.]+", "-", self.name)
        w.mkdir(parents=True, exist_ok=True)
        self.sock = w / "app.sock"
        conf = w / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                w=w, port=self.port, nofile=self.nofile, conns=self.nofile // 2,
                user="user root;" if os.geteuid() == 0 else "",
                location=self.location.format(sock=self.sock),
                upstream=self.upstream.format(backend=self.backend_port),
                ssl=" ssl" if self.tls else "", tls=self.nginx_tls(),
            )
        )  # fmt: skip
        self.nginx = self.spawn(["nginx", "-c", str(conf), "-p", str(w), "-e", str(w / "error.log")])

    def nginx_pids(self) -> list[int]:
        return [self.nginx.pid, *run.children(self.nginx.pid)]


class NginxGunicornSync(BehindNginx, run.GunicornSync):
    name = "nginx+gunicorn sync"
    key = "gunicorn"
    app = APP

    def start(self) -> None:
        self.start_nginx()
        self.master = self.spawn(
            [self.bin("gunicorn"), "-w", str(self.procs), *self.worker_class,
             "-b", f"unix:{self.sock}", "--log-level", "warning", self.app]
        )  # fmt: skip

    def stop(self) -> None:
        run.Server.stop(self)

    def groups(self) -> dict[str, list[int]]:
        return {"nginx": self.nginx_pids(), "master": [self.master.pid],
                "workers": self.worker_pids()}  # fmt: skip


class NginxGunicornGthread(NginxGunicornSync):
    name = "nginx+gunicorn gthread"
    worker_class = run.GunicornGthread.worker_class


class NginxTLS12GunicornSync(NginxGunicornSync):
    """nginx terminating TLS 1.2 with Mongrel2's suites: the like-for-like handshake."""

    name = "nginx TLS1.2+gunicorn sync"
    scheme = "https"
    tls = "1.2"
    plain = NginxGunicornSync.name


class NginxTLSDefaultGunicornSync(NginxGunicornSync):
    """nginx as Debian's nginx.conf runs it (its ssl_protocols, nginx's default suites): TLS 1.3
    with wrk, X25519."""

    name = "nginx TLS1.3 (Debian's)+gunicorn sync"
    scheme = "https"
    tls = "debian"
    plain = NginxGunicornSync.name


class NginxTLSRingmaster(BehindNginx, RingmasterDispatcher):
    """(extra) nginx terminating TLS 1.2 in front of the default deployment, Mongrel2 plain on
    loopback: a second TLS front to compare with Mongrel2's own."""

    name = "nginx TLS1.2+ringmaster dispatcher (extra)"
    scheme = "https"
    tls = "1.2"
    use_ssl = False
    plain = RingmasterDispatcher.name
    upstream = RINGMASTER_UPSTREAM
    location = PROXY_KEEPALIVE

    def start(self) -> None:
        self.backend_port = run.free_port()  # Mongrel2's (dispatcher.py: backend_port or port)
        RingmasterDispatcher.start(self)
        self.start_nginx()

    def groups(self) -> dict[str, list[int]]:
        return {"nginx": self.nginx_pids(), **RingmasterDispatcher.groups(self)}


# uWSGI's default listen queue is 100 (Gunicorn's 2048, Granian's 1024): 200 slow clients
# arriving at once overflow it (nginx: 502, "Resource temporarily unavailable"). Its docs tell
# production sites to raise it; we give it Granian's.
UWSGI_LISTEN = ("--listen", "1024")


class NginxUWSGI(BehindNginx, run.UWSGI):
    name = "nginx+uwsgi"
    key = "uwsgi"
    app = APP
    location = UWSGI_PASS

    def args(self) -> list[str]:
        return ["--socket", str(self.sock), *UWSGI_LISTEN]

    def start(self) -> None:
        self.start_nginx()
        run.UWSGI.start(self)

    def groups(self) -> dict[str, list[int]]:
        return {"nginx": self.nginx_pids(), "master": [self.master.pid],
                "workers": self.worker_pids()}  # fmt: skip


class UWSGIHttp(run.UWSGI, Stack):
    name = "uwsgi http11-socket"
    key = "uwsgi"
    app = APP

    def args(self) -> list[str]:
        return [*super().args(), *UWSGI_LISTEN]

    def groups(self) -> dict[str, list[int]]:
        return {"master": [self.master.pid], "workers": self.worker_pids()}


class Granian(run.Server, Stack):
    name = "granian wsgi"
    key = "granian"
    app = APP

    def start(self) -> None:
        self.master = self.spawn(
            [self.bin("granian"), "--interface", "wsgi", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(self.procs), "--no-ws",
             "--log-level", "warning", "--no-access-log", self.app]
        )  # fmt: skip

    def worker_pids(self) -> list[int]:
        return run.children(self.master.pid)

    def groups(self) -> dict[str, list[int]]:
        return {"master": [self.master.pid], "workers": self.worker_pids()}


HEADLINE = [RingmasterDispatcher, RingmasterDispatcherThreads, RingmasterDirect,
            NginxGunicornSync, NginxGunicornGthread, NginxUWSGI, UWSGIHttp, Granian]  # fmt: skip
EXTRA = [RingmasterDispatcherIpc, RingmasterDispatcherPlain]
BASE = "nginx+gunicorn sync"
# The https workload's stacks: every TLS row with its plain twin (the same stack over http).
HTTPS = [RingmasterDispatcher, RingmasterDispatcherTLS, NginxGunicornSync, NginxTLS12GunicornSync,
         NginxTLSDefaultGunicornSync, NginxTLSRingmaster]  # fmt: skip
HTTPS_BASE = NginxTLS12GunicornSync.name  # new TLS connections/s: the like-for-like handshake


# -- load ----------------------------------------------------------------------------------


def own_client(port: int, mode: str, *opts: str, background: bool = False):
    """bench/client.py in its own process; background: return it once it is under way."""
    argv = [sys.executable, str(BENCH / "client.py"), str(port), mode, *opts]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    _clients.append(proc)
    if background:
        return proc
    return finish_client(proc, signal_it=False)


def finish_client(proc: subprocess.Popen, signal_it: bool = True) -> dict:
    if signal_it and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    _clients.remove(proc)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": 1, "lost": 0, "sent": 0}


def wrk_with_cpu(stack, mode: str, duration: float, connections: int) -> dict:
    groups = stack.groups()
    before = {g: sum(cpu_ticks(p) for p in pids) for g, pids in groups.items()}
    res = run.run_wrk(stack.port, mode, duration, connections, stack.scheme)
    after = {g: sum(cpu_ticks(p) for p in pids) for g, pids in groups.items()}
    requests = res["rps"] * duration
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    res["cpu"] = {g: (after[g] - before[g]) * tick_us / requests if requests else float("nan") for g in groups}
    res["nprocs"] = {g: len(p) for g, p in groups.items()}
    return res


def loss(stack, args, mode: str = "keep-alive", connections: int = 64) -> dict:
    return run.loss_client(stack.port, mode, connections, args.loss_requests, 2.0, stack.scheme == "https")


def merge_loss(res: dict, own: dict) -> dict:
    res["lost"] = res.get("lost", 0) + own.get("lost", 0)
    res["errors"] = res.get("errors", 0) + own.get("error", 0)
    res["sent"] = res.get("sent", 0) + own.get("sent", 0)
    return res


def cell_hello(stack, args) -> dict[str, dict]:
    out = {}
    for mode in run.MODES:
        res = wrk_with_cpu(stack, mode, args.duration, 64)
        out[mode] = merge_loss(res, loss(stack, args, mode))
    return out


def cell_mixed(stack, args) -> dict[str, dict]:
    own = own_client(stack.port, "mix", "--connections", "64", "--duration", str(args.duration),
                     "--mix", "/fast:95,/slow:5", "--timeout", "5")  # fmt: skip
    fast = own.get("by_path", {}).get("/fast", {})
    res = {"rps": own.get("rps", 0), "p50": fast.get("p50", float("nan")),
           "p99": fast.get("p99", float("nan")), "errors": own.get("error", 0),
           "lost": own.get("lost", 0), "sent": own.get("sent", 0),
           "slow_p99": own.get("by_path", {}).get("/slow", {}).get("p99", float("nan"))}  # fmt: skip
    return {"95% fast / 5% slow": res}


def with_background(stack, args, mode: str, opts: list[str], ready_line: bool) -> dict[str, dict]:
    """wrk -c32 plus our loss client on /, without and then with a background load."""
    out = {}
    for label in ("without", "with"):
        bg = None
        if label == "with":
            bg = own_client(stack.port, mode, *opts, background=True)
            if ready_line:
                bg.stdout.readline()  # {"ready": n}: every idle connection is open (or given up)
            else:
                time.sleep(1.5)
        try:
            res = wrk_with_cpu(stack, "keep-alive", args.duration, 32)
            merge_loss(res, loss(stack, args, connections=32))
        finally:
            if bg is not None:
                res["background"] = finish_client(bg)
        out[label] = res
    return out


def cell_idle(stack, args) -> dict[str, dict]:
    opts = ["--connections", str(args.idle), "--timeout", "10", "--open-deadline", "20"]
    return with_background(stack, args, "idle", opts, ready_line=True)


def cell_slow(stack, args) -> dict[str, dict]:
    opts = ["--connections", "200", "--rate", "50000", "--timeout", "60"]
    return with_background(stack, args, "slow", opts, ready_line=False)


def cell_upload(stack, args) -> dict[str, dict]:
    own = own_client(stack.port, "upload", "--connections", "32", "--duration", str(args.duration),
                     "--body-size", str(5 << 20), "--timeout", "30")  # fmt: skip
    res = {"rps": own.get("rps", 0), "mb_per_s": own.get("mb_per_s", 0), "p50": own.get("p50"),
           "p99": own.get("p99"), "errors": own.get("error", 0), "lost": own.get("lost", 0),
           "sent": own.get("sent", 0), "kinds": own.get("errors_by_kind", {})}  # fmt: skip
    return {"32 x 5 MB POST": res}


def tls_facts(port: int) -> dict:
    """What a TLS row negotiates with an OpenSSL client offering its defaults (as wrk does):
    protocol, suite, key exchange group, and whether the server resumes a session at all."""
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", run.TLS_HOST,
         "-reconnect", "-no_ign_eof"],
        input="", capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return parse_s_client(proc.stdout)


def parse_s_client(out: str) -> dict:
    """`openssl s_client -reconnect`: the first handshake's facts, and how many of the
    reconnections resumed the session ("Reused")."""
    facts = {"protocol": "?", "cipher": "?", "group": "?"}
    m = re.search(r"^(?:New|Reused), (TLSv[\d.]+), Cipher is (\S+)", out, re.MULTILINE)
    if m:
        facts["protocol"], facts["cipher"] = m.groups()
    # "X25519, 253 bits", or for a NIST curve "ECDH, prime256v1, 256 bits"
    m = re.search(r"^(?:Server|Peer) Temp Key: (.+)$", out, re.MULTILINE)
    if m:
        parts = [x.strip() for x in m.group(1).split(",")]
        facts["group"] = parts[1] if parts[0] == "ECDH" and len(parts) > 2 else parts[0]
    handshakes = re.findall(r"^(New|Reused), TLSv", out, re.MULTILINE)
    facts["resumed"] = f"{handshakes[1:].count('Reused')}/{max(len(handshakes) - 1, 0)}"
    return facts


def cell_https(stack, args) -> dict[str, dict]:
    """Keep-alive, then a new connection per request (`Connection: close`: over https a full
    handshake each), over the stack's scheme: wrk -c64, then our loss client."""
    out = {}
    for mode, variant in (("keep-alive", "keep-alive"), ("close", "new connection")):
        res = wrk_with_cpu(stack, mode, args.duration, 64)
        own = loss(stack, args, mode)
        # wrk times a request from when its connection is up: our client's p99 counts the
        # connection and the handshake too.
        res["own_p99"] = own.get("p99", float("nan"))
        out[variant] = merge_loss(res, own)
    if stack.scheme == "https":
        out["new connection"]["tls"] = tls_facts(stack.port)
    return out


CELLS = {"hello": cell_hello, "mixed": cell_mixed, "idle": cell_idle, "slow": cell_slow,
         "upload": cell_upload, "https": cell_https}  # fmt: skip


# -- main ----------------------------------------------------------------------------------


def stop_everything(servers) -> None:
    for proc in list(_clients):
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(Exception):
            proc.wait(5)
    for s in servers:
        with contextlib.suppress(Exception):
            s.stop()


def runs(args, workload: str) -> list[tuple[str, list]]:
    """[(setting label, [(stack class, procs)])] for one workload: one group of servers runs at
    a time (the https workload has its own stacks)."""
    kinds = HTTPS if workload == "https" else HEADLINE + (EXTRA if args.extra_rows else [])
    if args.only:
        kinds = [k for k in kinds if any(k.name.startswith(o) for o in args.only)]
    out = [(f"{n} procs", [(k, n) for k in kinds]) for n in args.procs]
    if args.recommended:
        rec = [(k, RECOMMENDED[k.key]) for k in kinds if k.key in RECOMMENDED]
        out.append(("recommended", rec))
    return out


def start_group(group, setting, venv, workdir, deploy, nofile, results, servers: list, certs=None) -> None:
    """Start every stack of a group into ``servers`` (filled as they start, so that an
    interrupted start-up still stops them); one that does not answer is reported, left out."""
    workdir.mkdir(parents=True, exist_ok=True)
    for kind, procs in group:
        s = kind(venv, procs, workdir)
        s.deploy, s.nofile, s.certs = deploy, nofile, certs
        s.label = f"{s.name} x{procs}" if setting == "recommended" else s.name
        servers.append(s)
        try:
            s.start()
        except (OSError, subprocess.SubprocessError) as exc:
            s.start_error = exc
    for s in list(servers):
        try:
            if getattr(s, "start_error", None):
                raise RuntimeError(f"start: {s.start_error}")
            run.wait_http(s.port, tls=s.scheme == "https")
            run.run_wrk(s.port, "keep-alive", 1, 16, s.scheme)  # warm-up
        except RuntimeError as exc:  # a stack that does not start is a result too
            print(f"{setting} {s.label} did not start: {exc} (logs in {workdir})", flush=True)
            failed = {"rps": 0, "errors": 1, "lost": 0, "why": str(exc)}
            results.setdefault((setting, "start", "failed", s.label), []).append(failed)
            s.stop()
            servers.remove(s)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--procs", default="2,4", help="Python processes per stack, comma-separated")
    p.add_argument("--recommended", action="store_true", help="add each peer's own worker count")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=10, help="seconds per cell")
    p.add_argument("--workloads", default="hello,mixed,idle,slow,upload,https")
    p.add_argument("--only", nargs="*", help="subset of stacks (by name prefix)")
    p.add_argument("--extra-rows", action="store_true", help="labelled non-deploy rows too")
    p.add_argument("--idle", type=int, default=5000, help="idle connections (idle workload)")
    p.add_argument("--loss-requests", type=int, default=50, help="own client, per connection")
    p.add_argument("--m2-setting", action="append", metavar="KEY=JSON")
    p.add_argument("--dispatcher-args", help="replace deploy.json's dispatcher flags")
    p.add_argument("--handler-args", help="replace deploy.json's handler flags")
    p.add_argument("--json", help="also write every result to this file")
    args = p.parse_args()
    args.procs = [int(x) for x in args.procs.split(",") if x]
    workloads = [w for w in args.workloads.split(",") if w]
    if "fleet" in workloads:
        workloads.remove("fleet")
        fleet = [sys.executable, str(BENCH / "fleet.py"), "--duration", str(args.duration)]
    else:
        fleet = None
    unknown = [w for w in workloads if w not in CELLS]
    if unknown:
        p.error(f"unknown workloads {unknown}")
    deploy = load_deploy(args)
    nofile = raise_fd_limit()
    if not run.ensure_tools():
        return 2
    venv = run.ensure_venv()
    workdir = Path(tempfile.mkdtemp(prefix="ringmaster-bench-whole-"))
    certs = Certs(workdir / "tls").make() if "https" in workloads else None
    # Stop cleanly on SIGTERM, and on SIGINT even when started in the background (where a
    # non-interactive shell has SIGINT ignored).
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    results: dict = {}  # (setting, workload, variant, stack) -> [round results]
    started = time.monotonic()
    m2_version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "mongrel2-core"],
                                capture_output=True, text=True).stdout  # fmt: skip
    # "+ringmaster" is our build (tools/bootstrap.sh installs it), as the roles deploy.
    print(f"mongrel2-core {m2_version or 'not a package'}; fd limit {nofile}; "
          f"deploy {json.dumps(deploy['mongrel2'])} "
          f"dispatcher {deploy['dispatcher']['args']} handler {deploy['handler']['args']}")  # fmt: skip
    servers: list = []
    try:
        plans = {w: dict(runs(args, w)) for w in workloads}
        for setting in dict.fromkeys(label for w in workloads for label in plans[w]):
            for r in range(args.rounds):
                for workload in workloads:
                    group = plans[workload].get(setting)
                    if not group:
                        continue
                    # Fresh servers for every workload: what one cell breaks or leaves behind
                    # (held connections, a wedged link) does not carry into the next.
                    where = workdir / f"{setting.replace(' ', '')}-r{r + 1}-{workload}"
                    servers = []
                    start_group(group, setting, venv, where, deploy, nofile, results, servers, certs)
                    turn = r % max(len(servers), 1)
                    for s in servers[turn:] + servers[:turn]:
                        try:
                            cell = CELLS[workload](s, args)
                        except Exception as exc:  # a broken cell is a result, not the end
                            cell = {"failed": {"rps": 0, "errors": 1, "lost": 0, "why": repr(exc)}}
                        for variant, res in cell.items():
                            results.setdefault((setting, workload, variant, s.label), []).append(res)
                            print(f"{setting} round {r + 1} {workload:6} {s.label:44} {variant:18} "
                                  f"{line(res)}", flush=True)  # fmt: skip
                    stop_everything(servers)
                    servers = []
    except KeyboardInterrupt:
        print("interrupted: stopping everything", file=sys.stderr)
    finally:
        stop_everything(servers)
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps([[list(k), v] for k, v in results.items()], default=str))
    if fleet:
        subprocess.run(fleet, check=False)
    print(f"\ntotal {time.monotonic() - started:.0f}s; logs in {workdir}")
    return 0


def line(res: dict) -> str:
    text = (f"{res.get('rps', 0):8.0f} req/s p50 {fmt(res.get('p50'))} p99 {fmt(res.get('p99'))} "
            f"err {res.get('errors', 0)} lost {res.get('lost', 0)}/{res.get('sent', 0)}")  # fmt: skip
    if "mb_per_s" in res:
        text += f" {res['mb_per_s']:.1f} MB/s"
    if "cpu" in res:
        text += " cpu " + " ".join(f"{g} {v:.0f}" for g, v in res["cpu"].items())
    if "background" in res:
        b = res["background"]
        text += (f" | bg ok {b.get('ok', 0)} err {b.get('error', 0)} lost {b.get('lost', 0)}"
                 + (f" held {b['held']} closed {b['closed_by_server']}" if "held" in b else "")
                 + (f" unfinished {b['unfinished']}" if "unfinished" in b else "")
                 + (f" {b['errors_by_kind']}" if b.get("errors_by_kind") else ""))  # fmt: skip
    if "own_p99" in res:
        text += f" own p99 {fmt(res['own_p99'])}"
    if "tls" in res:
        text += " | " + tls_text(res["tls"])
    if "why" in res:
        text += f" {res['why']}"
    return text


def tls_text(facts: dict) -> str:
    return f"{facts['protocol']} {facts['cipher']} {facts['group']}, resumed {facts['resumed']}"


def fmt(x) -> str:
    return "  n/a" if x is None or x != x else f"{x:.2f}"


def clean(rounds: list[dict]) -> bool:
    """No error, no lost request: in the cell and in its background load."""
    for r in rounds:
        bg = r.get("background", {})
        if r.get("errors") or r.get("lost") or bg.get("error") or bg.get("lost"):
            return False
    return True


def base_of(workload: str, variant: str, name: str) -> str:
    """The row a row's ratio is to: nginx+gunicorn sync at the same process count; in the https
    workload a TLS row's keep-alive to its own plain twin (what TLS costs that stack), and its
    new connections to nginx TLS 1.2's (the like-for-like handshake)."""
    kind = next((k for k in HTTPS if k.name == name.rsplit(" x", 1)[0]), None)
    if workload == "https" and kind is not None and kind.scheme == "https":
        return kind.plain if variant == "keep-alive" else HTTPS_BASE
    return BASE


def rounds_of(results: dict, setting: str, workload: str, variant: str, name: str = BASE):
    """A stack's rounds in one cell (in the recommended group its label ends with " xN")."""
    for (s, w, v, label), rounds in results.items():
        if (s, w, v) == (setting, workload, variant) and label.rsplit(" x", 1)[0] == name:
            return rounds
    return None


def report(results: dict, args) -> None:
    def med(rounds, key):
        vals = [r[key] for r in rounds if r.get(key) is not None]
        return statistics.median(vals) if vals else float("nan")

    print(f"\nmedians of {args.rounds} round(s) x {args.duration:g}s; ratios to {BASE} at the same "
          "process count, only for rows with no error and no lost request (both sides);\n"
          f"https TLS rows: keep-alive to the same stack over plain http, new connection to {HTTPS_BASE}")  # fmt: skip
    header = (f"{'setting':11} {'workload':8} {'variant':18} {'stack':44} {'req/s':>8} {'p50 ms':>7} "
              f"{'p99 ms':>8} {'err':>4} {'lost/sent':>11} {'ratio':>7}  extra")  # fmt: skip
    print(header)
    print("-" * len(header))
    for (setting, workload, variant, label), rounds in results.items():
        base = rounds_of(results, setting, workload, variant, base_of(workload, variant, label))
        ratio = "   n/a"
        if base and clean(base) and clean(rounds) and med(base, "rps"):
            ratio = f"{med(rounds, 'rps') / med(base, 'rps'):6.2f}x"
        extra = ""
        if "mb_per_s" in rounds[0]:
            extra = f"{med(rounds, 'mb_per_s'):.1f} MB/s"
        if "slow_p99" in rounds[0]:
            extra = f"slow p99 {fmt(med(rounds, 'slow_p99'))} ms"
        if "cpu" in rounds[0]:
            extra = "cpu us/req " + ", ".join(
                f"{g} {statistics.median(r['cpu'][g] for r in rounds):.0f}"
                f" ({rounds[0]['nprocs'][g]})" for g in rounds[0]["cpu"]
            )  # fmt: skip
        if "own_p99" in rounds[0]:
            extra += f" | own client p99 {fmt(med(rounds, 'own_p99'))} ms"
        if "tls" in rounds[0]:
            extra += " | " + tls_text(rounds[0]["tls"])
        errs = sum(r.get("errors", 0) for r in rounds)
        lost = sum(r.get("lost", 0) for r in rounds)
        sent = sum(r.get("sent", 0) for r in rounds)
        print(f"{setting:11} {workload:8} {variant:18} {label:44} {med(rounds, 'rps'):8.0f} "
              f"{fmt(med(rounds, 'p50')):>7} {fmt(med(rounds, 'p99')):>8} {errs:4d} "
              f"{lost:>5}/{sent:<5} {ratio:>7}  {extra}")  # fmt: skip
    targets(results)


def targets(results: dict) -> None:
    """Issue 15's targets for the default dispatcher mode; PASS only on clean rows."""
    rm = RingmasterDispatcher.name
    rmt = RingmasterDispatcherThreads.name  # the mixed workload's targets are "ours with threads"
    rm_tls = RingmasterDispatcherTLS.name  # https: the default deployment with mongrel2_tls
    print("\ntargets (ringmaster dispatcher; numbered groups: same process count):")
    settings = sorted({k[0] for k in results})

    def get(setting, workload, variant, name):
        return rounds_of(results, setting, workload, variant, name)

    def med(rounds, key):
        return statistics.median(r[key] for r in rounds)

    for setting in settings:
        checks = []
        mixed = "95% fast / 5% slow"
        if setting == "recommended":
            # Each stack in its own recommended configuration: ours must have the best fast p99.
            # (Our other rows are not our recommended configuration for this workload.)
            a = get(setting, "mixed", mixed, rmt)
            peers = [r for (s, w, v, label), r in results.items()
                     if (s, w, v) == (setting, "mixed", mixed) and not label.startswith("ringmaster")]  # fmt: skip
            if a and peers:
                best = min(med(r, "p99") for r in peers)
                checks.append(("mixed fast p99 the best of every stack (own recommended counts)",
                               [a, *peers], med(a, "p99") <= best))  # fmt: skip
        a, b = get(setting, "hello", "keep-alive", rm), get(setting, "hello", "keep-alive", BASE)
        if a and b:
            checks.append(("hello keep-alive >= 1.5x nginx+gunicorn sync", [a, b],
                           med(a, "rps") >= 1.5 * med(b, "rps")))  # fmt: skip
        a = get(setting, "mixed", "95% fast / 5% slow", rmt)
        b = get(setting, "mixed", "95% fast / 5% slow", BASE)
        if a and b:
            checks.append(("mixed fast p99 <= 1/3 of nginx+gunicorn sync", [a, b],
                           med(a, "p99") * 3 <= med(b, "p99")))  # fmt: skip
        for w in ("idle", "slow"):
            a, b = get(setting, w, "without", rm), get(setting, w, "with", rm)
            if a and b:
                checks.append((f"{w}: req/s drop <= 10%, p99 within 2x", [a, b],
                               med(b, "rps") >= 0.9 * med(a, "rps")
                               and med(b, "p99") <= 2 * med(a, "p99")))  # fmt: skip
        tls, plain = get(setting, "https", "keep-alive", rm_tls), get(setting, "https", "keep-alive", rm)
        if tls and plain:
            checks.append(("https keep-alive >= 0.8x plain http (Mongrel2 TLS, same run)",
                           [tls, plain], med(tls, "rps") >= 0.8 * med(plain, "rps")))  # fmt: skip
        tls = get(setting, "https", "new connection", rm_tls)
        for peer, text in ((HTTPS_BASE, "nginx TLS 1.2, same suites"),
                           (NginxTLSDefaultGunicornSync.name, "nginx TLS 1.3, Debian's")):  # fmt: skip
            b = get(setting, "https", "new connection", peer)
            if tls and b:
                checks.append((f"https new connections/s >= 0.8x {text} + gunicorn sync", [tls, b],
                               med(tls, "rps") >= 0.8 * med(b, "rps")))  # fmt: skip
        for text, rows, ok in checks:
            verdict = "PASS" if ok and all(clean(r) for r in rows) else "FAIL"
            if ok and verdict == "FAIL":
                text += " (errors or lost requests: no PASS)"
            print(f"  {setting:11} [{verdict}] {text}")


if __name__ == "__main__":
    sys.exit(main())
