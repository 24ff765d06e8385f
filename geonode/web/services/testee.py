"""``websocket-testee``: an echo endpoint on geonode's framing layer (Autobahn|Testsuite target).

Accepts any subprotocol (the client's first offer) or none, negotiates permessage-deflate by
default (``options.compression`` overrides it), and echoes every message with its type. A plain
GET gets a short text page.
"""

from __future__ import annotations

from typing import Any

from geonode.config.model import TesteeService
from geonode.web.services.plain import text_response
from geonode.websocket import DeflateOptions, HandshakeError, WebSocketOptions

_PAGE = "geonode websocket-testee: connect with a WebSocket client, every message is echoed."


def build(cfg: TesteeService, ctx: Any):
    """WSGI app for a ``{"type": "websocket-testee"}`` path."""
    options = WebSocketOptions.from_config(cfg.options)
    if cfg.deflate:
        options.deflate = DeflateOptions()

    def app(environ, start_response):
        upgrader = environ.get("geonode.websocket")
        if upgrader is None:
            if "websocket" in environ.get("HTTP_UPGRADE", "").lower():
                return text_response(start_response, 501,
                                     "WebSocket upgrade needs geonode's web handler")
            return text_response(start_response, 200, _PAGE)
        try:
            ws = upgrader.accept(None, options)
        except HandshakeError as e:
            return text_response(start_response, e.status, e.message, e.headers)
        receive, send = ws.receive, ws.send
        while True:
            msg = receive()
            if msg is None:
                break
            send(msg)
        return []

    return app
