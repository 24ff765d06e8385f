"""``json`` path service: a fixed JSON value, serialized once when the node starts."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from geonode.config.model import JsonService
from geonode.httpstatus import status_line
from geonode.web.context import BuildContext
from geonode.web.services.plain import text_response

_NO_CACHE = [("Cache-Control", "no-store, no-cache, must-revalidate, max-age=0"),
             ("Pragma", "no-cache"), ("Expires", "0")]

_OK, _NO_CONTENT = status_line(200), status_line(204)


def build(cfg: JsonService, ctx: BuildContext) -> Callable[[dict, Callable], Iterable[bytes]]:
    """The WSGI app for a ``json`` path."""
    if cfg.prettify:
        text = json.dumps(cfg.value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    else:
        text = json.dumps(cfg.value, separators=(",", ":"), ensure_ascii=False)
    body = text.encode("utf-8")
    extra: list[tuple[str, str]] = []
    if cfg.allow_cross_origin:
        extra.append(("Access-Control-Allow-Origin", "*"))
    if cfg.discourage_caching:
        extra += _NO_CACHE
    headers = [("Content-Type", "application/json; charset=utf-8"),
               ("Content-Length", str(len(body)))] + extra
    preflight = [("Allow", "GET, HEAD, OPTIONS")] + extra
    if cfg.allow_cross_origin:
        preflight += [("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS"),
                      ("Access-Control-Max-Age", "86400")]

    def app(environ: dict, start_response) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "GET":
            start_response(_OK, list(headers))
            return [body]
        if method == "HEAD":
            start_response(_OK, list(headers))
            return []
        if method == "OPTIONS":
            start_response(_NO_CONTENT, list(preflight))
            return []
        return text_response(start_response, 405,
                      f"method {method} not allowed here", [("Allow", "GET, HEAD, OPTIONS")])

    return app
