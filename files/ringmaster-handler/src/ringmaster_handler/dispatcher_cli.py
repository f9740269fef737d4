"""``ringmaster-dispatcher [options] m2_send_spec m2_recv_spec bind_spec``."""

import argparse
import sys

from ringmaster_handler.curve import CurveError, ServerSide, load_authorized, load_keypair
from ringmaster_handler.options import (
    add_curve_group,
    add_log_level,
    add_subscribe_timeout,
    add_version,
    log_to_stderr,
)
from ringmaster_handler.specs import SpecError, pair_specs, parse_spec_list

PROG = "ringmaster-dispatcher"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Take requests from one Mongrel2 handler route and give each to a "
            "ringmaster-wsgi --dispatcher process that has room; relay the replies."
        ),
        epilog=(
            "Specs: tcp://host:port or ipc://path. m2_send_spec and m2_recv_spec are the "
            "route's send_spec and recv_spec (Mongrel2 binds them; we connect; an ident@ is "
            "accepted and ignored), comma-separated and in the same order for a route on "
            "several Mongrel2 servers (e.g. its TLS and its plain-HTTP one). bind_spec is "
            "where handlers connect, e.g. tcp://0.0.0.0:9999 (comma-separated to bind several)."
        ),
    )
    p.add_argument("m2_send_spec", help="where Mongrel2 sends requests (its send_spec)")
    p.add_argument("m2_recv_spec", help="where Mongrel2 receives replies (its recv_spec)")
    p.add_argument("bind_spec", help="where handlers connect (we bind)")
    add_log_level(p)
    p.add_argument(
        "--prefetch",
        type=int,
        default=16,
        metavar="N",
        help=(
            "GET/HEAD requests that may wait inside a busy handler when no handler is free, "
            "so it never idles waiting for the next one (default: 16; 0: one request per "
            "handler, always)"
        ),
    )
    p.add_argument(
        "--steal-after",
        type=float,
        default=0.01,
        metavar="SECONDS",
        help=(
            "move a request that has waited this long inside a busy handler to a free one "
            "(default: 0.01)"
        ),
    )
    p.add_argument(
        "--queue-limit",
        type=int,
        default=10_000,
        metavar="N",
        help="answer 503 at once when this many requests already wait for a handler",
    )
    p.add_argument(
        "--queue-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help=(
            "answer 503 to a request no handler has started this long after it arrived "
            "(default: 10; 0: wait as long as it takes)"
        ),
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help=(
            "answer 504 to a request a handler started and that produced no reply message "
            "for this long (for a streamed upload: counted from the end of its body), and "
            "give that handler no more work (default: 0, no limit)"
        ),
    )
    p.add_argument(
        "--max-body-size",
        type=int,
        default=0,
        metavar="BYTES",
        help=(
            "answer 413 to a streamed upload (Mongrel2 upload.stream) whose body is larger, "
            "and stop Mongrel2 reading it (default: 0, no limit)"
        ),
    )
    p.add_argument(
        "--max-handlers-per-key",
        type=int,
        default=64,
        metavar="N",
        help=(
            "with CURVE, refuse a handler's hello when this many handlers with the same key "
            "are connected already (default: 64; 0: no limit)"
        ),
    )
    p.add_argument(
        "--name",
        default="",
        metavar="NAME",
        help=(
            "the app (circus watcher) this dispatcher serves: in every log line, access log "
            "line and metric (default: none)"
        ),
    )
    p.add_argument(
        "--syslog-prefix",
        action="store_true",
        help=(
            "start log lines with <N>, their syslog priority, for the journal (systemd "
            "SyslogLevelPrefix; circus passes watcher output on unchanged): warnings then "
            "reach the journal at warning priority"
        ),
    )
    obs = p.add_argument_group("access log and metrics")
    obs.add_argument(
        "--access-log",
        metavar="PATH",
        help=(
            "write one line per finished request to PATH ('-': stdout); a file moved or "
            "removed (logrotate) is reopened within a second (default: no access log)"
        ),
    )
    obs.add_argument(
        "--access-log-format",
        choices=["json", "common"],
        default="json",
        help="JSON lines, or the common log format plus host, id, ms, retries (default: json)",
    )
    obs.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve Prometheus metrics on http://ADDRESS:PORT/metrics (default: 0, off)",
    )
    obs.add_argument(
        "--metrics-address",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address for --metrics-port (default: 127.0.0.1)",
    )
    p.add_argument(
        "--heartbeat",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help=(
            "ZeroMQ heartbeat interval on handler connections; a silent peer is dropped "
            "after 3 intervals (default: 1)"
        ),
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on SIGTERM, how long to wait for handlers to finish what they hold (default: 10)",
    )
    add_subscribe_timeout(p)
    curve = add_curve_group(
        p, "CURVE (encrypted, authenticated handler connections; both options or neither)"
    )
    curve.add_argument(
        "--curve-authorized-keys",
        metavar="DIR",
        help=(
            "directory of the public-key certificates (*.key) of the handlers allowed to "
            "connect; read again when it changes"
        ),
    )
    add_version(p)
    return p


