"""``ringmaster-console-agent CONFIG``: the agent next to circusd (runs as root, as circusd's
control socket is root's)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from ringmaster_handler.curve import CurveError

from ringmaster_console.agent_loop import AgentLoop, Stop
from ringmaster_console.config import ConfigError, agent_config, load_toml


def _stop(signum, frame):
    raise Stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ringmaster-console-agent", description=__doc__)
    parser.add_argument("config", help="the agent's TOML configuration file")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(name)s %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        config = agent_config(load_toml(args.config), args.config)
        loop = AgentLoop(config)
    except (ConfigError, CurveError) as exc:
        print(f"ringmaster-console-agent: error: {exc}", file=sys.stderr)
        return 2
    signal_r, signal_w = os.pipe()
    os.set_blocking(signal_w, False)
    signal.set_wakeup_fd(signal_w)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        loop.run(signal_r)
    except Stop:
        pass
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
