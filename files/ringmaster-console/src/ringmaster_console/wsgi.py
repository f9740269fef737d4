"""WSGI entry point: ``ringmaster_console.wsgi:application`` (for ringmaster-wsgi behind
Mongrel2). The configuration file is ``RINGMASTER_CONSOLE_CONFIG`` (default
/etc/ringmaster/console.toml), readable by the console's account only."""

import os

from ringmaster_console.web import app_from_file

application = app_from_file(
    os.environ.get("RINGMASTER_CONSOLE_CONFIG", "/etc/ringmaster/console.toml")
)
