"""``none`` path service: nothing here, every request answers 404."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from geonode.config.model import Service
from geonode.web.context import BuildContext
from geonode.web.services.plain import text_response


def app(environ: dict, start_response) -> Iterable[bytes]:
    return text_response(start_response, 404, "not found",
                         head=environ.get("REQUEST_METHOD") == "HEAD")


def build(cfg: Service, ctx: BuildContext) -> Callable[[dict, Callable], Iterable[bytes]]:
    """The WSGI app for a ``none`` path."""
    return app
