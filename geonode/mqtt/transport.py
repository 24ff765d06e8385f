"""MQTT 3.1.1 connections on a gevent StreamServer (``"type": "mqtt"`` transports).

Built like the RawSocket transport: ``serve(transport_cfg, router, ctx)`` returns a (not yet
started) StreamServer; each accepted connection is an ``MqttConnection``, whose ``run`` reads
and parses in the connection's greenlet and hands every packet to its ``MqttSession``
(``geonode.mqtt``), while writes go through the shared bounded queue and writer greenlet of
``MessageQueuePeer``. ``serve_connection(service, sock, address, initial)`` serves one accepted
socket whose first bytes were already read: the seam for a ``universal`` transport, which
recognises MQTT by its first byte (0x10, CONNECT) as Crossbar does.

Bad input ends only its connection, as MQTT says (section 4.8: close the network connection),
with one log line: a packet before CONNECT, a second CONNECT, a remaining length over four
bytes, a packet over ``max_message_size`` (refused from its fixed header, before its body is
read), flags or fields the standard forbids, misplaced wildcards in a topic filter. A CONNECT
of another protocol level (MQTT 5, 3.1) gets CONNACK 0x01 first (MQTT-3.1.2-2).
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import gevent
from gevent import get_hub
from gevent.server import StreamServer

from geonode.config.model import Endpoint, Transport
from geonode.endpoints import (
    ConnectionCap,
    default_max_connections,
    set_nodelay,
    tcp_listener,
    tls_context,
    unix_listener,
)
from geonode.mqtt import codec
from geonode.mqtt.codec import Malformed
from geonode.mqtt.service import MqttService
from geonode.mqtt.session import check_will
from geonode.transport import queue
from geonode.transport.channel import channel_ids
from geonode.transport.queue import CHECK_EVERY, CLOSE_TIMEOUT, StreamPeer

log = logging.getLogger("geonode.mqtt")

CONNECT_TIMEOUT = 10.0     # seconds from accept to a complete CONNECT
RECV_SIZE = 65536

# Time slices as the WAMP transports take them (issue 9's fairness work): every CHECK_EVERY
# packets (a packet of n KiB counts n/4 + 1) the reader asks MessageQueuePeer._pace whether
# its slice is over or a receiver it congested must be waited for.


def peer_string(sock: socket.socket, address: Any) -> str:
    if sock.family == socket.AF_INET:
        return f"tcp4:{address[0]}:{address[1]}"
    if sock.family == socket.AF_INET6:
        return f"tcp6:[{address[0]}]:{address[1]}"
    return "unix"


class _Done(Exception):
    """The connection ends here, normally (DISCONNECT, a refused CONNECT)."""


class MqttConnection(StreamPeer):
    """One accepted MQTT connection; ``run`` blocks for its life."""

    def __init__(self, sock: socket.socket, service: MqttService, details: dict) -> None:
        super().__init__(None, details, max_queue=service.max_queue,   # type: ignore[arg-type]
                         max_queue_bytes=service.max_queue_bytes)
        self.sock = sock
        self.service = service
        self.details = details
        self.mqtt: Any = None            # the MqttSession after CONNECT
        self._last_rx = 0.0
        self._limit = CONNECT_TIMEOUT    # seconds of silence allowed (keep-alive x 1.5 later)
        self._timer: Any = None
        self._expired = False
        self._taken_over = False

    def who(self) -> str:
        if self.mqtt is not None:
            return self.mqtt.who()
        return f"mqtt {self.details.get('peer')}"

    _who = who

    # -- writing (MqttSession calls these) -----------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queue a packet the protocol needs (acks, QoS 1): over the queue's bound the client
        is not reading, and the connection is closed."""
        if self._dead or self._closing is not None:
            return
        self._queue.append(data)
        self._queued_bytes += len(data)
        if len(self._queue) > self.max_queue or self._queued_bytes > self.max_queue_bytes:
            self._overflow()
            return
        self._kick()

    def write_droppable(self, data: bytes) -> bool:
        """Queue a QoS 0 message; False (dropped) when the queue is at its bound: at most
        once delivery may lose it, a slow subscriber is not cut off for it."""
        if self._dead or self._closing is not None:
            return True
        if (len(self._queue) >= self.max_queue
                or self._queued_bytes + len(data) > self.max_queue_bytes):
            return False
        self._queue.append(data)
        self._queued_bytes += len(data)
        self._kick()
        return True

    def deliver(self, wamp: Any, msg: Any, size: int) -> None:
        """``wamp.receive(msg)`` for a PUBLISH of this client (``size``: its payload's bytes),
        as the WAMP transports hand their messages over: a receiver whose queue the delivery
        congests makes this reader wait (MessageQueuePeer backpressure, issue 9), and a large
        one is checked against its subscribers' queue bounds by the broker (``inbound_large``
        of the router session's peer, the MqttSession). receive() neither raises nor
        switches greenlets, so the mark cannot leak to anyone else."""
        wamp.peer.inbound_large = size >= queue._large_inbound
        queue._delivering = self
        try:
            wamp.receive(msg)
        finally:
            queue._delivering = None

    def taken_over(self) -> None:
        """Another connection took this client id: close, no will (MQTT-3.1.4-2)."""
        self._taken_over = True
        self.mqtt = None     # nothing more it sends reaches the session
        self._dead = True
        self._queue = []
        self._abort()

    # -- reading -------------------------------------------------------------------------------
    def run(self, initial: bytes = b"") -> None:
        self._last_rx = get_hub().loop.now()
        self._arm(self._limit)
        abnormal = True
        try:
            self._read(bytearray(initial))
        except _Done:
            abnormal = False
        except Malformed as e:
            log.warning("%s: protocol violation: %s", self.who(), e)
        except OSError as e:
            if self._expired:
                log.info("%s: %s", self.who(), "no CONNECT in time" if self.mqtt is None
                         else f"keep-alive expired (nothing for {self._limit:g} s)")
            elif not self._dead and not self._taken_over and not self._sock_closed:
                log.info("%s: connection error: %s", self.who(), e)
        finally:
            self._finish(abnormal)

    def _read(self, buf: bytearray) -> None:
        """Read and handle packets until the client closes (or ``_Done``, ``Malformed``,
        ``OSError``)."""
        loop = get_hub().loop
        sock = self.sock
        budget, mark = CHECK_EVERY, None
        while True:
            # Handle every complete packet in the buffer before reading more.
            pos, budget, mark = self._packets(buf, budget, mark)
            if pos:
                self._last_rx = loop.now()
                del buf[:pos]
            chunk = sock.recv(RECV_SIZE)
            if not chunk:
                break
            buf += chunk

    def _packets(self, buf: bytearray, budget: int, mark: Any) -> tuple[int, int, Any]:
        """Handle the complete packets at the start of ``buf``: (where the first incomplete
        one begins, the time-slice budget left, its mark)."""
        n = len(buf)
        pos = 0
        max_size = self.service.max_message_size
        while n - pos >= 2:
            first = buf[pos]
            rl = buf[pos + 1]
            if rl < 128:
                head = 2
            else:
                got = codec.remaining_length(buf, pos + 1, n)
                if got is None:
                    break
                rl, head = got[0], got[1] + 1
            if rl > max_size:
                raise Malformed(f"packet of {rl} bytes over the limit {max_size} "
                                "(max_message_size)")
            end = pos + head + rl
            if end > n:
                break
            body = bytes(buf[pos + head:end])
            pos = end
            if self._closing is not None:
                raise _Done()         # the session ended (router, take-over)
            session = self.mqtt
            if first >> 4 == codec.PUBLISH and session is not None:
                session.on_publish(first, body)
            else:
                self._control(first, body)
            budget -= 1 + (rl >> 12)
            if budget <= 0 or queue.congestion:
                budget, mark = CHECK_EVERY, self._pace(mark)
        return pos, budget, mark

    def _finish(self, abnormal: bool) -> None:
        """The connection is over: its session hears it (a will is published when
        ``abnormal``), the socket closes after what is queued (bounded)."""
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        session, self.mqtt = self.mqtt, None
        if session is not None:
            try:
                session.connection_lost(self, abnormal and not self._taken_over)
            except Exception:
                log.exception("%s: ending the session failed", self.who())
        self.close()
        self._wait_writer(CLOSE_TIMEOUT)
        self._dead = True
        self._queue = []
        self._abort()

    def _control(self, first: int, body: bytes) -> None:
        kind = first >> 4
        session = self.mqtt
        if session is None:
            if self._taken_over:
                raise _Done()
            if kind != codec.CONNECT:
                name = codec.NAMES.get(kind, f"packet type {kind}")
                raise Malformed(f"{name} before CONNECT")                  # MQTT-3.1.0-1
            self._connect(first, body)
            return
        flags = codec.CLIENT_FLAGS.get(kind)
        if flags is None:
            name = codec.NAMES.get(kind, f"reserved packet type {kind}")
            raise Malformed(f"{name} is not a packet a client sends")
        if first & 0x0F != flags:
            raise Malformed(f"{codec.NAMES[kind]} with flags {first & 0x0F:#x}")  # MQTT-2.2.2-2
        if kind == codec.PUBACK:
            session.on_puback(codec.parse_packet_id(body, "PUBACK"))
        elif kind == codec.SUBSCRIBE:
            session.on_subscribe(body)
        elif kind == codec.UNSUBSCRIBE:
            session.on_unsubscribe(body)
        elif kind == codec.PINGREQ:
            if body:
                raise Malformed("PINGREQ with a body")
            self.write(codec.PINGRESP_PACKET)
        elif kind == codec.PUBREL:
            session.on_pubrel(codec.parse_packet_id(body, "PUBREL"))
        elif kind == codec.DISCONNECT:
            if body:
                raise Malformed("DISCONNECT with a body")
            raise _Done()
        elif kind == codec.CONNECT:
            raise Malformed("second CONNECT")                                # MQTT-3.1.0-2
        else:
            # PUBREC / PUBCOMP answer QoS 2 messages, which this server never sends
            codec.parse_packet_id(body, codec.NAMES[kind])

    def _connect(self, first: int, body: bytes) -> None:
        if first & 0x0F:
            raise Malformed(f"CONNECT with flags {first & 0x0F:#x}")
        try:
            pkt = codec.parse_connect(body)
        except codec.UnsupportedLevel as e:
            log.info("%s: refused: protocol level %d (this server speaks MQTT 3.1.1, level 4)",
                     self.who(), e.level)
            self.write(codec.connack(False, codec.REFUSED_PROTOCOL_VERSION))
            raise _Done() from None
        check_will(pkt.will)
        # A dynamic authenticator may take a while: the CONNECT deadline is met already.
        self._disarm()
        session = self.service.connect(self, pkt)
        if session is None:
            raise _Done()
        self.mqtt = session
        if pkt.keepalive:
            self._limit = pkt.keepalive * 1.5                               # MQTT-3.1.2-24
            self._last_rx = get_hub().loop.now()
            self._arm(self._limit)

    # -- deadlines -----------------------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        self._timer = get_hub().loop.timer(max(seconds, 0.001))
        self._timer.start(self._check_idle)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None

    def _check_idle(self) -> None:
        self._disarm()
        idle = get_hub().loop.now() - self._last_rx
        if self.mqtt is not None and idle < self._limit:
            self._arm(self._limit - idle)
            return
        self._expired = True
        self._abort()

    # -- MessageQueuePeer ----------------------------------------------------------------------
    def _write(self, items: list) -> None:
        self.sock.sendall(items[0] if len(items) == 1 else b"".join(items))


