"""Web transport ``options`` as WSGI middleware: ``access_log``, ``hsts``/``hsts_max_age``,
``forwarded_allow_ips`` (geonode.web.forwarded).

``display_tracebacks`` is read by the WSGI Host Service from ``ctx.transport_options`` (it decides
what its 500 pages show); the limits (``client_timeout``, ``request_head_timeout``,
``keepalive_timeout``, ``max_connections``; ``max_body_size`` per service) are the server's and
the services' (``geonode.web.limits``).
Nothing is wrapped when an option is off, so the default hot path has no extra layer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from geonode.logs import FIELDS

access_log = logging.getLogger("geonode.access")

_SAFE = "/:@!$&'()*+,;=-._~%"


def _request_line(environ: dict) -> str:
    # Read before routing: DispatcherMiddleware rewrites SCRIPT_NAME/PATH_INFO in place.
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    path = quote(path.encode("latin-1", "replace"), safe=_SAFE)
    query = environ.get("QUERY_STRING")
    if query:
        path += "?" + query
    return f'{environ.get("REQUEST_METHOD", "-")} {path} {environ.get("SERVER_PROTOCOL", "-")}'


def _clf_time(t: float) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(t))


def _quoted(value: str | None) -> str:
    # Combined format quotes Referer and User-Agent; a quote inside must not end the field.
    if not value:
        return '"-"'
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class AccessLog:
    """One line per request on logger ``geonode.access``: the Combined Log Format (Apache's,
    nginx's default) plus the duration in seconds, so the usual parsers read it::

        127.0.0.1 - - [07/Dec/2026:12:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/8.5" 0.000412

    The same fields go with the record (``geonode.logs.FIELDS``): ``--logformat json`` writes
    them as keys."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.time()
        line = _request_line(environ)
        host = environ.get("REMOTE_ADDR") or "-"
        user = environ.get("REMOTE_USER") or "-"
        status = ["-"]

        def sr(st: str, headers: list, exc_info: Any = None) -> Callable:
            status[0] = st.split(" ", 1)[0]
            return start_response(st, headers, exc_info)

        def emit(size: int | None) -> None:
            duration = time.time() - started
            referer = environ.get("HTTP_REFERER")
            agent = environ.get("HTTP_USER_AGENT")
            fields = {"remote_addr": host, "remote_user": None if user == "-" else user,
                      "request": line, "method": environ.get("REQUEST_METHOD"),
                      "path": line.split(" ", 2)[1] if line.count(" ") >= 2 else None,
                      "protocol": environ.get("SERVER_PROTOCOL"),
                      "status": int(status[0]) if status[0].isdigit() else None,
                      "size": size or 0, "referer": referer, "user_agent": agent,
                      "duration": round(duration, 6)}
            access_log.info('%s - %s [%s] "%s" %s %s %s %s %.6f', host, user,
                            _clf_time(started), line, status[0], size if size else "-",
                            _quoted(referer), _quoted(agent), duration,
                            extra={FIELDS: fields})

        result = self.app(environ, sr)
        if type(result) is list and environ.get("REQUEST_METHOD") != "HEAD":
            emit(sum(map(len, result)))
            return result
        return _Counted(result, emit, environ.get("REQUEST_METHOD") == "HEAD")


class _Counted:
    """Wraps a response iterable to count its bytes and log when the server closes it."""

    __slots__ = ("result", "emit", "size", "head")

    def __init__(self, result: Iterable[bytes], emit: Callable, head: bool) -> None:
        self.result = result
        self.emit = emit
        self.size = 0
        self.head = head

    def __iter__(self):
        for chunk in self.result:
            self.size += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        finally:
            self.emit(0 if self.head else self.size)


class HSTS:
    """``Strict-Transport-Security`` on every response (mounted only on TLS endpoints)."""

    def __init__(self, app: Callable, max_age: int) -> None:
        self.app = app
        self.header = ("Strict-Transport-Security", f"max-age={int(max_age)}")

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        header = self.header

        def sr(status: str, headers: list, exc_info: Any = None) -> Callable:
            return start_response(status, [*headers, header], exc_info)

        return self.app(environ, sr)


def wrap(app: Callable, options: dict, *, tls: bool,
         json_path: str = "options") -> Callable:
    """Apply a web transport's ``options`` to its root app."""
    if options.get("hsts") and tls:
        app = HSTS(app, options.get("hsts_max_age", 31536000))
    if options.get("access_log"):
        app = AccessLog(app)
    allow = options.get("forwarded_allow_ips")
    if allow:
        # Outermost: the access log and everything below see the client, not the proxy.
        from geonode.web.forwarded import ProxyHeaders, TrustedProxies

        app = ProxyHeaders(app, TrustedProxies(allow, f"{json_path}.forwarded_allow_ips"))
    return app
