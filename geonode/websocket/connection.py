"""One server-side WebSocket connection: messages in, messages out, RFC 6455 rules enforced.

Reading happens in the greenlet that calls :meth:`WebSocket.receive` (one reader at a time);
control frames (ping, pong, close) are answered there. Writing is serialized by a gevent lock
so frames of concurrent senders never interleave; compression happens under that lock too,
because with context takeover the deflate stream must follow wire order.

Sends from other OS threads (e.g. a WSGI app on a gevent ThreadPool) are not done in that
thread: :meth:`send`, :meth:`send_many`, :meth:`ping`, :meth:`close` and :meth:`abort` called
off the hub's thread are handed to the hub (``geonode.handoff.Pump``: one greenlet per
connection, started by the first such call, performs them in order). Such calls return at once
(fire and forget); a send on a closed connection is dropped silently, as from any greenlet. A
thread that sends faster than the peer reads waits (that thread only, never the hub) once
``MAX_HANDOFFS`` calls are queued, as a blocking socket write would make it.

Pongs (and the peer's close frame) are only seen while some greenlet is in ``receive()``:
with ``auto_ping_timeout`` set, an app that stops reading gets its connection dropped. The
WAMP peer (``geonode.transport.websocket``) and the testee are never caught by this: their
greenlet is back in ``receive()`` after every message (the router's ``receive`` never
blocks) and keeps reading while closing.

Memory per idle connection: this object (~430 B with its lock) and a ``SocketReader``
(``geonode.websocket.reader``) that holds bytes only while a message is being parsed; the
request's 8 KiB BufferedReader is left behind at the upgrade. A WAMP session also leaves its
request greenlet, handler and environ behind (``Upgrader.detach``): measured 26.6 KiB RSS per
idle joined session before, 14.2 KiB after (``bench/sessions/breakdown.py``).
"""

from __future__ import annotations

import codecs
import os
import socket
import struct
from typing import Any

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from gevent.socket import socket as _GeventSocket

from geonode.handoff import Pump, real_allocate_lock, real_get_ident
from geonode.websocket import frames as F
from geonode.websocket.frames import ProtocolError
from geonode.websocket.options import WebSocketOptions

_thread_ident = real_get_ident
_handoff_lock = real_allocate_lock()   # a real lock: foreign threads race to make the pump
_utf8_decoder = codecs.getincrementaldecoder("utf-8")
_unpack_H = struct.Struct("!H").unpack
_unpack_Q = struct.Struct("!Q").unpack
_CHUNK = 65536
_BIG = 2048      # payloads from here on are read into a bytearray and unmasked in place
# Frames claiming more than this are read piecewise: memory follows the bytes that really
# arrive, never a length field (an endpoint without max_frame_size still cannot be made to
# allocate gigabytes by a 14-byte header).
_PREALLOC_MAX = 16 * 1024 * 1024
MAX_HANDOFFS = 1000   # calls from other threads queued for the hub before the sender waits
# The last message framed without compression and its frame (str and bytes only: immutable).
_last_message: Any = None
_last_frame = b""