def serve_connection(service: MqttService, sock: socket.socket, address: Any,
                     initial: bytes = b"", channel_type: str | None = None) -> None:
    """Serve one accepted MQTT connection until it ends (blocks this greenlet). ``initial``:
    bytes already read from it (a universal transport's sniffing)."""
    set_nodelay(sock)
    if channel_type is None:
        channel_type = "unix" if sock.family == socket.AF_UNIX else (
            "tls" if hasattr(sock, "unwrap") else "tcp")
    details = {
        "type": "mqtt",
        "channel_type": channel_type,
        "channel_framing": "mqtt",
        "channel_serializer": None,
        "peer": peer_string(sock, address),
        "is_server": True,
        "channel_id": channel_ids(sock),
    }
    MqttConnection(sock, service, details).run(initial)


def _listener(endpoint: Endpoint, config_dir: Path, json_path: str) -> tuple[Any, Any, str]:
    """(listening socket, TLS context or None, url): the web transports' endpoint rules (the
    config model admits tcp and unix only)."""
    if endpoint.type == "unix":
        sock, where = unix_listener(endpoint, config_dir, f"{json_path}.endpoint")
        return sock, None, f"mqtt+unix://{where}"
    tls = endpoint.tls
    ctx = tls_context(tls, config_dir, f"{json_path}.endpoint") if tls else None
    sock, where = tcp_listener(endpoint, f"{json_path}.endpoint")
    return sock, ctx, f"{'mqtts' if tls else 'mqtt'}://{where}"


