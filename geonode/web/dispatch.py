"""Routing of a web transport's ``paths`` to path services (werkzeug's DispatcherMiddleware).

``"/"`` is the root service; every other key is one path segment mounted at ``/key``. An explicit
sibling always beats the root (DispatcherMiddleware tries the longest mounted prefix first), the
root app sees ``SCRIPT_NAME=""`` and the whole ``PATH_INFO``, an app on ``api`` sees
``SCRIPT_NAME="/api"`` and the rest. ``{"type": "path", "paths": {...}}`` nests the same rules.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.middleware.dispatcher import DispatcherMiddleware

from geonode.config.model import PathService, Service
from geonode.httpstatus import status_line
from geonode.web.context import BuildContext

_NOT_FOUND = status_line(404)

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


def not_found(environ: dict, start_response: Callable) -> list[bytes]:
    """The answer for URLs no path service claims: small, and naming the path."""
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    body = (
        f"<!DOCTYPE html><html><head><title>{_NOT_FOUND}</title></head><body>"
        f"<h1>{_NOT_FOUND}</h1><p>No resource at <code>{html.escape(path)}</code>.</p>"
        "</body></html>\n"
    ).encode()
    start_response(_NOT_FOUND, [("Content-Type", "text/html; charset=utf-8"),
                                     ("Content-Length", str(len(body)))])
    if environ.get("REQUEST_METHOD") == "HEAD":
        return [b""]
    return [body]


def build_app(paths: dict[str, Service], ctx: BuildContext) -> WSGIApp:
    """Build the WSGI app serving ``paths`` (a web transport's or a nested ``path`` service's).

    ``ctx.json_path`` names the ``paths`` object itself (``workers[0].transports[0].paths``).
    """
    from geonode.web.services import build_service

    root: Any = not_found
    mounts: dict[str, WSGIApp] = {}
    for key, service_cfg in paths.items():
        app = build_service(service_cfg, ctx.child(key))
        if key == "/":
            root = app
        else:
            mounts["/" + key.strip("/")] = app
    if not mounts:
        # No siblings: skip the dispatcher entirely (one function call less per request).
        return root
    return DispatcherMiddleware(root, mounts)


def build_path(cfg: PathService, ctx: BuildContext) -> WSGIApp:
    """The ``path`` service: a nested ``paths`` tree."""
    return build_app(cfg.paths, ctx.child("paths"))
