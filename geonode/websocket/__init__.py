"""geonode's own RFC 6455 WebSocket layer (framing, permessage-deflate, handshake).

gevent-websocket's handler is only the upgrade hook (``geonode.web.handler.Handler``); the
handshake, the framing and the limits are implemented here.
"""

from geonode.websocket.connection import WebSocket
from geonode.websocket.handshake import HandshakeError, Upgrader
from geonode.websocket.options import DeflateOptions, WebSocketOptions

__all__ = ["DeflateOptions", "HandshakeError", "Upgrader", "WebSocket", "WebSocketOptions"]