def build_service(transport: Transport, router: Any) -> MqttService:
    """The MqttService of one mqtt transport."""
    return MqttService(transport.options, router, transport.json_path,
                       max_queue=transport.max_queue, max_queue_bytes=transport.max_queue_bytes)


def serve(transport: Transport, router: Any, ctx: Any,
          max_connections_default: int | None = None) -> StreamServer:
    """A (not yet started) StreamServer for one ``{"type": "mqtt"}`` transport."""
    json_path = transport.json_path
    config_dir = Path(getattr(ctx, "config_dir", "."))
    service = build_service(transport, router)
    endpoint = transport.endpoint
    listener, tls_context, url = _listener(endpoint, config_dir, json_path)
    channel_type = "unix" if endpoint.type == "unix" else ("tls" if tls_context else "tcp")

    def handle(sock: socket.socket, address: Any) -> None:
        if tls_context is not None:
            # The handshake here, not in StreamServer: a client that fails it (or a port
            # probe) is one log line, not a greenlet traceback; and it has a deadline.
            timer = gevent.Timeout(CONNECT_TIMEOUT)
            timer.start()
            try:
                sock = tls_context.wrap_socket(sock, server_side=True)
            except (OSError, gevent.Timeout) as e:
                log.info("mqtt %s: TLS handshake failed: %s", peer_string(sock, address),
                         "no handshake in time" if e is timer else e)
                sock.close()
                return
            finally:
                timer.close()
        try:
            serve_connection(service, sock, address, channel_type=channel_type)
        except Exception:
            log.exception("mqtt %s: connection failed", peer_string(sock, address))
            sock.close()

    cap = ConnectionCap(transport.max_connections or max_connections_default
                        or default_max_connections(), json_path)
    server = StreamServer(listener, handle, spawn=cap.pool)
    cap.install(server)
    server.url = url
    server.mqtt = service
    return server
