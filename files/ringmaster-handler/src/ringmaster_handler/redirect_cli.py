"""``ringmaster-redirect [options] --host NAME... m2_send_spec m2_recv_spec``."""

import argparse
import sys

from ringmaster_handler.options import (
    add_log_level,
    add_subscribe_timeout,
    add_version,
    log_to_stderr,
)
from ringmaster_handler.redirect import Redirector, Rules
from ringmaster_handler.specs import SpecError, parse_spec

PROG = "ringmaster-redirect"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Answer every request of a Mongrel2 handler route with a redirect to the same path "
            "and query over https (301 for GET and HEAD, 308 for other methods)."
        ),
        epilog=(
            "The host in Location is the request's Host when it is one of the --host names (or "
            "matches a *.domain one, one label deep), else --fallback-host, else the answer is 421."
        ),
    )
    p.add_argument("m2_send_spec", help="where Mongrel2 sends requests (its send_spec)")
    p.add_argument("m2_recv_spec", help="where Mongrel2 receives replies (its recv_spec)")
    p.add_argument(
        "--host",
        action="append",
        required=True,
        metavar="NAME",
        help="a host name to redirect to, or *.domain; repeat for each",
    )
    p.add_argument(
        "--fallback-host",
        metavar="NAME",
        help="where requests naming no --host go (an exact name); without it they get 421",
    )
    p.add_argument(
        "--https-port",
        type=int,
        default=443,
        help="the port in Location (default: 443, which is left out)",
    )
    add_log_level(p)
    add_subscribe_timeout(p)
    p.add_argument(
        "--syslog-prefix",
        action="store_true",
        help="start each log line with its syslog priority (<N>) for journald",
    )
    add_version(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_to_stderr(args.log_level, "", args.syslog_prefix)
    try:
        send = parse_spec(args.m2_send_spec)
        recv = parse_spec(args.m2_recv_spec)
        rules = Rules(tuple(args.host), args.https_port, args.fallback_host)
        if args.subscribe_timeout <= 0:
            raise SpecError("--subscribe-timeout must be positive")
    except (SpecError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    from ringmaster_handler.proctitle import set_title

    set_title(f"{PROG} {send.url} -> https", b"ringmaster-redir")
    return Redirector(send.url, recv.url, rules, args.subscribe_timeout).run()


if __name__ == "__main__":
    sys.exit(main())
