"""The command-line options both programs take, defined once.

``ringmaster-wsgi`` and ``ringmaster-dispatcher`` log the same way, wait for Mongrel2 the
same way and hold a CURVE keypair the same way; only the keys of the other side differ.
"""

import argparse
import logging
import sys

from ringmaster_handler import __version__
from ringmaster_handler.logs import SafeFormatter, escape

LOG_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"


def log_to_stderr(level: str, name: str = "", syslog_prefix: bool = False) -> None:
    """Every record to stderr through SafeFormatter (request data in messages cannot start a
    line of its own), with the app's ``name`` after the level when given."""
    fmt = LOG_FORMAT
    if name:
        # (%-free and escaped: it becomes part of the format string)
        fmt = fmt.replace("%(name)s:", escape(name).replace("%", "%%") + " %(name)s:")
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(SafeFormatter(fmt, syslog_prefix=syslog_prefix))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[stderr])


def add_log_level(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level for stderr (default: info)",
    )


def add_subscribe_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--subscribe-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for Mongrel2 to subscribe before taking requests (default: 5)",
    )


def add_curve_group(p: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """The CURVE option group with our own keypair in it; the caller adds the peers' keys."""
    curve = p.add_argument_group(title)
    curve.add_argument(
        "--curve-secret-key",
        metavar="FILE",
        help=(
            "our keypair: a ZeroMQ certificate with public-key and secret-key (NAME.key_secret "
            "from `python -m ringmaster_handler.curve DIR NAME`); must be mode 0600 or stricter"
        ),
    )
    return curve


def add_version(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
