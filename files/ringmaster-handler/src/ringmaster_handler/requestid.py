"""Request ids: the one a client sent when it is a safe bounded token, else a new one.

``X-Request-Id`` comes from the client, so it is not trusted blindly: it is kept only if it is
1-64 characters of ``A-Z a-z 0-9 . _ : -`` (nothing that can break a log line, a header or a
shell), otherwise replaced by 32 random hex digits. The handler gives the app the result
(``HTTP_X_REQUEST_ID`` and ``ringmaster.request_id``) and returns it in ``X-Request-Id``; the
dispatcher logs it (observe.py).
"""

import os
import random
import re

_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_rng = random.Random(os.urandom(16))  # (ids need to be unique, not secret)


def safe_request_id(value: object) -> str | None:
    """``value`` if it is an acceptable request id, else None."""
    if type(value) is list:
        value = value[0] if len(value) == 1 else None
    if type(value) is str and _SAFE_ID.fullmatch(value):
        return value
    return None


def new_request_id() -> str:
    return f"{_rng.getrandbits(128):032x}"


def request_id_for(client_value: object) -> str:
    """The id of a request whose client sent ``client_value`` (None: no X-Request-Id)."""
    return safe_request_id(client_value) or new_request_id()
