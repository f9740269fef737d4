"""Best-effort process title without setproctitle (which would be a C dependency).

Two things are set: the kernel's short name (/proc/self/comm, what top and pgrep without -f
show) via prctl(PR_SET_NAME), and the command line ps shows, by overwriting the original argv
memory, which Python copied at start-up and no longer reads.
"""

import ctypes
import ctypes.util
import logging

log = logging.getLogger("ringmaster_handler.proctitle")

PR_SET_NAME = 15
COMM_NAME = b"ringmaster-wsgi"  # exactly the kernel's 15-character limit


def set_title(title: str, comm: bytes = COMM_NAME) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(comm[:15]), 0, 0, 0)
        return _overwrite_argv(title.encode("utf-8", "replace"))
    except Exception as exc:  # a cosmetic feature must never stop the handler
        log.debug("cannot set the process title: %s", exc)
        return False


def _overwrite_argv(title: bytes) -> bool:
    with open("/proc/self/stat", "rb") as f:
        stat = f.read()
    # Fields after the ")" closing the command name; arg_start/arg_end are fields 48 and 49.
    fields = stat[stat.rindex(b")") + 2 :].split()
    arg_start, arg_end = int(fields[45]), int(fields[46])
    size = arg_end - arg_start
    if size <= 1:
        return False
    data = title[: size - 1]
    # Zero the rest so ps shows no trace of the old arguments.
    ctypes.memmove(arg_start, data + b"\0" * (size - len(data)), size)
    return True
