"""The Peer protocol: what the router needs from a transport.

A transport (WebSocket, RawSocket, in-process) wraps one connection in a Peer and hands it to
``Router.attach``. The router only ever calls ``send`` and ``close``; it never sees a socket.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Peer(Protocol):
    # e.g. {"type": "websocket", "peer": "tcp4:127.0.0.1:5555", "http_headers_received": {...}}
    transport_details: dict

    def send(self, msg: Any) -> None:
        """Queue one ``autobahn.wamp.message`` for the client. Never blocks: the queue is
        bounded by the transport, which closes the connection itself when it overflows."""
        ...

    def close(self) -> None:
        """Drop the connection (after flushing what was queued, if the transport can)."""
        ...
