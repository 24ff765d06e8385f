"""``redirect`` path service: every request under the path answers 302 to ``url``."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from urllib.parse import quote

from geonode.config import ConfigError
from geonode.httpstatus import status_line
from geonode.web.context import BuildContext


def build(cfg: dict, ctx: BuildContext) -> Callable[[dict, Callable], Iterable[bytes]]:
    """The WSGI app for a ``redirect`` path."""
    url = cfg.get("url")
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{ctx.json_path}.url: a non-empty string is required")
    if any(c in url for c in "\r\n\x00"):
        raise ConfigError(f"{ctx.json_path}.url: control characters are not allowed")
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