def curve_options(args: argparse.Namespace) -> ServerSide | None:
    """The CURVE settings, checked and loaded before anything starts; None without them."""
    given = (args.curve_secret_key, args.curve_authorized_keys)
    if not any(given):
        return None
    if not all(given):
        raise CurveError("--curve-secret-key and --curve-authorized-keys go together")
    keypair = load_keypair(args.curve_secret_key)
    load_authorized(args.curve_authorized_keys)  # (any bad file stops us here, not later)
    return ServerSide(keypair, args.curve_authorized_keys)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_to_stderr(args.log_level, args.name, args.syslog_prefix)
    try:
        pairs = pair_specs(args.m2_send_spec, args.m2_recv_spec)
        binds = parse_spec_list(args.bind_spec)
        if any(b.ident for b in binds):
            raise SpecError("bind_spec takes no ident@")
        if args.prefetch < 0:
            raise SpecError("--prefetch must be 0 or more")
        for name in ("steal_after", "heartbeat", "drain_timeout", "subscribe_timeout"):
            if getattr(args, name) <= 0:
                raise SpecError(f"--{name.replace('_', '-')} must be positive")
        if args.queue_timeout < 0:
            raise SpecError("--queue-timeout must be 0 or more")
        for name in ("request_timeout", "max_body_size", "max_handlers_per_key"):
            if getattr(args, name) < 0:
                raise SpecError(f"--{name.replace('_', '-')} must be 0 or more")
        if not 0 <= args.metrics_port <= 65535:
            raise SpecError("--metrics-port must be 0 (off) or a port number")
        if args.queue_limit < 1:
            raise SpecError("--queue-limit must be positive")
        curve = curve_options(args)
    except (SpecError, CurveError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2

    import zmq

    from ringmaster_handler.dispatcher import Dispatcher
    from ringmaster_handler.proctitle import set_title

    set_title(f"{PROG} {pairs[0][0].url} -> {args.bind_spec}", b"ringmaster-disp")
    dispatcher = Dispatcher(
        [send.url for send, _ in pairs],
        [recv.url for _, recv in pairs],
        [b.url for b in binds],
        prefetch=args.prefetch,
        steal_after=args.steal_after,
        queue_limit=args.queue_limit,
        queue_timeout=args.queue_timeout,
        request_timeout=args.request_timeout,
        max_body_size=args.max_body_size,
        max_handlers_per_key=args.max_handlers_per_key,
        heartbeat=args.heartbeat,
        drain_timeout=args.drain_timeout,
        subscribe_timeout=args.subscribe_timeout,
        curve=curve,
        name=args.name,
        access_log=args.access_log,
        access_log_format=args.access_log_format,
        metrics_address=args.metrics_address,
        metrics_port=args.metrics_port,
        recorder_args=(
            "--log-level",
            args.log_level,
            *(["--syslog-prefix"] if args.syslog_prefix else []),
        ),
    )
    try:
        return dispatcher.run()
    except zmq.ZMQError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except CurveError as exc:  # the key directory went away after the check above
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
