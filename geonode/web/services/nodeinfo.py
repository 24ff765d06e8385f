"""``nodeinfo`` path service: a small HTML status page about the running node."""

from __future__ import annotations

import html
import platform
import time
from collections.abc import Callable, Iterable

import gevent

from geonode.config.model import Service
from geonode.httpstatus import status_line
from geonode.web.context import BuildContext
from geonode.web.services.plain import text_response


def _uptime(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{s:02d}"


def _sessions(node) -> str:
    counter = node.session_count
    if counter is None:
        return "n/a"
    try:
        return str(counter() if callable(counter) else counter)
    except Exception:  # a status page must not fail because a counter did
        return "n/a"


def build(cfg: Service, ctx: BuildContext) -> Callable[[dict, Callable], Iterable[bytes]]:
    """The WSGI app for a ``nodeinfo`` path."""
    node = ctx.node

    def app(environ: dict, start_response) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return text_response(start_response, 405, f"method {method} not allowed here",
                                 [("Allow", "GET, HEAD")])
        rows = [
            ("geonode version", node.version),
            ("process id", str(node.pid)),
            ("started", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(node.started_at))),
            ("uptime", _uptime(time.time() - node.started_at)),
            ("WAMP sessions", _sessions(node)),
            ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
            ("gevent", gevent.__version__),
        ]
        title = html.escape(node.title or "geonode")
        table = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                          for k, v in rows)
        body = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
                f"<title>{title}</title></head>\n<body><h1>{title}</h1>\n"
                f"<table>\n{table}\n</table></body></html>\n").encode()
        start_response(status_line(200), [("Content-Type", "text/html; charset=utf-8"),
                                  ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])
        return [] if method == "HEAD" else [body]

    return app
