"""geonode's WebSocket (``geonode.websocket.connection.WebSocket``) with wsproto doing the framing.

What wsproto does here: frame parsing and building, masking, RFC 6455 validation (opcodes,
reserved bits, control frames, fragmentation, close codes and reasons), incremental UTF-8
validation of text, permessage-deflate (negotiation and (de)compression, its
``PerMessageDeflate`` extension).

What stays geonode's, because wsproto has no notion of it (it is an IO-free state machine):
the socket I/O, one writer at a time, the hand-off from foreign threads, auto-ping, the close
handshake timeout, and the limits ``max_message_size`` / ``max_frame_size`` (wsproto has none:
they are counted here on the payload wsproto hands out). That glue is inherited from geonode's
class unchanged; only the frame layer is replaced.
"""

from __future__ import annotations

from types import SimpleNamespace

from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.handshake import server_extensions_handshake

from geonode.websocket import frames as F
from geonode.websocket.connection import WebSocket
from geonode.websocket.frames import ProtocolError
from geonode.websocket.options import DeflateOptions

_CHUNK = 65536


def negotiate(header: str, opts: DeflateOptions):
    """wsproto's extension negotiation for one ``Sec-WebSocket-Extensions`` header."""
    ext = PerMessageDeflate(
        client_no_context_takeover=opts.request_no_context_takeover,
        server_no_context_takeover=bool(opts.no_context_takeover),
        server_max_window_bits=opts.max_window_bits or None,
        client_max_window_bits=opts.request_max_window_bits or None)
    offers = [o.strip() for o in header.split(",") if o.strip()]
    try:
        agreed = server_extensions_handshake(offers, [ext])
    except ValueError:
        return None
    if agreed is None:
        return None
    return ext, agreed.decode("ascii")


class WsprotoWebSocket(WebSocket):
    """geonode's WebSocket API; frames in and out through a ``wsproto.Connection``."""

    __slots__ = ("_conn", "_events", "_frame_bytes")

    def __init__(self, sock, rfile, options=None, subprotocol=None, deflate=None,
                 environ=None) -> None:
        super().__init__(sock, rfile, options, subprotocol, deflate, environ)
        self._conn = Connection(ConnectionType.SERVER,
                                extensions=[deflate] if deflate is not None else None)
        self._events = None
        self._frame_bytes = 0

    @property
    def extensions(self) -> str | None:
        return "permessage-deflate" if self._pmd is not None else None

    # ---- reading ----------------------------------------------------------------------
    def _receive(self):
        conn = self._conn
        while True:
            events = self._events
            if events is None:
                events = self._events = conn.events()
            for ev in events:
                out = self._on_event(ev)
                if out is not None:
                    return out if out is not _CLOSED else None
            self._events = None
            data = self._rfile.read1(_CHUNK)
            if not data:
                raise EOFError("connection closed by peer")
            self._rx_frames += 1
            conn.receive_data(data)

    def _on_event(self, ev):
        t = type(ev)
        if t is TextMessage or t is BytesMessage:
            data = ev.data
            n = len(data)
            self._frame_bytes += n
            self._msg_size += n
            if self._max_frame and self._frame_bytes > self._max_frame:
                raise ProtocolError(F.CLOSE_TOO_BIG, f"frame over {self._max_frame} bytes")
            if self._max_msg and self._msg_size > self._max_msg:
                raise ProtocolError(F.CLOSE_TOO_BIG, f"message over {self._max_msg} bytes")
            if ev.frame_finished:
                self._frame_bytes = 0
            if n:
                self._parts.append(data)
            if not ev.message_finished:
                return None
            parts, self._parts, self._msg_size = self._parts, [], 0
            if self._close_sent:
                return None   # closing: data still arriving is read and dropped
            if t is TextMessage:
                return parts[0] if len(parts) == 1 else "".join(parts)
            if len(parts) == 1:
                return bytes(parts[0])
            return b"".join(parts)
        if t is Ping:
            if not self._close_sent:
                self._send_bytes(self._conn.send(ev.response()))
            return None
        if t is Pong:
            if self._pong is not None and bytes(ev.payload) == self._ping_payload:
                self._pong.set()
            return None
        if t is CloseConnection:
            state = self._conn.state
            if state is ConnectionState.OPEN:
                # wsproto reports a protocol violation as a CloseConnection in state OPEN.
                raise ProtocolError(int(ev.code), ev.reason or "protocol error")
            self._close_received = True
            code = int(ev.code)
            if state is ConnectionState.REMOTE_CLOSING:
                self.close_code, self.close_reason = code, ev.reason or ""
                reply = None if code == F.CLOSE_NO_STATUS else code
                self._send_close(reply, "")
            self._terminate()
            return _CLOSED
        return None

    # ---- writing ----------------------------------------------------------------------
    def _encode(self, data) -> bytes:
        if isinstance(data, str):
            return self._conn.send(TextMessage(data=data))
        return self._conn.send(BytesMessage(data=bytes(data)))

    def _send_bytes(self, data: bytes) -> None:
        if self._close_sent or self._dead:
            return
        with self._wlock:
            if self._close_sent or self._dead:
                return
            self._sendall(data)

    def _send_control(self, opcode: int, payload: bytes) -> None:
        if opcode == F.OP_PING:
            self._send_bytes(self._conn.send(Ping(payload=payload)))
        else:
            self._send_bytes(self._conn.send(Pong(payload=payload)))

    def _send_close(self, code: int | None, reason: str) -> None:
        with self._wlock:
            if self._close_sent or self._dead:
                return
            self._close_sent = True
            if self.close_code is None:
                self.close_code = F.CLOSE_NO_STATUS if code is None else code
                self.close_reason = reason
            try:
                data = self._conn.send(CloseConnection(code=code, reason=reason or None)
                                       if code is not None else CloseConnection(code=None))
            except Exception:  # noqa: BLE001 - wsproto refuses a close in some states
                return
            self._sendall(data)


_CLOSED = object()


def install(handshake_module, variant: str) -> None:
    """Make ``Upgrader.accept`` build a :class:`WsprotoWebSocket` and negotiate with wsproto."""
    handshake_module.WebSocket = WsprotoWebSocket
    handshake_module.deflate = SimpleNamespace(negotiate=negotiate)
