"""The server side of the RFC 6455 opening handshake.

``geonode.web.handler.Handler`` puts an :class:`Upgrader` at ``environ["geonode.websocket"]``
for every GET asking for ``Upgrade: websocket``. A path service decides whether to take it:
``ws = environ["geonode.websocket"].accept(subprotocols, options)`` validates the request,
writes the 101 response itself and returns a :class:`~geonode.websocket.connection.WebSocket`,
or raises :class:`HandshakeError` (never a 500) which the service turns into a response.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import time
from typing import Any

from geonode.httpstatus import status_line
from geonode.websocket import deflate
from geonode.websocket.connection import WebSocket
from geonode.websocket.options import WebSocketOptions
from geonode.websocket.reader import SocketReader, take_buffered

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_SWITCHING = status_line(101)


class HandshakeError(Exception):
    """The upgrade was refused: answer ``status`` with ``message`` (and ``headers``)."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.headers = headers or []

    def __str__(self) -> str:
        return f"{self.status} {self.message}"


def wants_upgrade(environ: dict) -> bool:
    """The request asks for a WebSocket: GET with ``Upgrade: websocket``."""
    return (environ.get("REQUEST_METHOD") == "GET"
            and "websocket" in _tokens(environ.get("HTTP_UPGRADE", "")))


def _tokens(value: str) -> list[str]:
    return [t.strip().lower() for t in value.split(",") if t.strip()]


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode("ascii")).digest()).decode("ascii")


@functools.lru_cache(maxsize=64)   # per endpoint config, not per handshake
def origin_patterns(allowed: tuple[str, ...]) -> list[re.Pattern]:
    """Crossbar-style origin patterns: ``*`` matches any run of characters, the rest is literal."""
    return [re.compile("^" + ".*".join(re.escape(p) for p in pat.split("*")) + "$", re.I)
            for pat in allowed]


def origin_allowed(origin: str | None, opts: WebSocketOptions) -> bool:
    if origin is None:
        return True            # not a browser: origins only protect browser users
    if origin == "null":
        return opts.allow_null_origin
    if "*" in opts.allowed_origins:
        return True
    return any(p.match(origin) for p in origin_patterns(tuple(opts.allowed_origins)))


def select_subprotocol(offered: list[str], supported: list[str] | None) -> str | None:
    """The first subprotocol in the *client's* order that the server supports, by exact match.

    ``supported=None`` accepts whatever the client offers first (echo/test endpoints).
    """
    if supported is None:
        return offered[0] if offered else None
    for p in offered:
        if p in supported:
            return p
    return None


