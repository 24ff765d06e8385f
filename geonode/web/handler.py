"""The pywsgi handler class for every geonode web endpoint.

It subclasses gevent-websocket's ``WebSocketHandler`` only to be the *upgrade hook*: unlike
its parent it never upgrades on its own. It runs the WSGI app exactly like pywsgi's plain
``WSGIHandler`` and, when the request asks for a WebSocket upgrade, hands the app an upgrader
at ``environ["geonode.websocket"]``. A path service that wants the WebSocket calls
``upgrader.accept(...)`` (see ``geonode.websocket.handshake``); our own framing layer
(``geonode.websocket``) then owns the connection. Once upgraded, the handler writes nothing
more and closes the TCP connection when the app returns.
"""

from __future__ import annotations

import socket
import time

from gevent.pywsgi import WSGIHandler
from geventwebsocket.handler import WebSocketHandler

from geonode.websocket.handshake import Upgrader, wants_upgrade


def set_nodelay(sock) -> None:
    """Disable Nagle: WAMP messages are small and latency-bound (idempotent, best effort)."""
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass


def _noop_write(data) -> None:
    """After an upgrade the socket belongs to the WebSocket: HTTP writes are dropped."""


class Handler(WebSocketHandler):
    """pywsgi handler: plain WSGI handling plus an opt-in WebSocket upgrade hook."""

    #: set by the upgrader once the 101 response went out
    websocket_upgraded = False

    def handle(self):
        set_nodelay(self.socket)
        return super().handle()

    def read_requestline(self):
        line = super().read_requestline()
        # The opening handshake clock (``open_handshake_timeout``) starts with the request line.
        self.request_started = time.monotonic()
        return line

    def run_application(self):
        # Never gevent-websocket's automatic upgrade: the app decides (and validates) itself.
        self.websocket_upgraded = False
        upgrader = None
        if wants_upgrade(self.environ):
            upgrader = self.environ["geonode.websocket"] = Upgrader(self)
        try:
            return WSGIHandler.run_application(self)
        finally:
            ws = upgrader.websocket if upgrader is not None else None
            if ws is not None and not ws.closed:
                # The app returned with its WebSocket still open: close it properly.
                ws.close(1001, "going away")

    def start_response(self, status, headers, exc_info=None):
        if self.websocket_upgraded:
            # The app returned after its WebSocket session; there is no HTTP response left.
            return _noop_write
        return WSGIHandler.start_response(self, status, headers, exc_info)

    def write(self, data):
        if self.websocket_upgraded:
            return None
        return WSGIHandler.write(self, data)

    def process_result(self):
        if self.websocket_upgraded:
            # Consume (and close, via run_application) whatever the app returned, write nothing.
            for _ in self.result:
                pass
            return None
        return WSGIHandler.process_result(self)

    def log_request(self):
        return WSGIHandler.log_request(self)
