"""The ``universal`` transport: RawSocket and HTTP (web paths, WAMP-over-WebSocket) on one port.

As Crossbar's unisocket: the first octet a client sends picks the protocol. ``0x7F`` is a
RawSocket handshake; every other octet starts HTTP, whose request path then picks a
``websocket`` entry (by its first segment, before the ``web`` paths) or the ``web`` paths.
MQTT (CONNECT, first octet ``0x10``) goes to the MQTT transport's connection handler
(``geonode.transport.mqtt.serve_connection``) when the transport has an ``mqtt`` part.

The server is a ``WebServer`` (same limits, timeouts, connection cap and graceful stop); only
``handle`` differs: it reads through the buffered reader the HTTP handler will use, so the
sniffed octets are not lost either way (TLS included: the octets are the decrypted stream).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from geonode.web.server import WebServer

__all__ = ["PROTOCOLS", "UniversalServer", "route_websockets"]

log = logging.getLogger("geonode.web")

#: first octet → protocol name; the handlers come from the transport's config. 0x10 is an
#: MQTT CONNECT packet's type and flags (the first packet of every MQTT connection).
PROTOCOLS: dict[int, str] = {0x7F: "rawsocket", 0x10: "mqtt"}

#: how much the sniffer hands a non-HTTP protocol at once (what the reader has buffered)
_HANDOFF = 65536


class UniversalServer(WebServer):
    """A WebServer whose connections may also speak another protocol, told by the first octet.

    ``protocols``: name → ``handle(sock, address, initial: bytes)`` for the configured
    non-HTTP protocols. A client whose first octet names a protocol this transport does not
    serve is closed at once (one debug line), as Crossbar does."""

    def __init__(self, *args: Any, protocols: dict[str, Callable[..., None]],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.protocols = protocols

    def handle(self, sock: Any, address: Any) -> None:
        rfile = sock.makefile("rb", -1)
        try:
            first = rfile.peek(1)[:1]   # one recv; the timeout is the handler's (do_handle)
        except OSError as e:
            log.debug("%s: %s went before its first octet: %s", self.json_path, address, e)
            first = b""
        if not first:
            rfile.close()
            sock.close()
            return
        name = PROTOCOLS.get(first[0])
        if name is None:
            # HTTP: pywsgi's handler on the reader that holds the sniffed octets
            self.handler_class(sock, address, self, rfile).handle()
            return
        handler = self.protocols.get(name)
        if handler is None:
            log.debug("%s: %s speaks %s, which this transport does not serve: closed",
                      self.json_path, address, name)
            rfile.close()
            sock.close()
            return
        initial = rfile.read1(_HANDOFF)   # only what is buffered already: no wait
        rfile.close()   # the protocol reads the socket itself from here (the socket stays open)
        sock.settimeout(None)   # RawSocket and MQTT bound their own handshakes; sessions idle
        connections = self.connections
        connections.add_session(sock)
        try:
            handler(sock, address, initial)
        finally:
            connections.discard_session(sock)


def route_websockets(web_app: Callable, websockets: dict[str, Callable]) -> Callable:
    """The HTTP side: a request whose path's first segment names a ``websocket`` entry goes
    there (Crossbar tries those first), any other to the ``web`` paths. ``"/"`` names the
    root path only."""
    if not websockets:
        return web_app
    table = {key.strip("/"): app for key, app in websockets.items()}

    def app(environ: dict, start_response: Callable) -> Any:
        path = environ.get("PATH_INFO", "")
        rest = path.lstrip("/")
        first, sep, _ = rest.partition("/")
        ws = table.get(first)
        if ws is None:
            return web_app(environ, start_response)
        if first:
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + "/" + first
            environ["PATH_INFO"] = path[path.index(first) + len(first):]
        return ws(environ, start_response)

    return app