class WebSocket:
    """A server-side WebSocket on an accepted connection (see the module docstring)."""

    # Thousands of idle connections are normal for a router: keep each one small.
    __slots__ = ("_sock", "_rfile", "options", "subprotocol", "environ", "_pmd", "_max_msg",
                 "_max_frame", "_validate", "_wlock", "_loop", "_hub_thread", "_handoffs",
                 "_close_sent", "_close_received", "_dead", "_reading",
                 "close_code", "close_reason", "_msg_op", "_msg_compressed", "_msg_size",
                 "_parts", "_decoder", "_pong", "_ping_payload", "_rx_frames", "_pinger",
                 "_wtail", "__weakref__")

    def __init__(self, sock, rfile, options: WebSocketOptions | None = None,
                 subprotocol: str | None = None, deflate=None, environ: dict | None = None):
        self._sock = sock
        self._rfile = rfile
        self.options = opts = options or WebSocketOptions()
        self.subprotocol = subprotocol
        self.environ = environ or {}
        self._pmd = deflate
        self._max_msg = opts.max_message_size
        self._max_frame = opts.max_frame_size
        self._validate = opts.validate_utf8
        self._wlock = Semaphore(1)
        self._wtail: bytes | None = None   # what send_nowait could not write (sent first)
        hub = gevent.get_hub()
        self._loop = hub.loop
        self._hub_thread = _thread_ident()
        self._handoffs: Pump | None = None   # calls handed over by other threads (lazy)
        # state
        self._close_sent = False
        self._close_received = False
        self._dead = False
        self._reading = False
        self.close_code: int | None = None
        self.close_reason = ""
        # message being assembled
        self._msg_op: int | None = None
        self._msg_compressed = False
        self._msg_size = 0
        self._parts: list = []
        self._decoder: Any = None  # an incremental UTF-8 decoder, for a text message
        # auto ping
        self._pong: Any = None  # an Event when auto-ping is on
        self._ping_payload: bytes | None = None
        self._rx_frames = 0     # frames received: liveness for auto_ping_restart_on_any_traffic
        self._pinger = None
        if opts.auto_ping_interval > 0:
            self._pong = Event()
            self._pinger = gevent.spawn(self._auto_ping)

    def rebind(self, sock) -> None:
        """Continue on ``sock`` (the same connection), owned by this WebSocket from now on
        (a detach): the request's environ is let go."""
        self._sock = sock
        self._rfile.sock = sock
        self.environ = {}

    def release(self) -> None:
        """Close the TCP socket: the connection's owner is done with it (after a detach the
        WebSocket's greenlet owns it, not pywsgi; it also closes the reader it holds, which
        keeps the socket open until then: ``Handler.detach_websocket``)."""
        try:
            self._sock.close()
        except OSError:
            pass

    # ------------------------------------------------------------------ public API
    @property
    def closed(self) -> bool:
        """True once a close frame went either way or the connection dropped."""
        return self._close_sent or self._close_received or self._dead

    @property
    def extensions(self) -> str | None:
        return "permessage-deflate" if self._pmd is not None else None

    def receive(self) -> str | bytes | None:
        """The next message (str for text, bytes for binary), or None once closed."""
        if self._close_received or self._dead:
            return None
        if self._reading:
            raise RuntimeError("another greenlet is already in receive() on this WebSocket")
        self._reading = True
        try:
            return self._receive()
        except ProtocolError as e:
            self._fail(e.code, e.reason)
            return None
        except (OSError, EOFError, ValueError):
            self._lost()
            return None
        except MemoryError:
            self._fail(F.CLOSE_TOO_BIG, "message too big")
            return None
        finally:
            self._reading = False

    def send(self, data: str | bytes | bytearray | memoryview) -> None:
        """Send one message: str as text, bytes-like as binary. Dropped if closed."""
        if self._hub_thread != _thread_ident():
            self._handoff(self.send, data)
            return
        if self._close_sent or self._dead:
            return
        with self._wlock:
            if self._close_sent or self._dead:
                return
            self._sendall(self._encode(data))

    def send_many(self, messages: list) -> None:
        """Send several messages with one socket write."""
        if self._hub_thread != _thread_ident():
            self._handoff(self.send_many, list(messages))
            return
        if self._close_sent or self._dead or not messages:
            return
        with self._wlock:
            if self._close_sent or self._dead:
                return
            self._sendall(b"".join([self._encode(m) for m in messages]))

    def send_nowait(self, messages: list) -> int:
        """Send messages without blocking, from the hub's thread: 1 when done (or dropped:
        closed), 0 when nothing was taken (the socket is being written by someone else, or
        it is not a plain gevent socket: use ``send_many``), 2 when part of it is left: it
        goes out first with the next write of any kind (``flush()`` sends it alone)."""
        if self._close_sent or self._dead:
            return 1
        sock = self._sock
        if type(sock) is not _GeventSocket or self._wtail is not None or self._wlock.locked():
            return 0
        if len(messages) == 1:
            global _last_message, _last_frame
            msg = messages[0]
            if msg is _last_message and self._pmd is None:
                # The same message to many idle connections (an EVENT to every subscriber;
                # the serializer returns the very same object): framed once.
                data = _last_frame
            else:
                data = self._encode(msg)
                if self._pmd is None and (type(msg) is str or type(msg) is bytes):
                    _last_message, _last_frame = msg, data
        else:
            data = b"".join([self._encode(m) for m in messages])
        try:
            sent = sock._sock.send(data)     # the OS socket: non-blocking under gevent
        except BlockingIOError:
            sent = 0
        except (OSError, ValueError):
            self._lost()
            return 1
        if sent == len(data):
            return 1
        # Encoded (deflate's context moved on): it cannot be taken back, only finished.
        self._wtail = data[sent:]
        return 2

    def flush(self) -> None:
        """Send what ``send_nowait`` left, if anything (blocking)."""
        if self._wtail is None:
            return
        with self._wlock:
            if self._wtail is not None and not self._dead:
                self._sendall(b"")

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping (payload ≤ 125 bytes)."""
        if self._hub_thread != _thread_ident():
            self._handoff(self.ping, payload)
            return
        if len(payload) > 125:
            raise ValueError("ping payload over 125 bytes")
        self._send_control(F.OP_PING, payload)

    def close(self, code: int = F.CLOSE_NORMAL, reason: str = "") -> None:
        """Start (or finish) the closing handshake and drop the connection after it.

        Called from the reading greenlet's peers, it returns at once and the reader finishes
        the handshake; called with no reader active, it waits for the peer's close frame
        (at most ``close_handshake_timeout``).
        """
        if self._hub_thread != _thread_ident():
            self._handoff(self.close, code, reason)
            return
        if self._dead or self._close_received:
            return
        if not self._close_sent:
            if code != F.CLOSE_NORMAL and not F.valid_close_code(code):
                raise ValueError(f"close code {code} may not be sent")
            self._send_close(code, reason)
        timeout = self.options.close_handshake_timeout / 1000.0
        if self._reading:
            # The reader gets the peer's reply; make sure a silent peer cannot hold us.
            gevent.spawn_later(timeout or 1.0, self._abort_if_open)
            return
        self._reading = True
        try:
            with gevent.Timeout(timeout or None, False):
                self._receive()
        except (ProtocolError, OSError, EOFError, ValueError):
            pass
        finally:
            self._reading = False
        if not self._dead:
            self._terminate()

    def abort(self) -> None:
        """Drop the TCP connection now, without a closing handshake (close_code 1006)."""
        if self._hub_thread != _thread_ident():
            self._handoff(self.abort)
            return
        self._lost()

    # ------------------------------------------------------------------ reading
    def _read_exact(self, n: int) -> bytes:
        data = self._rfile.read(n)
        if len(data) < n:
            raise EOFError("connection closed by peer")
        return data

    def _receive(self):  # noqa: C901 - the per-frame loop, one function on purpose (a call per frame costs every message); a branch per RFC 6455 rule
        read = self._read_exact
        while True:
            b0, b1 = read(2)
            self._rx_frames += 1
            fin = b0 & 0x80
            rsv1 = b0 & 0x40
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            if length == 126:
                length = _unpack_H(read(2))[0]
            elif length == 127:
                length = _unpack_Q(read(8))[0]
                if length >> 63:
                    raise ProtocolError(F.CLOSE_PROTOCOL_ERROR, "frame length with MSB set")
            if b0 & 0x30:
                raise ProtocolError(F.CLOSE_PROTOCOL_ERROR, "reserved bits RSV2/RSV3 set")
            if opcode & 0x8:
                if opcode > F.OP_PONG:
                    raise ProtocolError(F.CLOSE_PROTOCOL_ERROR, f"reserved opcode {opcode}")
                if not fin:
                    raise ProtocolError(F.CLOSE_PROTOCOL_ERROR, "fragmented control frame")
                if length > 125:
                    raise ProtocolError(F.CLOSE_PROTOCOL_ERROR, "control frame over 125 bytes")
                if rsv1:
                    raise ProtocolError(F.CLOSE_PROTOCOL_ERROR, "RSV1 set on a control frame")
            else:
                if opcode > F.OP_BINARY:
                    raise ProtocolError(F.CLOSE_PROTOCOL_ERROR, f"reserved opcode {opcode}")
                if opcode == F.OP_CONTINUATION:
                    if self._msg_op is None:
                        raise ProtocolError(F.CLOSE_PROTOCOL_ERROR,
                                            "continuation frame without a message")
                    if rsv1:
                        raise ProtocolError(F.CLOSE_PROTOCOL_ERROR,
                                            "RSV1 set on a continuation frame")
                else:
                    if self._msg_op is not None:
                        raise ProtocolError(F.CLOSE_PROTOCOL_ERROR,
                                            "new message before the last one ended")
                    if rsv1 and self._pmd is None:
                        raise ProtocolError(F.CLOSE_PROTOCOL_ERROR,
                                            "RSV1 set without a negotiated extension")
            if not b1 & 0x80:
                raise ProtocolError(F.CLOSE_PROTOCOL_ERROR, "client frames must be masked")
            mask = read(4)
            if self._max_frame and length > self._max_frame:
                raise ProtocolError(F.CLOSE_TOO_BIG, f"frame over {self._max_frame} bytes")

            if opcode & 0x8:
                payload = F.xor_mask(read(length), mask) if length else b""
                if self._on_control(opcode, payload):
                    return None
                continue

            if opcode:
                self._msg_op = opcode
                self._msg_compressed = bool(rsv1)
                self._msg_size = 0
                if rsv1:
                    self._pmd.start_message()
            # Refused on the header, before any of the payload is read; fragments add up.
            self._msg_size += length
            if self._max_msg and self._msg_size > self._max_msg and (
                    not self._msg_compressed
                    # compressed: the wire bytes too (incompressible data grows a little;
                    # the inflated size is bounded by PerMessageDeflate.decompress)
                    or self._msg_size > self._max_msg + (self._max_msg >> 8) + 64):
                raise ProtocolError(F.CLOSE_TOO_BIG, f"message over {self._max_msg} bytes")
            msg = self._read_data(length, mask, bool(fin))
            if fin:
                self._msg_op = None
                if self._close_sent:
                    continue   # closing: data still arriving is read and dropped
                return msg

    def _read_payload(self, length: int, mask: bytes):
        if length < _BIG:
            return F.xor_mask(self._read_exact(length), mask) if length else b""
        if length > _PREALLOC_MAX:
            pieces, offset = [], 0
            while offset < length:
                piece = self._read_exact(min(length - offset, _PREALLOC_MAX))
                pieces.append(F.xor_mask(piece, mask, offset))
                offset += len(piece)
            return b"".join(pieces)
        buf = bytearray(length)
        if self._rfile.readinto(buf) < length:
            raise EOFError("connection closed by peer")
        F.unmask_inplace(buf, mask)
        return buf

    def _read_data(self, length: int, mask: bytes, fin: bool):
        """Read one data frame's payload; returns the whole message when ``fin``."""
        text = self._msg_op == F.OP_TEXT
        parts = self._parts
        if self._msg_compressed:
            data = self._pmd.decompress(self._read_payload(length, mask), self._max_msg, fin)
            if text:
                self._decode(data, fin)
            else:
                parts.append(data)
        elif text:
            first = self._rfile.read1(length) if length else b""
            if len(first) == length and fin and not parts and self._decoder is None:
                # The common case: a whole text message in one frame, already buffered.
                data = F.xor_mask(first, mask)
                try:
                    return str(data, "utf-8")
                except UnicodeDecodeError:
                    if self._validate:
                        raise ProtocolError(F.CLOSE_INVALID_PAYLOAD,
                                            "text message is not valid UTF-8") from None
                    return str(data, "utf-8", "replace")
            if not first and length:
                raise EOFError("connection closed by peer")
            # Validate as the bytes arrive, so invalid UTF-8 fails fast even mid-frame.
            offset = len(first)
            self._decode(F.xor_mask(first, mask), fin and offset == length)
            while offset < length:
                chunk = self._rfile.read1(min(length - offset, _CHUNK))
                if not chunk:
                    raise EOFError("connection closed by peer")
                piece = F.xor_mask(chunk, mask, offset)
                offset += len(chunk)
                self._decode(piece, fin and offset == length)
        else:
            parts.append(self._read_payload(length, mask))
        if not fin:
            return None
        self._parts = []
        self._decoder = None
        if text:
            return parts[0] if len(parts) == 1 else "".join(parts)
        if len(parts) == 1:
            p = parts[0]
            return p if type(p) is bytes else bytes(p)
        return b"".join(parts)

    def _decode(self, data, final: bool) -> None:
        dec = self._decoder
        if dec is None:
            dec = self._decoder = _utf8_decoder("strict" if self._validate else "replace")
        try:
            s = dec.decode(data, final)
        except UnicodeDecodeError:
            raise ProtocolError(F.CLOSE_INVALID_PAYLOAD, "text message is not valid UTF-8") \
                from None
        if s:
            self._parts.append(s)

    def _on_control(self, opcode: int, payload: bytes) -> bool:
        """Handle a control frame; True when the connection is now closed."""
        if opcode == F.OP_PING:
            if not self._close_sent:
                self._send_control(F.OP_PONG, payload)
            return False
        if opcode == F.OP_PONG:
            if self._pong is not None and payload == self._ping_payload:
                self._pong.set()
            return False
        code, reason = F.parse_close(payload, self._validate)
        self._close_received = True
        if not self._close_sent:
            self.close_code, self.close_reason = code, reason
            # Echo the peer's code (RFC 6455 §5.5.1); no code in, no code out.
            self._send_close(None if code == F.CLOSE_NO_STATUS else code, "")
        self._terminate()
        return True

    # ------------------------------------------------------------------ writing
    def _encode(self, data) -> bytes:
        if isinstance(data, str):
            opcode, payload = F.OP_TEXT, data.encode("utf-8")
        else:
            opcode, payload = F.OP_BINARY, data
        rsv1 = False
        if self._pmd is not None:
            compressed = self._pmd.compress(payload)
            if compressed is not None:
                payload, rsv1 = compressed, True
        head = F.frame_header(opcode, len(payload), True, rsv1)
        if type(payload) is bytes:
            return head + payload
        return head + bytes(payload)

    def _sendall(self, data: bytes) -> None:
        tail = self._wtail
        if tail is not None:
            self._wtail = None
            data = tail + data
        try:
            self._sock.sendall(data)
        except (OSError, ValueError):
            self._lost()

    def _send_control(self, opcode: int, payload: bytes) -> None:
        if self._close_sent or self._dead:
            return
        with self._wlock:
            if self._close_sent or self._dead:
                return
            self._sendall(F.frame_header(opcode, len(payload)) + payload)

    def _send_close(self, code: int | None, reason: str) -> None:
        with self._wlock:
            if self._close_sent or self._dead:
                return
            self._close_sent = True
            if self.close_code is None:
                self.close_code = F.CLOSE_NO_STATUS if code is None else code
                self.close_reason = reason
            payload = F.close_payload(code, reason)
            self._sendall(F.frame_header(F.OP_CLOSE, len(payload)) + payload)

    def _handoff(self, method, *args) -> None:
        pump = self._handoffs
        if pump is None:
            with _handoff_lock:
                pump = self._handoffs
                if pump is None:
                    # fair_share=0: never yield between calls, so what a thread sent goes out
                    # before what the hub sends after it (the write lock is not fair)
                    pump = self._handoffs = Pump(_perform, self._loop, name="websocket",
                                                 fair_share=0)
        if len(pump) >= MAX_HANDOFFS:
            # a foreign thread: back-pressure instead of unbounded memory (until the
            # connection is gone: its pump stops then)
            pump.wait_for_room(MAX_HANDOFFS)
        pump.put_threadsafe((method, args))

    def _stop_handoffs(self) -> None:
        # The connection is dead: the calls still queued run (as no-ops), later ones are dropped.
        if self._handoffs is not None:
            self._handoffs.stop()

    # ------------------------------------------------------------------ closing
    def _fail(self, code: int, reason: str) -> None:
        """Protocol violation by the peer: send our close code, then drop the connection."""
        if not self._close_sent:
            self._send_close(code, reason)
        self._terminate()

    def _lost(self) -> None:
        """The TCP connection broke (or was aborted) without a closing handshake."""
        if self.close_code is None:
            self.close_code = F.CLOSE_ABNORMAL
        self._dead = True
        self._wtail = None
        self._shutdown(socket.SHUT_RDWR)
        self._stop_pinger()
        self._stop_handoffs()

    def _terminate(self) -> None:
        """After the close frames: the server closes TCP first (RFC 6455 §7.1.1).

        Half-close, then read until the peer's EOF so our last frame is not destroyed by an
        RST that unread data would cause.
        """
        if self._dead:
            return
        self._dead = True
        self._stop_pinger()
        self._stop_handoffs()
        self._shutdown(socket.SHUT_WR)
        timeout = self.options.close_handshake_timeout / 1000.0 or 1.0
        try:
            with gevent.Timeout(timeout, False):
                while self._rfile.read1(_CHUNK):
                    pass
        except (OSError, ValueError):
            pass
        self._shutdown(socket.SHUT_RDWR)

    def _shutdown(self, how: int) -> None:
        try:
            self._sock.shutdown(how)
        except (OSError, ValueError):
            pass

    def _abort_if_open(self) -> None:
        if not self._dead:
            self._lost()

    def _stop_pinger(self) -> None:
        p = self._pinger
        if p is not None and p is not gevent.getcurrent():
            self._pinger = None
            p.kill(block=False)

    def _auto_ping(self) -> None:
        interval = self.options.auto_ping_interval / 1000.0
        timeout = self.options.auto_ping_timeout / 1000.0
        while not self.closed:
            gevent.sleep(interval)
            if self.closed:
                return
            self._pong.clear()
            self._ping_payload = os.urandom(self.options.auto_ping_size)
            rx = self._rx_frames
            self._send_control(F.OP_PING, self._ping_payload)
            if timeout and not self._pong.wait(timeout):
                if self.options.auto_ping_restart_on_any_traffic and self._rx_frames != rx:
                    continue
                if not self.closed:
                    # Peer silent: drop it, the reader sees the connection end.
                    self.close_code = F.CLOSE_ABNORMAL
                    self.close_reason = "auto-ping timeout"
                    self._pinger = None
                    self._lost()
                return


def _perform(call: tuple) -> None:
    """A call handed over by another thread, on the hub."""
    method, args = call
    try:
        method(*args)
    except Exception:  # noqa: BLE001 - a bad foreign call must not stop the queue
        pass
