"""``metrics`` path service: the node's Prometheus metrics (``prometheus_client`` exposition).

geonode addition (Crossbar has no such service). What is counted and how cheaply:
``geonode.metrics`` and docs/observability.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from geonode.config.imports import prometheus
from geonode.config.services import MetricsService
from geonode.httpstatus import status_line
from geonode.web.context import BuildContext
from geonode.web.services.plain import text_response

_OK = status_line(200)


def build(svc: MetricsService, ctx: BuildContext) -> Callable[[dict, Callable], Iterable[bytes]]:
    """The WSGI app for a ``metrics`` path."""
    prometheus(svc)   # ConfigError without the library: what check says too
    from geonode import metrics

    metrics.registry()
    ctx.node.count_http = True   # the node gives every web server an HttpStats
    folder = metrics.multiprocess_dir()
    if folder is not None:
        # one of several node processes: every one publishes its counts for the others' scrapes
        os.makedirs(folder, exist_ok=True)
        metrics.start_writer(folder)

    def app(environ: dict, start_response) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return text_response(start_response, 405, f"method {method} not allowed here",
                                 [("Allow", "GET, HEAD")])
        # A scrape runs on the hub: a few milliseconds for a node with many realms and paths.
        body, content_type = metrics.exposition(environ.get("HTTP_ACCEPT"))
        start_response(_OK, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                             ("Cache-Control", "no-store")])
        return [] if method == "HEAD" else [body]

    return app
