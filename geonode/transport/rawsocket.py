"""WAMP over RawSocket (the WAMP spec's TCP/Unix framing), served by a gevent StreamServer.

Handshake: the client sends 4 octets ``0x7F, (length exponent << 4 | serializer id), 0, 0``
(the longest message it accepts is ``2 ** (9 + exponent)``; serializers 1 json, 2 msgpack,
3 cbor, 4 ubjson); the server answers the same shape with its own exponent, or
``0x7F, error << 4, 0, 0`` (1 serializer unsupported, 2 length unacceptable, 3 reserved bits
used, 4 too many connections) and closes. Then every message is a frame: one octet whose low
3 bits are the type (0 WAMP message, 1 ping, 2 pong; the rest reserved, zero) and a 24-bit
big-endian payload length. A ping is answered with a pong carrying the same payload.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from gevent.lock import Semaphore
from gevent.server import StreamServer

from geonode.config.model import DEFAULT_MAX_MESSAGE_SIZE, Endpoint, Transport
from geonode.endpoints import (
    ConnectionCap,
    default_max_connections,
    set_nodelay,
    tcp_listener,
    tls_context,
    unix_listener,
)
from geonode.transport import queue
from geonode.transport import serializers as ser
from geonode.transport.channel import channel_ids, peer_cert
from geonode.transport.queue import CHECK_EVERY, CLOSE_TIMEOUT, StreamPeer

log = logging.getLogger("geonode.transport")

MAGIC = 0x7F
FRAME_MESSAGE, FRAME_PING, FRAME_PONG = 0, 1, 2
ERR_SERIALIZER, ERR_LENGTH, ERR_RESERVED, ERR_CONNECTIONS = 1, 2, 3, 4
MAX_PAYLOAD = (1 << 24) - 1          # a 24-bit length field
HANDSHAKE_TIMEOUT = 10.0             # seconds for the client's 4 octets
RECV_SIZE = 65536


def length_exponent(max_message_size: int) -> int:
    """The handshake exponent announcing ``max_message_size`` (2**(9+e), e in 0..15)."""
    size = max(512, min(int(max_message_size), 1 << 24))
    return min(15, max(0, math.ceil(math.log2(size)) - 9))


def _frame(kind: int, payload: bytes) -> bytes:
    n = len(payload)
    return bytes((kind, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF)) + payload


def _peer_string(sock: socket.socket, address: Any) -> str:
    if sock.family == socket.AF_INET:
        return f"tcp4:{address[0]}:{address[1]}"
    if sock.family == socket.AF_INET6:
        return f"tcp6:[{address[0]}]:{address[1]}"
    return "unix"


class RawSocketPeer(StreamPeer):
    """Peer over one accepted RawSocket connection; ``run`` blocks for its life."""

    def __init__(self, sock: socket.socket, serializer: ser.WampSerializer, details: dict,
                 max_receive: int, max_send: int, **limits: int) -> None:
        super().__init__(serializer, details, **limits)
        self.sock = sock
        self.max_receive = max_receive
        self.max_send = max_send
        # what the client announced it accepts (JSON counts characters here, bytes in _write)
        self.max_message_out = min(self.max_message_out, max_send)
        self._wlock = Semaphore()

    def run(self, router: Any, auth_config: dict | None = None,  # noqa: C901 - the per-frame read loop, inlined as the WebSocket's is
            initial: bytes = b"") -> None:
        self.session = router.attach(self, auth_config=auth_config)
        buf = bytearray(initial)
        pos = 0
        sock = self.sock
        budget, mark = CHECK_EVERY, None
        try:
            while True:
                # Parse every complete frame in the buffer before reading more.
                while len(buf) - pos >= 4:
                    kind = buf[pos]
                    size = (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]
                    if kind > FRAME_PONG:
                        raise _Violation(f"invalid frame type octet {kind:#04x}")
                    if size > self.max_receive:
                        raise _Violation(f"message of {size} bytes over the limit "
                                         f"{self.max_receive}")
                    if len(buf) - pos - 4 < size:
                        break
                    payload = bytes(buf[pos + 4:pos + 4 + size])
                    pos += 4 + size
                    if kind == FRAME_MESSAGE:
                        if self._closing is None and not self._dead:
                            if self.serializer.binary:
                                self._receive_payload(payload)
                            else:
                                self._receive_payload(payload.decode("utf-8", "strict"))
                            budget -= 1 + (size >> 12)
                            if budget <= 0 or queue.congestion:
                                budget, mark = CHECK_EVERY, self._pace(mark)
                    elif kind == FRAME_PING:
                        self._write_raw(_frame(FRAME_PONG, payload))
                if pos:
                    del buf[:pos]
                    pos = 0
                chunk = sock.recv(RECV_SIZE)
                if not chunk:
                    break
                buf += chunk
        except _Violation as e:
            log.warning("%s: protocol violation: %s", self._who(), e)
        except UnicodeDecodeError:
            self._violation("JSON message is not UTF-8")
        except OSError as e:
            if not self._dead:
                log.info("%s: connection error: %s", self._who(), e)
        finally:
            self._detach()
            self._wait_writer(CLOSE_TIMEOUT)
            self._dead = True
            self._queue = []
            self._abort()

    def _write_raw(self, data: bytes) -> None:
        with self._wlock:
            self.sock.sendall(data)

    def _write(self, items: list) -> None:
        frames = []
        for item in items:
            data = item.encode("utf-8") if isinstance(item, str) else item
            if len(data) > self.max_send:
                log.warning("%s: dropping a %d byte message: the client accepts at most %d",
                            self._who(), len(data), self.max_send)
                continue
            frames.append(_frame(FRAME_MESSAGE, data))
        if frames:
            self._write_raw(b"".join(frames))


class _Violation(Exception):
    pass


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _listener(endpoint: Endpoint, config_dir: Path, json_path: str) -> tuple[Any, Any, str]:
    """(listening socket, TLS context or None, url): the web transports' endpoint rules."""
    if endpoint.type == "unix":
        sock, where = unix_listener(endpoint, config_dir, f"{json_path}.endpoint")
        return sock, None, f"rawsocket+unix://{where}"
    tls = endpoint.tls
    ctx = tls_context(tls, config_dir, f"{json_path}.endpoint") if tls else None
    sock, where = tcp_listener(endpoint, f"{json_path}.endpoint")
    return sock, ctx, f"rawsocket{'+tls' if tls else ''}://{where}"