class Upgrader:
    """One request's upgrade hook (lives at ``environ["geonode.websocket"]``)."""

    def __init__(self, handler: Any):
        self.handler = handler
        self.websocket: WebSocket | None = None
        #: True once ``detach`` handed the WebSocket to a greenlet of its own
        self.detached = False
        self.requested_at = getattr(handler, "request_started", None) or time.monotonic()

    def accept(self, subprotocols: list[str] | None = None,
               options: WebSocketOptions | None = None,
               extra_headers: list[tuple[str, str]] | None = None) -> WebSocket:
        """Validate the request, answer 101 and return the WebSocket (or raise HandshakeError).
        ``extra_headers`` go into the 101 response (a Set-Cookie)."""
        opts = options or WebSocketOptions()
        env = self.handler.environ
        key = self.validate(opts)

        offered = [p.strip() for p in env.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "").split(",")
                   if p.strip()]
        return self._accepted(opts, key, offered, subprotocols, extra_headers)

    def validate(self, opts: WebSocketOptions) -> str:
        """The opening handshake's checks (RFC 6455 4.2.1, origin, deadline): the client's
        ``Sec-WebSocket-Key``, or HandshakeError."""
        env = self.handler.environ
        if self.websocket is not None:
            raise HandshakeError(500, "WebSocket already accepted on this request")
        if env.get("REQUEST_METHOD") != "GET":
            raise HandshakeError(405, "WebSocket upgrade needs a GET request",
                                 [("Allow", "GET")])
        if env.get("SERVER_PROTOCOL", "") != "HTTP/1.1":
            raise HandshakeError(400, "WebSocket upgrade needs HTTP/1.1")
        if "websocket" not in _tokens(env.get("HTTP_UPGRADE", "")):
            raise HandshakeError(400, "missing 'Upgrade: websocket' header")
        if "upgrade" not in _tokens(env.get("HTTP_CONNECTION", "")):
            raise HandshakeError(400, "missing 'Connection: Upgrade' header")
        version = env.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip()
        if version != "13":
            raise HandshakeError(426, f"unsupported WebSocket version {version!r}: only 13",
                                 [("Sec-WebSocket-Version", "13")])
        key = env.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
        try:
            raw = base64.b64decode(key.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raw = b""
        if len(raw) != 16:
            raise HandshakeError(400, "Sec-WebSocket-Key must be 16 base64-encoded bytes")
        origin = env.get("HTTP_ORIGIN")
        if not origin_allowed(origin, opts):
            raise HandshakeError(403, f"origin {origin!r} not allowed")
        if opts.open_handshake_timeout and \
                (time.monotonic() - self.requested_at) * 1000 > opts.open_handshake_timeout:
            raise HandshakeError(408, "opening handshake timed out")
        return key

    def hijack(self, head: bytes) -> tuple[Any, Any]:
        """Send ``head`` (a complete 101 response someone else made, e.g. a proxied backend's)
        and hand over the connection: ``(socket, buffered reader)``; pywsgi writes nothing
        more and closes the socket when the app returns."""
        if self.websocket is not None:
            raise HandshakeError(500, "WebSocket already accepted on this request")
        sock = self.handler.socket
        sock.settimeout(None)
        sock.sendall(head)
        self._mark_upgraded(len(head))
        return sock, self.handler.rfile

    def _accepted(self, opts: WebSocketOptions, key: str, offered: list[str],
                  subprotocols: list[str] | None,
                  extra_headers: list[tuple[str, str]] | None = None) -> WebSocket:
        handler = self.handler
        env = handler.environ
        chosen = select_subprotocol(offered, subprotocols)
        required = opts.require_websocket_subprotocol
        if required is None:
            required = bool(subprotocols)
        if chosen is None and required:
            if offered:
                msg = (f"none of the offered subprotocols {offered} is supported; "
                       f"this endpoint speaks {subprotocols}")
            else:
                msg = f"no WebSocket subprotocol offered; this endpoint speaks {subprotocols}"
            raise HandshakeError(400, msg)

        pmd = None
        headers = [
            f"HTTP/1.1 {_SWITCHING}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Accept: {accept_key(key)}",
        ]
        if chosen is not None:
            headers.append(f"Sec-WebSocket-Protocol: {chosen}")
        ext_header = env.get("HTTP_SEC_WEBSOCKET_EXTENSIONS", "")
        if opts.deflate is not None and ext_header:
            agreed = deflate.negotiate(ext_header, opts.deflate)
            if agreed is not None:
                pmd, response = agreed
                headers.append(f"Sec-WebSocket-Extensions: {response}")
        headers.extend(f"{k}: {v}" for k, v in extra_headers or ())
        head = ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1")

        sock = handler.socket
        # An HTTP idle timeout must not cut a long-lived WebSocket: liveness is auto-ping's job.
        sock.settimeout(None)
        # One send takes the whole 101 but for a full socket buffer (gevent's sendall loops in
        # Python even for that one call).
        sent = sock.send(head)
        if sent < len(head):
            sock.sendall(head[sent:])
        self._mark_upgraded(len(head))
        # From here the WebSocket reads the socket itself (no per-connection buffer); what
        # the request's reader already holds of the client's first frames goes with it.
        reader = SocketReader(sock, take_buffered(handler.rfile, sock))
        ws = WebSocket(sock, reader, opts, subprotocol=chosen, deflate=pmd, environ=env)
        self.websocket = ws
        return ws

    def detach(self, run: Any, *args: Any) -> bool:
        """Run ``run(*args)`` for the accepted WebSocket's life in a greenlet of its own, and
        let the request end now: its handler, environ and buffers are freed instead of living
        as long as the connection (most of an idle WebSocket's memory). False when the server
        cannot hand the connection over (TLS, a server without the hook, a full connection
        pool): the caller then runs ``run`` itself, in the request, as before.

        The WebSocket's ``environ`` is emptied: take what the connection needs from it first.
        """
        ws = self.websocket
        hand_over = getattr(self.handler, "detach_websocket", None)
        if ws is None or hand_over is None:
            return False
        self.detached = bool(hand_over(ws, run, args))
        return self.detached

    def _mark_upgraded(self, nbytes: int) -> None:
        """Tell pywsgi the response is out: it writes nothing more and closes afterwards."""
        h = self.handler
        h.websocket_upgraded = True
        h.status = _SWITCHING.encode()
        h._orig_status = _SWITCHING
        h.code = 101
        h.headers_sent = True
        h.response_use_chunked = False
        h.close_connection = True
        h.response_length = getattr(h, "response_length", 0) + nbytes
