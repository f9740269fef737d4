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


class SafeFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:
        return _indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indent(super().formatStack(stack_info))


def _indent(text: str) -> str:
    return "\n".join("  | " + escape(line) for line in text.splitlines())
