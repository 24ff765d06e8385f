"""WampWebSocketPeer: the router's Peer over one ``geonode.websocket.WebSocket``.

The queue, the writer greenlet and the reader's pacing are the shared half
(``geonode.transport.queue.MessageQueuePeer``); this module adds what is WebSocket's: reading
messages in the connection's own greenlet (``run``), writing the queue with one ``send_many``
(or one frame per bounded batch for ``.batched`` subprotocols), the closing handshake, and what
the router learns about the connection (``transport_details``).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import gevent

from geonode.transport import queue
from geonode.transport.channel import channel_ids, peer_cert
from geonode.transport.queue import CHECK_EVERY, CLOSE_TIMEOUT, MessageQueuePeer
from geonode.transport.serializers import WampSerializer
from geonode.websocket.frames import CLOSE_INTERNAL_ERROR, CLOSE_NORMAL

log = logging.getLogger("geonode.transport")

BATCH_FRAME_LIMIT = 256 * 1024        # bytes per frame on .batched subprotocols


def peer_address(environ: dict) -> str:
    """Crossbar-style peer string: ``tcp4:127.0.0.1:5555``, ``tcp6:[::1]:5555``, ``unix``."""
    host = environ.get("REMOTE_ADDR") or ""
    port = environ.get("REMOTE_PORT") or ""
    if not host or not port:
        return "unix" if host in ("", "unix") else f"tcp4:{host}"
    if ":" in host:
        return f"tcp6:[{host}]:{port}"
    return f"tcp4:{host}:{port}"


def http_headers(environ: dict) -> dict[str, str]:
    headers = {_header_name(key): value for key, value in environ.items()
               if key[:5] == "HTTP_"}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


@functools.lru_cache(maxsize=512)   # the same few header names on every upgrade
def _header_name(key: str) -> str:
    return key[5:].replace("_", "-").lower()


def _extensions(ext: Any) -> list[str]:
    if not ext:
        return []
    return [ext] if isinstance(ext, str) else list(ext)


def _connection_socket(environ: dict) -> Any:
    """The request's socket (an SSLSocket under TLS), from the upgrade hook's pywsgi handler."""
    handler = getattr(environ.get("geonode.websocket"), "handler", None)
    return getattr(handler, "socket", None)


def transport_details(environ: dict, ws: Any, serializer: WampSerializer) -> dict:
    """What the router (and ``wamp.session.get``) learns about this connection."""
    sock = _connection_socket(environ)
    return {
        "type": "websocket",
        "channel_type": "tls" if environ.get("wsgi.url_scheme") == "https" else "tcp",
        # cryptosign's channel binding reads this; the router never sees the socket
        "channel_id": channel_ids(sock),
        "peer_cert": peer_cert(sock),   # WAMP-TLS reads this
        "channel_framing": "websocket",
        "channel_serializer": serializer.name,
        "peer": peer_address(environ),
        "is_server": True,
        "http_headers_received": http_headers(environ),
        "websocket_protocol": getattr(ws, "subprotocol", None) or serializer.subprotocol,
        "websocket_extensions_in_use": _extensions(getattr(ws, "extensions", None)),
        "http_path": (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) or "/",
    }


class WampWebSocketPeer(MessageQueuePeer):
    """Peer over a ``geonode.websocket.WebSocket``; ``run`` blocks for the connection's life."""

    def __init__(self, ws: Any, serializer: WampSerializer, details: dict, **limits: int) -> None:
        super().__init__(serializer, details, **limits)
        self.ws = ws
        #: the connection's cookie (geonode.router.auth.cookie), when its path tracks them
        self.cookie: Any = None

    def run(self, router: Any, auth_config: dict | None = None) -> None:
        """Attach to ``router`` and pump incoming messages until the connection ends."""
        self.session = router.attach(self, auth_config=auth_config)
        ws = self.ws
        budget, mark = CHECK_EVERY, None
        try:
            # Keep reading while closing: the WebSocket layer needs the peer's close frame.
            while True:
                payload = ws.receive()
                if payload is None:
                    break
                if self._closing is None and not self._dead:
                    self._receive_payload(payload)
                    budget -= 1 + (len(payload) >> 12)
                    if budget <= 0 or queue.congestion:
                        budget, mark = CHECK_EVERY, self._pace(mark)
        except Exception as e:
            if not self._dead:
                log.info("%s: connection error: %s", self._who(), e)
        finally:
            self._detach()
            # Let a closing writer flush (ABORT/GOODBYE) before the handler drops the socket.
            self._wait_writer(CLOSE_TIMEOUT)
            self._dead = True           # late sends from the router are dropped from here on
            self._queue = []
            if not getattr(ws, "closed", True):
                self._abort(CLOSE_NORMAL, "")

    direct_writes = True

    def _write_nowait(self, items: list) -> int:
        if self.serializer.batched:
            return queue.NOT_WRITTEN   # the writer frames the batches
        return self.ws.send_nowait(items)

    def _write(self, items: list) -> None:
        if not items:
            self.ws.flush()
            return
        if self.serializer.batched:
            # One frame per batch, but batches of bounded size: a client's message size limit
            # must not be hit because the router had a lot to say at once.
            frames: list = []
            batch: list = []
            size = 0
            for item in items:
                if batch and size + len(item) > BATCH_FRAME_LIMIT:
                    frames.append(self.serializer.join(batch))
                    batch, size = [], 0
                batch.append(item)
                size += len(item)
            frames.append(self.serializer.join(batch))
            if len(frames) == 1:
                self.ws.send(frames[0])
            else:
                self.ws.send_many(frames)
        elif len(items) == 1:
            self.ws.send(items[0])
        else:
            self.ws.send_many(items)

    def _shutdown(self, code: int, reason: str) -> None:
        self.ws.close(code, reason)

    def _abort(self, code: int = CLOSE_INTERNAL_ERROR, reason: str = "") -> None:
        ws = self.ws
        try:
            if not ws.closed:
                # With the reader active this returns once the close frame is out; a full
                # socket (slow reader) may block it, hence the timeout and the hard drop.
                with gevent.Timeout(1.0, False):
                    ws.close(code, reason)
            if code != CLOSE_NORMAL:
                ws.abort()
        except Exception:
            pass
