"""The body of a streamed request (protocol v2: S, U..., E), collected as it arrives.

Pure bookkeeping, no sockets: the worker feeds it the bytes of U frames and answers each
with a K credit. The bytes go to a ``SpooledTemporaryFile``: in memory up to
SPOOL_IN_MEMORY, then in a temp file that is unlinked as it is created (``TemporaryFile``),
so nothing is left on disk even when the process is killed with SIGKILL.
"""

import tempfile

from ringmaster_handler.digits import parse_count
from ringmaster_handler.request import Request

# Up to this many bytes a body stays in memory; larger ones roll over to an unlinked file.
SPOOL_IN_MEMORY = 1 << 20


class StreamedBody:
    __slots__ = ("complete", "failed", "file", "length", "max_size", "refused")

    def __init__(self, max_size: int = 0, in_memory: int = SPOOL_IN_MEMORY) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=in_memory)  # noqa: SIM115
        self.length = 0
        self.max_size = max_size  # 0: no limit
        self.complete = False  # E arrived
        # The body passed --max-body-size (or announced it would): the client gets a 413
        # and what still arrives is dropped without credit, so the dispatcher stops asking
        # Mongrel2 for more.
        self.refused = False
        # Writing it failed (a full disk): the client gets a 500, the rest is dropped.
        self.failed = False

    @property
    def ready(self) -> bool:
        """Whether the request can be answered now (the app run, or a 413/500 sent)."""
        return self.complete or self.refused or self.failed

    def check_announced(self, req: Request) -> None:
        """Refuse up front a body whose Content-Length already passes the limit."""
        length = parse_count(req.headers.get("content-length"))
        if self.max_size and length is not None and length > self.max_size:
            self._refuse()

    def feed(self, data: bytes) -> bool:
        """Take more body bytes; False when they were dropped (refused or complete)."""
        if self.refused or self.complete or self.failed:
            return False
        if self.max_size and self.length + len(data) > self.max_size:
            self._refuse()
            return False
        try:
            self.file.write(data)
        except OSError:
            # (Raised here it would reach the frame loop; the request answers it instead.)
            self.failed = True
            self.file.close()
            return False
        self.length += len(data)
        return True

    def finish(self) -> None:
        """The whole body is here: rewind it for the app."""
        if not self.refused and not self.complete and not self.failed:
            self.complete = True
            self.file.seek(0)

    def close(self) -> None:
        self.file.close()

    def _refuse(self) -> None:
        self.refused = True
        # Give the memory or disk space back now; the 413 needs none of it.
        self.file.close()
