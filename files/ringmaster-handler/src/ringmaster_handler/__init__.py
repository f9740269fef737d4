"""Python 3 WSGI handler for Mongrel2 (ZeroMQ), successor to m2wsgi."""

__version__ = "0.1.0"