def connection_handler(transport: Transport, router: Any, framing: str) -> Callable[..., None]:
    """``handle(sock, address, initial=b"")``: one RawSocket connection for its whole life.

    ``transport``: a rawsocket transport, or a universal transport's ``rawsocket``.
    ``initial``: octets already read from ``sock`` (the universal transport's sniffer read the
    first ones to pick the protocol); they are taken as the start of the stream."""
    json_path = transport.json_path
    allowed: dict[int, ser.WampSerializer] = {}
    for name in transport.serializers:
        s = ser.get(name)
        allowed[s.rawsocket_id] = s
    options = transport.options
    max_message_size = int(options.get("max_message_size") or DEFAULT_MAX_MESSAGE_SIZE)
    own_exp = length_exponent(max_message_size)
    max_receive = min(max_message_size, MAX_PAYLOAD)
    limits = {"max_queue": transport.max_queue, "max_queue_bytes": transport.max_queue_bytes}
    auth_config = transport.auth

    def handshake(sock: socket.socket, initial: bytes
                  ) -> tuple[ser.WampSerializer, int, bytes] | None:
        """(serializer, client's length exponent, octets after the handshake), or None when
        the connection is done."""
        set_nodelay(sock)
        hello = initial
        if len(hello) < 4:
            with gevent.Timeout(HANDSHAKE_TIMEOUT, False):
                hello += _recv_exact(sock, 4 - len(hello))
        if len(hello) < 4 or hello[0] != MAGIC:
            return None  # not a RawSocket client (or too slow): nothing to answer
        ser_id, their_exp = hello[1] & 0x0F, hello[1] >> 4
        error = 0
        if hello[2] or hello[3]:
            error = ERR_RESERVED
        elif ser_id not in allowed:
            error = ERR_SERIALIZER
        if error:
            sock.sendall(bytes((MAGIC, error << 4, 0, 0)))
            return None
        sock.sendall(bytes((MAGIC, (own_exp << 4) | ser_id, 0, 0)))
        return allowed[ser_id], their_exp, hello[4:]

    def handle(sock: socket.socket, address: Any, initial: bytes = b"") -> None:
        if router is None:   # a worker without realms: no WAMP session can be had here
            log.info("%s: refusing %s: the worker has no realms", json_path,
                     _peer_string(sock, address))
            sock.close()
            return
        try:
            agreed = handshake(sock, initial)
        except OSError as e:   # reset, or a failed TLS handshake: the client's problem
            log.info("rawsocket %s: handshake failed: %s", _peer_string(sock, address), e)
            agreed = None
        if agreed is None:
            sock.close()
            return
        serializer, their_exp, rest = agreed
        details = {
            "type": "rawsocket",
            "channel_type": framing,
            "channel_framing": "rawsocket",
            "channel_serializer": serializer.name,
            "peer": _peer_string(sock, address),
            "is_server": True,
            "channel_id": channel_ids(sock),   # {} unless TLS: for cryptosign channel binding
            "peer_cert": peer_cert(sock),   # None unless TLS with a client certificate
        }
        peer = RawSocketPeer(sock, serializer, details, max_receive=max_receive,
                             max_send=min(2 ** (9 + their_exp), MAX_PAYLOAD), **limits)
        peer.run(router, auth_config, initial=rest)

    return handle


def serve(transport: Transport, router: Any, ctx: Any,
          max_connections_default: int | None = None) -> StreamServer:
    """A (not yet started) StreamServer for one ``{"type": "rawsocket"}`` transport.

    ``options.max_connections`` caps its connections (``geonode.endpoints.ConnectionCap``);
    without it ``max_connections_default`` (the node's share per endpoint), or the open-file
    share of a lone endpoint."""
    json_path = transport.json_path
    config_dir = Path(getattr(ctx, "config_dir", "."))
    endpoint = transport.endpoint
    listener, ssl_context, url = _listener(endpoint, config_dir, json_path)
    framing = "unix" if endpoint.type == "unix" else ("tls" if ssl_context else "tcp")
    try:
        handle = connection_handler(transport, router, framing)
    except BaseException:
        listener.close()
        raise

    ssl_args = {"ssl_context": ssl_context} if ssl_context is not None else {}
    cap = ConnectionCap(transport.max_connections or max_connections_default
                        or default_max_connections(), json_path)
    server = StreamServer(listener, handle, spawn=cap.pool, **ssl_args)
    cap.install(server)
    server.url = url
    return server
