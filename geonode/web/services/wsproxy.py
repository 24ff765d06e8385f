"""``websocket-reverseproxy`` path service: a client's WebSocket forwarded to a backend
WebSocket server (Crossbar's keys: ``backend`` = ``{"type": "websocket", "endpoint": {...},
"url": "ws://host:port/path"}``, ``options`` for the client side).

Crossbar ends the client's WebSocket in the proxy and opens a second one to the backend,
relaying messages. geonode forwards the opening handshake instead: the client's upgrade
request goes to the backend (its key, version, subprotocols, extensions, origin, cookies;
``Host`` and the path from ``backend.url``, ``X-Forwarded-For``/``-Proto`` added), the
backend's own ``101`` goes back to the client once its ``Sec-WebSocket-Accept`` is checked,
and from then on bytes are tunnelled both ways unchanged. So the subprotocol, compression and
every frame are the backend's and the client's business, exactly as between them directly,
and the proxy holds at most 64 KiB per direction (a side that does not read stalls the other:
back-pressure, never a buffer). The client-side ``options`` that apply before the tunnel are
the handshake's: ``allowed_origins``, ``allow_null_origin``, ``open_handshake_timeout``.

A backend that cannot be reached is 503 (Crossbar's "WebSocket reverse proxy backend not
reachable"), one that answers anything but a valid 101 is 502, each with one log line; the
client's request is refused before the backend is contacted when it is no valid upgrade
(the WebSocket service's own checks and statuses).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import gevent
from gevent import socket

from geonode.config.services import WsBackend, WsProxyService
from geonode.config.tls import client_context
from geonode.endpoints import set_nodelay
from geonode.web.context import BuildContext
from geonode.web.services.plain import text_response
from geonode.websocket import HandshakeError, WebSocketOptions
from geonode.websocket.handshake import accept_key

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
MAX_HEAD = 64 * 1024
HANDSHAKE_TIMEOUT = 10.0
# Not forwarded: hop-by-hop headers and the ones the proxy sets itself.
_SKIP = frozenset({"HTTP_HOST", "HTTP_CONNECTION", "HTTP_UPGRADE", "HTTP_KEEP_ALIVE",
                   "HTTP_PROXY_CONNECTION", "HTTP_TE", "HTTP_TRAILER",
                   "HTTP_TRANSFER_ENCODING", "HTTP_X_FORWARDED_FOR",
                   "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST"})


class Backend:
    """Where and how to reach the backend (from ``backend``)."""

    def __init__(self, cfg: WsBackend, config_dir: Path, json_path: str) -> None:
        url = urlparse(cfg.url)   # ws:// or wss:// (the config model checked)
        self.kind = cfg.kind
        self.host = cfg.host
        self.port = cfg.port
        self.path = cfg.path   # unix
        self.timeout = cfg.timeout
        self.target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self.host_header = url.netloc or self.host or "localhost"
        self.tls: Any = None
        tls = cfg.tls
        if tls is not None or url.scheme == "wss":
            from gevent import ssl as gssl  # its sockets cooperate with the hub

            tls = tls or {}
            self.tls = client_context(tls, config_dir, f"{json_path}.backend.endpoint", gssl)
            self.tls_hostname = tls.get("hostname") or self.host
        self.where = f"unix:{self.path}" if self.kind == "unix" else f"{self.host}:{self.port}"

    def connect(self) -> Any:
        if self.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            set_nodelay(sock)
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_hostname=self.tls_hostname)
            except BaseException:
                sock.close()
                raise
        return sock


class WebSocketReverseProxy:
    def __init__(self, svc: WsProxyService, ctx: BuildContext) -> None:
        self.backend = Backend(svc.backend, ctx.config_dir, ctx.json_path)
        self.options = WebSocketOptions.from_config(svc.options)
        self.json_path = ctx.json_path
        self.tls = ctx.tls

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        head = environ.get("REQUEST_METHOD") == "HEAD"
        if not environ.get("HTTP_UPGRADE"):
            return text_response(start_response, 426, "this path forwards WebSocket "
                                 "connections only", [("Upgrade", "websocket")], head=head)
        up = environ.get("geonode.websocket")
        if up is None:
            return text_response(start_response, 501, "WebSocket upgrade not available "
                                 "under this server", head=head)
        try:
            key = up.validate(self.options)
        except HandshakeError as e:
            return text_response(start_response, e.status, e.message, e.headers, head=head)
        peer = environ.get("REMOTE_ADDR", "?")
        try:
            backend = self.backend.connect()
        except (OSError, ssl.SSLError) as e:
            log.warning("websocket-reverseproxy %s: backend %s not reachable: %s",
                        self.json_path, self.backend.where, e)
            return text_response(start_response, 503,
                                 "WebSocket reverse proxy backend not reachable")
        try:
            answer, leftover = self._handshake(backend, environ, key)
        except (OSError, ValueError, gevent.Timeout) as e:
            backend.close()
            log.warning("websocket-reverseproxy %s: backend %s refused the WebSocket of %s: %s",
                        self.json_path, self.backend.where, peer, e)
            return text_response(start_response, 502, f"backend refused the WebSocket: {e}")
        client, rfile = up.hijack(answer)
        log.debug("websocket-reverseproxy %s: %s tunnelled to %s", self.json_path, peer,
                  self.backend.where)
        _tunnel(client, rfile, backend, leftover)
        return []

    def _handshake(self, backend: Any, environ: dict, key: str) -> tuple[bytes, bytes]:
        """Send the client's upgrade to the backend; its 101 head (checked) and any bytes
        that came with it."""
        lines = [f"GET {self.backend.target} HTTP/1.1", f"Host: {self.backend.host_header}",
                 "Upgrade: websocket", "Connection: Upgrade"]
        for name, value in environ.items():
            if name.startswith("HTTP_") and name not in _SKIP:
                lines.append(f"{name[5:].replace('_', '-').title()}: {value}")
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        addr = environ.get("REMOTE_ADDR", "")
        lines.append(f"X-Forwarded-For: {forwarded + ', ' + addr if forwarded else addr}")
        lines.append(f"X-Forwarded-Proto: {'https' if self.tls else 'http'}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        with gevent.Timeout(HANDSHAKE_TIMEOUT, ValueError("no answer to the upgrade in time")):
            backend.sendall(request)
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = backend.recv(CHUNK)
                if not data:
                    raise ValueError("connection closed during the handshake")
                buf += data
                if len(buf) > MAX_HEAD and b"\r\n\r\n" not in buf[:MAX_HEAD]:
                    raise ValueError("response head too large")
        backend.settimeout(None)
        end = buf.index(b"\r\n\r\n") + 4
        head, leftover = buf[:end], buf[end:]
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status.split(" ", 2)
        if len(parts) < 2 or parts[1] != "101":
            raise ValueError(f"answered {status[:200]!r}")
        accept = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-accept":
                accept = value.strip().decode("latin-1")
        if accept != accept_key(key):
            raise ValueError("wrong Sec-WebSocket-Accept")
        return head, leftover


def _tunnel(client: Any, rfile: Any, backend: Any, leftover: bytes) -> None:
    """Bytes both ways until either side closes; then both are closed."""

    def client_to_backend() -> None:
        try:
            while True:
                # read1: what the HTTP reader still buffers first, then one recv at a time
                data = rfile.read1(CHUNK)
                if not data:
                    break
                backend.sendall(data)
        except (OSError, ValueError):
            pass

    def backend_to_client() -> None:
        try:
            if leftover:
                client.sendall(leftover)
            while True:
                data = backend.recv(CHUNK)
                if not data:
                    break
                client.sendall(data)
        except (OSError, ValueError):
            pass

    up = gevent.spawn(client_to_backend)
    down = gevent.spawn(backend_to_client)
    try:
        gevent.wait([up, down], count=1)
    finally:
        # One side is done: end the other (shutdown wakes its blocked read), then close.
        for s in (backend, client):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        gevent.joinall([up, down], timeout=5.0)
        gevent.killall([up, down])
        backend.close()


def build(svc: WsProxyService, ctx: BuildContext) -> WebSocketReverseProxy:
    """The WSGI app serving a ``websocket-reverseproxy`` path."""
    return WebSocketReverseProxy(svc, ctx)
