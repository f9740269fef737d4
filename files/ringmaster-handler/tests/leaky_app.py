"""An app that leaks 2 MiB per request (for --max-rss)."""

_kept = []


def application(environ, start_response):
    _kept.append(bytearray(2 << 20))  # (zero pages are not resident until written)
    _kept[-1][::4096] = b"x" * len(range(0, 2 << 20, 4096))
    body = b"leaked %d MiB" % (2 * len(_kept))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
