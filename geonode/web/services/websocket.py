"""``websocket`` path service: WAMP v2 over WebSocket into the worker's router.

The upgrade itself belongs to ``geonode.websocket`` (offered by geonode's pywsgi handler at
``environ["geonode.websocket"]``); this service picks the serializer from the negotiated
subprotocol and runs a ``WampWebSocketPeer`` for the connection's life in the request greenlet.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

from geonode import __version__
from geonode.config.model import WebSocketService
from geonode.httpstatus import status_line
from geonode.transport import serializers as ser
from geonode.transport.queue import DEFAULT_MAX_MESSAGE_SIZE
from geonode.transport.websocket import WampWebSocketPeer, transport_details
from geonode.web.context import BuildContext
from geonode.websocket import HandshakeError, WebSocketOptions

__all__ = ["build"]

def _respond(start_response, status: int, body: str, content_type: str = "text/plain",
             headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    data = body.encode("utf-8")
    start_response(status_line(status),
                   [("Content-Type", f"{content_type}; charset=utf-8"),
                    ("Content-Length", str(len(data))), *(headers or [])])
    return [data]


def _status_page(names: list[str], protocols: list[str]) -> str:
    items = "".join(f"<li><code>{html.escape(p)}</code></li>" for p in protocols)
    return (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>geonode WAMP endpoint"
        "</title></head><body><h1>WAMP over WebSocket</h1>"
        f"<p>This is a WAMP v2 endpoint of geonode {html.escape(__version__)}. Connect with a "
        "WAMP client (e.g. autobahn) using one of these WebSocket subprotocols:</p>"
        f"<ul>{items}</ul><p>Serializers: {html.escape(', '.join(names))}</p></body></html>"
    )


def build(cfg: WebSocketService, ctx: BuildContext):
    """The WSGI app for a ``websocket`` path (the config model checked that the worker has a
    router, and the serializers and queue bounds)."""
    router = ctx.router
    names = cfg.serializers
    options_cfg = dict(cfg.options)
    limits = {"max_queue": cfg.max_queue, "max_queue_bytes": cfg.max_queue_bytes}
    # No limit (Crossbar's default) let one 1 GiB message take the node to 2 GiB RSS.
    options_cfg.setdefault("max_message_size", DEFAULT_MAX_MESSAGE_SIZE)
    ws_options = WebSocketOptions.from_config(options_cfg)
    protocols = ser.subprotocols(names)
    fallback = ser.get("json" if "json" in names else names[0])
    auth_config = cfg.auth
    page = _status_page(names, protocols)

    def app(environ: dict, start_response) -> Iterable[bytes]:
        upgrader = environ.get("geonode.websocket")
        if upgrader is None:
            if "websocket" in environ.get("HTTP_UPGRADE", "").lower():
                return _respond(start_response, 501,
                                "This server cannot upgrade to WebSocket: WAMP needs geonode's "
                                "own server (python -m geonode, or gunicorn with "
                                "geonode.gunicorn.GeventWorker).\n")
            method = environ.get("REQUEST_METHOD", "GET")
            if method not in ("GET", "HEAD"):
                return _respond(start_response, 405, f"method {method} not allowed here\n",
                                headers=[("Allow", "GET, HEAD")])
            body = _respond(start_response, 200, page, "text/html")
            return [] if method == "HEAD" else body
        try:
            ws = upgrader.accept(subprotocols=protocols, options=ws_options)
        except HandshakeError as e:
            return _respond(start_response, e.status, e.message.rstrip("\n") + "\n",
                            headers=list(e.headers))
        serializer = ser.by_subprotocol(ws.subprotocol) or fallback
        details = transport_details(environ, ws, serializer)
        peer = WampWebSocketPeer(ws, serializer, details, **limits)
        peer.run(router, auth_config)
        return []

    return app
