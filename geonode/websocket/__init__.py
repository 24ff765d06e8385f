"""geonode's own RFC 6455 WebSocket layer (framing, permessage-deflate, handshake)."""

from geonode.websocket.handshake import HandshakeError
from geonode.websocket.options import WebSocketOptions

__all__ = ["HandshakeError", "WebSocketOptions"]
