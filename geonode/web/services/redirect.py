"""``redirect`` path service: every request under the path answers 302 to ``url``."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from urllib.parse import quote

from geonode.config.model import RedirectService
from geonode.httpstatus import status_line
from geonode.web.context import BuildContext


def build(cfg: RedirectService, ctx: BuildContext) -> Callable[[dict, Callable], Iterable[bytes]]:
    """The WSGI app for a ``redirect`` path (its ``url`` checked by the config model)."""
    url = cfg.url
    # Built once: the answer never depends on the request.
    body = (f'<!DOCTYPE html>\n<html><body>Moved to <a href="{html.escape(url)}">'
            f"{html.escape(url)}</a></body></html>\n").encode()
    # Header values are latin-1 on the wire (PEP 3333); send non-latin-1 URLs percent-encoded.
    location = url if url.isascii() else quote(url, safe=":/?#[]@!$&'()*+,;=%~")
    headers = [("Location", location), ("Content-Type", "text/html; charset=utf-8"),
               ("Content-Length", str(len(body)))]

    status = status_line(302)

    def app(environ: dict, start_response) -> Iterable[bytes]:
        start_response(status, list(headers))
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    return app
