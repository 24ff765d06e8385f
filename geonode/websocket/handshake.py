"""The server side of the RFC 6455 opening handshake (work in progress)."""

from __future__ import annotations


class HandshakeError(Exception):
    """The upgrade was refused: the service answers ``status`` with ``message`` as the body."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.headers = headers or []


def wants_upgrade(environ: dict) -> bool:
    """The request asks for a WebSocket: GET with ``Upgrade: websocket``."""
    return (environ.get("REQUEST_METHOD") == "GET"
            and "websocket" in environ.get("HTTP_UPGRADE", "").lower())


class Upgrader:
    def __init__(self, handler):
        self.handler = handler

    def accept(self, subprotocols=None, options=None):
        raise HandshakeError(501, "WebSocket upgrade not implemented yet")
