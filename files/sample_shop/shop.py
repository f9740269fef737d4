"""Second sample WSGI app, for fleets that serve several apps (ringmaster_apps).

Every request is answered with JSON naming the app, the host that answered, and
what the app was told of the request: the Host header, SCRIPT_NAME (the
route's prefix), PATH_INFO and wsgi.url_scheme. Tests read it to see which app
a host name and path reached.
"""

import json
import os
import socket

_HOST = socket.gethostname()


def application(environ, start_response):
    body = json.dumps(
        {
            "app": "shop",
            "worker": _HOST,
            "pid": os.getpid(),
            "host": environ.get("HTTP_HOST", ""),
            "script_name": environ.get("SCRIPT_NAME", ""),
            "path_info": environ.get("PATH_INFO", ""),
            "url_scheme": environ.get("wsgi.url_scheme", ""),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
