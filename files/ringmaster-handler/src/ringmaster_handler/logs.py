"""Log formatting that client-controlled text cannot forge lines with.

Paths, headers and exception messages can carry CR/LF (a ``%0a`` in a path is a newline
once unquoted). Messages are written with their control characters escaped, and every
continuation line of a traceback is indented, so each line that starts at the left margin
is one record this process wrote.
"""

import logging

_CONTROL = {i: f"\\x{i:02x}" for i in range(32) if i != 9} | {10: "\\n", 13: "\\r", 127: "\\x7f"}


def escape(text: str) -> str:
    """``text`` with CR, LF and other control characters (tab excepted) escaped."""
    return text.translate(_CONTROL)


# syslog priorities (RFC 5424) by logging level: what journald reads from a "<N>" prefix.
_PRIORITY = {
    logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2,
}  # fmt: skip


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (levels between the named ones round up)."""
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


class SafeFormatter(logging.Formatter):
    """``syslog_prefix``: start every line with ``<N>``, the record's syslog priority, which
    systemd's journal reads from a service's output (SyslogLevelPrefix=, on by default) and
    removes. circus's StdoutStream passes watcher output on unchanged, so a WARNING of a
    watcher reaches the journal at warning priority."""

    def __init__(self, fmt: str | None = None, *, syslog_prefix: bool = False) -> None:
        super().__init__(fmt)
        self.syslog_prefix = syslog_prefix

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.syslog_prefix:
            return text
        tag = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(tag + line for line in text.split("\n"))

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:
        return _indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indent(super().formatStack(stack_info))


def _indent(text: str) -> str:
    return "\n".join("  | " + escape(line) for line in text.splitlines())
