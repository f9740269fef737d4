"""The router app in a handler whose upload code fails (fault injection for a real process)."""

from apps import router
from ringmaster_handler import uploads


def _broken(*_args, **_kwargs):
    raise RuntimeError("injected fault: open_spooled failed")


uploads.open_spooled = _broken
app = router
