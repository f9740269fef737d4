"""Exceptions shared between the parsing modules and the serving loop."""


class ProtocolError(ValueError):
    """A message from Mongrel2 that does not follow the handler protocol.

    The loop logs these and drops the message; they never reach the app.
    """
