"""``none`` path service: nothing here, every request answers 404."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from geonode.web.context import BuildContext

_BODY = b"not found\n"
_HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(_BODY)))]


def app(environ: dict, start_response) -> Iterable[bytes]:
    start_response("404 Not Found", list(_HEADERS))
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [_BODY]


def build(cfg: dict, ctx: BuildContext) -> Callable[[dict, Callable], Iterable[bytes]]:
    """The WSGI app for a ``none`` path."""
    return app
