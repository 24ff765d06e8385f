"""``websocket`` path service: WAMP v2 over WebSocket into the worker's router.

The upgrade itself belongs to ``geonode.websocket`` (offered by geonode's pywsgi handler at
``environ["geonode.websocket"]``); this service picks the serializer from the negotiated
subprotocol and runs a ``WampWebSocketPeer`` for the connection's life in the request greenlet.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Iterable
from typing import Any

from geonode import __version__
from geonode.config import ConfigError
from geonode.config.model import DEFAULT_MAX_MESSAGE_SIZE, WebSocketService
from geonode.httpstatus import status_line
from geonode.router.auth.cookie import CookieTracker
from geonode.transport import serializers as ser
from geonode.transport.websocket import WampWebSocketPeer, transport_details
from geonode.web.context import BuildContext
from geonode.websocket import HandshakeError, WebSocketOptions

__all__ = ["build"]


def _run_with_cookie(peer: WampWebSocketPeer, cookie: Any, router: Any,
                     auth_config: Any) -> None:
    try:
        peer.run(router, auth_config)
    finally:
        cookie.detach(peer)


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
    cookies = None
    if cfg.cookie is not None:
        try:
            cookies = CookieTracker.from_config(cfg.cookie, ctx.config_dir)
        except OSError as e:
            raise ConfigError(f"{cfg.json_path}.cookie.store.filename: cannot use the cookie "
                              f"file: {e}") from e

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
        cookie, set_cookie = cookies.track(environ) if cookies is not None else (None, None)
        try:
            ws = upgrader.accept(subprotocols=protocols, options=ws_options,
                                 extra_headers=[("Set-Cookie", set_cookie)] if set_cookie
                                 else None)
        except HandshakeError as e:
            return _respond(start_response, e.status, e.message.rstrip("\n") + "\n",
                            headers=list(e.headers))
        serializer = ser.by_subprotocol(ws.subprotocol) or fallback
        details = transport_details(environ, ws, serializer)
        peer = WampWebSocketPeer(ws, serializer, details, **limits)
        run = peer.run
        if cookie is not None:
            assert cookies is not None  # a cookie comes from the tracker
            cookies.redact(details["http_headers_received"])
            peer.cookie = cookie
            cookie.attach(peer)
            run = functools.partial(_run_with_cookie, peer, cookie)
        # The session outlives the request: run it in a lean greenlet of its own, so an idle
        # session does not keep the request's handler, environ and buffers (issue 16).
        if not upgrader.detach(run, router, auth_config):
            run(router, auth_config)
        return []

    return app
