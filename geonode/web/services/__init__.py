"""Path services: ``type`` in a web transport's ``paths`` → a WSGI app factory.

Each entry names ``module:function``; the function is ``build(cfg, ctx) -> WSGI app``, where
``cfg`` is the path's ``geonode.config.model.Service``: the typed subclass of its type
(``geonode.config.model`` or ``geonode.config.services``), defaults filled in; ``cfg.extra``
is the path's config as written.
Modules are imported only when a config uses them, so start-up stays small.
"""

from __future__ import annotations

import importlib
from typing import Any

from geonode.config.model import Service

# Every entry needs its schema in geonode.config.schema.SERVICE_SCHEMAS (the config check
# accepts exactly those types; tests/test_config.py holds the two lists equal).
SERVICES: dict[str, str] = {
    "wsgi": "geonode.web.wsgi_host:build",
    "static": "geonode.web.services.static:build",
    "redirect": "geonode.web.services.redirect:build",
    "json": "geonode.web.services.jsonvalue:build",
    "nodeinfo": "geonode.web.services.nodeinfo:build",
    "none": "geonode.web.services.none:build",
    "path": "geonode.web.dispatch:build_path",
    "reverseproxy": "geonode.web.services.reverseproxy:build",
    "websocket": "geonode.web.services.websocket:build",
    "websocket-testee": "geonode.web.services.testee:build",
    "longpoll": "geonode.web.services.longpoll:build",
    "wap": "geonode.web.services.wap:build",
    "archive": "geonode.web.services.archive:build",
    "upload": "geonode.web.services.upload:build",
    "websocket-reverseproxy": "geonode.web.services.wsproxy:build",
    "publisher": "geonode.bridge.publisher:build",
    "caller": "geonode.bridge.caller:build",
    "webhook": "geonode.bridge.webhook:build",
    "metrics": "geonode.web.services.metrics:build",   # geonode additions (issue 13)
    "health": "geonode.web.services.health:build",
    "status": "geonode.web.services.status:build",
}


def build_service(cfg: Service, ctx: Any) -> Any:
    """Build the WSGI app for one path service."""
    target = SERVICES[cfg.type]
    module_name, func_name = target.split(":")
    module = importlib.import_module(module_name)
    app = getattr(module, func_name)(cfg, ctx)
    if cfg.type == "wsgi":
        from geonode.metrics import SOURCES, url_path

        SOURCES.add_wsgi(url_path(ctx.json_path), app)   # its pool use, read at scrape time
    return app
