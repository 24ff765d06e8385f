"""A lean WAMP-over-WebSocket load client: plain sockets, pre-built frames, minimal parsing.

autobahn's asyncio client spends ~100 µs of Python per message and saturates a core near
8k events/s, so it cannot measure a router faster than that. Here a message costs a few µs:
frames are built with a zero mask key (legal, and the payload needs no XOR), received frames
are split by header only, and payloads are decoded only when the test needs a field.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import socket
import struct
from collections.abc import Callable

import msgpack

_H = struct.Struct("!H")
_Q = struct.Struct("!Q")
_ZERO_MASK = b"\x00\x00\x00\x00"
_TIMEVAL = struct.Struct("@ll")
TIMEOUT = 30.0  # seconds a blocking read or write may wait


@functools.cache
def encoder(serializer: str) -> tuple[Callable[[object], bytes], Callable[[bytes], object], int]:
    """(encode, decode, websocket opcode) for ``json`` or ``msgpack``."""
    if serializer == "json":
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        return (lambda o: dumps(o).encode()), json.loads, 0x1
    if serializer == "msgpack":
        return (lambda o: msgpack.packb(o, use_bin_type=True)), \
            (lambda b: msgpack.unpackb(b, raw=False)), 0x2
    raise ValueError(serializer)


def frame(payload: bytes, opcode: int) -> bytes:
    """A masked client frame (mask key 0000: the payload goes as is)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + _H.pack(n)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + _Q.pack(n)
    return head + _ZERO_MASK + payload


class Closed(Exception):
    pass


class Conn:
    """One WebSocket connection speaking WAMP with a given serializer."""

    def __init__(self, host: str, port: int, path: str, serializer: str,
                 connect: bool = True) -> None:
        self.enc, self.dec, self.opcode = encoder(serializer)
        self.serializer = serializer
        self.buf = bytearray()
        self.pending: list[bytes] = []
        self.host, self.port, self.path = host, port, path
        self.sock: socket.socket | None = None
        self._req = 0
        if connect:
            self.open()
            self.handshake_finish()

    # -- opening ------------------------------------------------------------------------
    def open(self, lean: bool = False) -> None:
        """Connect and send the upgrade request. ``lean`` (many connections, an IPv4
        address): no name lookup, and the timeout is the kernel's (SO_RCVTIMEO/SO_SNDTIMEO;
        a read that times out raises BlockingIOError) instead of Python's, which polls
        before every read: a third of the load generator's CPU per join."""
        if lean:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tv = _TIMEVAL.pack(int(TIMEOUT), 0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
            s.connect((self.host, self.port))
        else:
            # A timeout so a lost reply ends the run with an error instead of hanging it
            # (setblocking() in loads.py replaces it where a load loop polls instead).
            s = socket.create_connection((self.host, self.port), timeout=TIMEOUT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Protocol: wamp.2.{self.serializer}\r\n\r\n")
        s.sendall(req.encode())
        self.sock = s

    def handshake_finish(self) -> None:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"upgrade refused: {head[:200]!r}")
        self.buf = bytearray(rest)

    def hello(self, realm: str) -> None:
        self.send([1, realm, {"roles": {"publisher": {}, "subscriber": {}, "caller": {},
                                        "callee": {}}}])

    def join(self, realm: str) -> int:
        self.hello(realm)
        msg = self.recv()
        if msg[0] != 2:
            raise RuntimeError(f"not welcomed: {msg}")
        return msg[1]

    def next_request(self) -> int:
        self._req += 1
        return self._req

    def subscribe(self, topic: str, match: str = "exact") -> int:
        self.send([32, self.next_request(), {} if match == "exact" else {"match": match},
                   topic])
        msg = self.recv()
        assert msg[0] == 33, msg
        return msg[2]

    def register(self, procedure: str) -> int:
        self.send([64, self.next_request(), {}, procedure])
        msg = self.recv()
        assert msg[0] == 65, msg
        return msg[2]

    # -- I/O --------------------------------------------------------------------------------
    def _fill(self) -> int:
        data = self.sock.recv(262144)
        if not data:
            raise Closed("connection closed")
        self.buf += data
        return len(data)

    def send(self, obj: object) -> None:
        self.sock.sendall(frame(self.enc(obj), self.opcode))

    def send_raw(self, frames: bytes) -> None:
        self.sock.sendall(frames)

    def frames(self) -> list[bytes]:
        """Complete data frames in the buffer (payloads), consumed."""
        buf = self.buf
        out = []
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b1 = buf[pos + 1] & 0x7F
            if b1 < 126:
                hl, size = 2, b1
            elif b1 == 126:
                if n - pos < 4:
                    break
                hl, size = 4, _H.unpack_from(buf, pos + 2)[0]
            else:
                if n - pos < 10:
                    break
                hl, size = 10, _Q.unpack_from(buf, pos + 2)[0]
            if n - pos - hl < size:
                break
            op = buf[pos] & 0x0F
            payload = bytes(buf[pos + hl:pos + hl + size])
            pos += hl + size
            if op in (1, 2):
                out.append(payload)
            elif op == 9:
                self.sock.sendall(frame(payload, 0xA))
            elif op == 8:
                raise Closed(f"close frame {payload[:2].hex()}")
        if pos:
            del buf[:pos]
        return out

    def count_frames(self) -> int:
        """Count complete data frames in the buffer without copying payloads (consumed)."""
        buf = self.buf
        pos = 0
        count = 0
        n = len(buf)
        while n - pos >= 2:
            b1 = buf[pos + 1] & 0x7F
            if b1 < 126:
                hl, size = 2, b1
            elif b1 == 126:
                if n - pos < 4:
                    break
                hl, size = 4, _H.unpack_from(buf, pos + 2)[0]
            else:
                if n - pos < 10:
                    break
                hl, size = 10, _Q.unpack_from(buf, pos + 2)[0]
            if n - pos - hl < size:
                break
            if buf[pos] & 0x0F == 8:
                raise Closed("close frame")
            pos += hl + size
            count += 1
        if pos:
            del buf[:pos]
        return count

    def recv(self) -> list:
        """Block until one WAMP message arrives; decoded."""
        while not self.pending:
            self.pending.extend(self.frames())
            if not self.pending:
                self._fill()
        return self.dec(self.pending.pop(0))

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
