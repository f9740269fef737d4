"""``ringmaster-wsgi [options] dotted.module:app send_spec [recv_spec]``.

With ``--dispatcher`` the one spec argument lists ringmaster-dispatchers instead of Mongrel2
fronts: ``ringmaster-wsgi --dispatcher hello:app tcp://front1:9999,tcp://front2:9999``.
``ringmaster-wsgi --check [--check-path /health] hello:app`` only tries the app once (see check.py).
"""

import argparse
import importlib
import os
import sys

from ringmaster_handler.curve import ClientSide, CurveError, load_keypair, load_server_keys
from ringmaster_handler.exchange import DEFAULT_STREAM_RATE
from ringmaster_handler.forwarded import TrustError, parse_allow_ips
from ringmaster_handler.hsts import with_hsts
from ringmaster_handler.options import (
    add_curve_group,
    add_log_level,
    add_subscribe_timeout,
    add_version,
    log_to_stderr,
)
from ringmaster_handler.specs import SpecError, pair_specs, parse_spec_list
from ringmaster_handler.uploads import DEFAULT_TEMP_STORE

# (loop.TIMEOUT_GRACE, without importing zmq for --help and usage errors)
TIMEOUT_GRACE = 2.0

PROG = "ringmaster-wsgi"


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Serve a WSGI application to Mongrel2 over ZeroMQ.",
        epilog=(
            "Specs: tcp://[ident@]host:port or ipc://[ident@]path; several Mongrel2 fronts as "
            "comma-separated lists of equal length. Without recv_spec each reply endpoint is "
            "the request endpoint's port + 1. With --dispatcher, send_spec lists "
            "ringmaster-dispatcher endpoints (their bind_spec) and there is no recv_spec."
        ),
    )
    p.add_argument("app", help="WSGI app as dotted.module:attribute (default attribute: app)")
    p.add_argument("send_spec", nargs="?", help="where Mongrel2 sends requests (its send_spec)")
    p.add_argument("recv_spec", nargs="?", help="where Mongrel2 receives replies (recv_spec)")
    p.add_argument(
        "--dispatcher",
        action="store_true",
        help=(
            "take requests from ringmaster-dispatchers at send_spec (no loss when handlers "
            "stop or start) instead of straight from Mongrel2"
        ),
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help=(
            "with --dispatcher: serve N requests at once in this process, one per thread, "
            "each thread asking the dispatchers for work (the process's credit is N). Only "
            "for thread-safe apps (wsgi.multithread is then true); default: 1"
        ),
    )
    add_log_level(p)
    p.add_argument(
        "--upload-root",
        default="/var/lib/mongrel2",
        metavar="DIR",
        help="Mongrel2's chroot, to find spooled uploads (default: /var/lib/mongrel2)",
    )
    p.add_argument(
        "--upload-temp-store",
        default=DEFAULT_TEMP_STORE,
        metavar="PATTERN",
        help=(
            "Mongrel2's upload.temp_store setting: only spooled uploads with names this "
            f"mkstemp pattern gives are accepted (default: {DEFAULT_TEMP_STORE})"
        ),
    )
    p.add_argument(
        "--max-body-size",
        type=int,
        default=0,
        metavar="BYTES",
        help=(
            "answer 413 to a request body above BYTES, streamed (--dispatcher) or spooled "
            "by Mongrel2 (0: no limit)"
        ),
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help=(
            "the dispatcher's request timeout: a request that sends nothing for SECONDS "
            f"(+{TIMEOUT_GRACE:g}s) ends this process by SIGALRM, for its supervisor to "
            "replace; apps must not use SIGALRM (default: 0, off)"
        ),
    )
    recycle = p.add_argument_group(
        "recycling (the process finishes its requests and exits 0 for circus to replace it; "
        "with --dispatcher no request is lost)"
    )
    recycle.add_argument(
        "--max-requests",
        type=int,
        default=0,
        metavar="N",
        help="leave after N requests, counted across --threads (default: 0, no limit)",
    )
    recycle.add_argument(
        "--max-requests-jitter",
        type=int,
        default=0,
        metavar="J",
        help="add a random 0..J to --max-requests, per process (default: 0)",
    )
    recycle.add_argument(
        "--max-age",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="leave after SECONDS (plus up to 10%% random, per process; default: 0, no limit)",
    )
    recycle.add_argument(
        "--max-rss",
        type=float,
        default=0.0,
        metavar="MIB",
        help=(
            "leave once the process's resident memory is above MIB, checked after every "
            "request and every second while idle (default: 0, no limit)"
        ),
    )
    p.add_argument(
        "--script-name-from-route",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="set SCRIPT_NAME to a plain route prefix and strip it from PATH_INFO (default: on)",
    )
    p.add_argument(
        "--hsts-max-age",
        type=int,
        default=0,
        metavar="SECONDS",
        help=(
            "add Strict-Transport-Security: max-age=SECONDS to responses to requests that came "
            "over TLS (wsgi.url_scheme https) when the app sets none (default: 0, off)"
        ),
    )
    p.add_argument(
        "--hsts-include-subdomains",
        action="store_true",
        help="with --hsts-max-age: also includeSubDomains",
    )
    p.add_argument(
        "--forwarded-allow-ips",
        default="",
        metavar="ADDRS",
        help=(
            "comma-separated addresses or networks of TLS proxies in front of Mongrel2: only for "
            "requests Mongrel2 got from one of them, the last X-Forwarded-For entry becomes "
            "REMOTE_ADDR and X-Forwarded-Proto (http or https) wsgi.url_scheme; Mongrel2 needs "
            "no_clobber_xff (default: none, the headers are never believed)"
        ),
    )
    p.add_argument("--chdir", metavar="DIR", help="change to DIR before importing the app")
    p.add_argument(
        "--pythonpath",
        metavar="DIR",
        action="append",
        default=[],
        help="add DIR to sys.path before importing the app (repeatable)",
    )
    add_subscribe_timeout(p)
    p.add_argument(
        "--stream-rate",
        type=float,
        default=DEFAULT_STREAM_RATE / 2**20,
        metavar="MIB_PER_S",
        help=(
            "pace streamed responses (no Content-Length or several chunks) to this many MiB/s "
            "per response, so Mongrel2's 16-message delivery queue does not overflow "
            f"(default: {DEFAULT_STREAM_RATE // 2**20})"
        ),
    )
    curve = add_curve_group(
        p,
        "CURVE (with --dispatcher: encrypted, authenticated connections; both options or neither)",
    )
    curve.add_argument(
        "--curve-server-keys",
        metavar="FILE",
        help=(
            "each dispatcher's public key: lines '<endpoint> <Z85 public key>', one for every "
            "endpoint in the spec list ('#' starts a comment)"
        ),
    )
    p.add_argument(
        "--check",
        action="store_true",
        help=(
            "import the app, call it once with a GET for --check-path and exit: 0 when it "
            "answers below 500, 1 (2 when it cannot be imported) with the reason on stderr"
        ),
    )
    p.add_argument(
        "--check-path",
        default="/",
        metavar="PATH",
        help="path (and ?query) of the --check request; empty to only import (default: /)",
    )
    add_version(p)
    return p


def curve_options(args: argparse.Namespace, endpoints: list[str]) -> ClientSide | None:
    """The CURVE settings, checked and loaded before anything starts; None without them."""
    given = (args.curve_secret_key, args.curve_server_keys)
    if not any(given):
        return None
    if not args.dispatcher:
        raise UsageError("CURVE needs --dispatcher: Mongrel2's own sockets have no encryption")
    if not all(given):
        raise UsageError("--curve-secret-key and --curve-server-keys go together")
    keypair = load_keypair(args.curve_secret_key)
    return ClientSide(keypair, load_server_keys(args.curve_server_keys, endpoints))


def load_app(spec: str):
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        raise UsageError(f"bad app {spec!r}: expected dotted.module:attribute")
    if not all(part.isidentifier() for part in attr.split(".")):
        raise UsageError(f"bad app {spec!r}: {attr!r} is not an attribute name")
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:
        raise UsageError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise UsageError(f"{spec!r} is not callable (it is a {type(obj).__name__})")
    return obj


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log_to_stderr(args.log_level)
    try:
        if args.send_spec is None and not args.check:
            raise UsageError("send_spec is required (except with --check)")
        if args.send_spec is None:
            fronts, dispatchers = [], []
        elif args.dispatcher:
            if args.recv_spec is not None:
                raise UsageError("--dispatcher takes one spec list (the dispatchers), not two")
            dispatchers = parse_spec_list(args.send_spec)
            if any(d.ident for d in dispatchers):
                raise UsageError("dispatcher specs take no ident@")
            fronts = []
        else:
            dispatchers = []
            fronts = pair_specs(args.send_spec, args.recv_spec)
        curve = curve_options(args, [d.url for d in dispatchers])
        try:
            trusted_proxies = parse_allow_ips(args.forwarded_allow_ips)
        except TrustError as exc:
            raise UsageError(f"--forwarded-allow-ips: {exc}") from None
        if args.chdir:
            try:
                os.chdir(args.chdir)
            except OSError as exc:
                raise UsageError(f"cannot chdir to {args.chdir!r}: {exc.strerror}") from None
        # Like gunicorn: the app is looked up relative to the working directory.
        for path in [*reversed(args.pythonpath), os.getcwd()]:
            if path not in sys.path:
                sys.path.insert(0, path)
        app = load_app(args.app)
        if args.hsts_max_age < 0:
            raise UsageError("--hsts-max-age must be 0 (off) or positive")
        if args.hsts_include_subdomains and not args.hsts_max_age:
            raise UsageError("--hsts-include-subdomains needs --hsts-max-age")
        if args.hsts_max_age:
            app = with_hsts(app, args.hsts_max_age, args.hsts_include_subdomains)
        if args.stream_rate <= 0:
            raise UsageError("--stream-rate must be positive")
        if args.max_body_size < 0:
            raise UsageError("--max-body-size must be 0 (no limit) or positive")
        if args.request_timeout < 0:
            raise UsageError("--request-timeout must be 0 (off) or positive")
        if args.threads < 1:
            raise UsageError("--threads must be 1 or more")
        if args.threads > 1 and not args.dispatcher:
            # Mongrel2's PUSH deals requests blindly and out of order to every PULL socket;
            # only the dispatcher can give a thread work when it is free (see README).
            raise UsageError("--threads above 1 needs --dispatcher (direct mode: use processes)")
        for name in ("max_requests", "max_requests_jitter", "max_age", "max_rss"):
            if getattr(args, name) < 0:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} must be 0 (off) or positive")
        if args.max_requests_jitter and not args.max_requests:
            raise UsageError("--max-requests-jitter needs --max-requests")
        if not args.upload_temp_store.endswith("XXXXXX"):
            raise UsageError("--upload-temp-store must end in XXXXXX, as Mongrel2's does")
    except (SpecError, UsageError, CurveError) as exc:
        print(f"{PROG}: {'check failed' if args.check else 'error'}: {exc}", file=sys.stderr)
        return 2

    if args.check:
        from ringmaster_handler.check import report

        return report(PROG, args.app, args.check_path, app)

    from ringmaster_handler.loop import HandlerLoop, describe_fronts
    from ringmaster_handler.proctitle import set_title
    from ringmaster_handler.recycle import Recycler

    recycler = Recycler(args.max_requests, args.max_requests_jitter, args.max_age, args.max_rss)

    options = {
        "upload_root": args.upload_root,
        "script_name_from_route": args.script_name_from_route,
        "stream_rate": args.stream_rate * 2**20,
        "upload_store": args.upload_temp_store,
        "request_timeout": args.request_timeout,
        "max_body_size": args.max_body_size,
        "recycler": recycler,
        "trusted_proxies": trusted_proxies,
    }
    if args.dispatcher:
        from ringmaster_handler.worker import WorkerLoop

        urls = [d.url for d in dispatchers]
        # ps and pgrep show how many requests the process takes at once.
        threads = f" ({args.threads} threads)" if args.threads > 1 else ""
        set_title(f"{PROG} {args.app}{threads} -> {args.send_spec}")
        if args.threads == 1:
            loop = WorkerLoop(app, urls, app_name=args.app, curve=curve, **options)
            recycler.on_limit = loop.request_stop
            return loop.run()
        from ringmaster_handler.threads import ThreadedWorker

        def make_loop(index: int, alarm, proc_id: str) -> WorkerLoop:
            return WorkerLoop(
                app,
                urls,
                app_name=args.app,
                curve=curve,
                proc_id=proc_id,
                threads=args.threads,
                alarm=alarm,
                multithread=True,
                **options,
            )

        return ThreadedWorker(make_loop, args.threads, args.request_timeout, recycler).run()
    set_title(f"{PROG} {args.app} -> {describe_fronts(fronts)}")
    loop = HandlerLoop(app, fronts, subscribe_timeout=args.subscribe_timeout, **options)
    recycler.on_limit = loop.request_stop
    return loop.run()


if __name__ == "__main__":
    sys.exit(main())
