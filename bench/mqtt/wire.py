"""Lean load clients for bench/mqtt: MQTT 3.1.1 and WAMP-over-RawSocket on plain sockets.

paho-mqtt spends ~30-60 µs of Python per message and autobahn ~100 µs; a broker in C moves a
message in a few µs, so neither could measure it. Here packets are pre-built (a PUBLISH is the
same bytes every time but for its packet identifier) and received bytes are split by their
fixed headers only; payloads are never decoded.
"""

from __future__ import annotations

import socket
import struct

import msgpack

TIMEOUT = 30.0   # seconds a blocking read or write may wait
_H = struct.Struct("!H")


class Closed(Exception):
    pass


def _remaining(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return _H.pack(len(b)) + b


def packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _remaining(len(body)) + body


def connect_packet(client_id: str, keepalive: int = 0, clean: bool = True) -> bytes:
    flags = 0x02 if clean else 0
    return packet(0x10, _string("MQTT") + bytes((4, flags)) + _H.pack(keepalive)
                  + _string(client_id))


def publish_packet(topic: str, payload: bytes, qos: int = 0, pid: int = 0) -> bytes:
    body = _string(topic) + (_H.pack(pid) if qos else b"") + payload
    return packet(0x30 | (qos << 1), body)


class Mqtt:
    """One MQTT connection: connect, subscribe, then raw sends and header-only counting."""

    def __init__(self, port: int, client_id: str, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.sock.sendall(connect_packet(client_id))
        first, body = self.read_packet()
        if first != 0x20 or body[1] != 0:
            raise RuntimeError(f"CONNACK refused: {first:#x} {bytes(body)!r}")
        self.acks = bytearray()   # PUBACKs owed for received QoS 1 messages

    def read_packet(self) -> tuple[int, bytes]:
        """One whole packet, blocking (set-up only)."""
        while True:
            got = self._split_one()
            if got is not None:
                return got
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed("connection closed")
            self.buf += chunk

    def _split_one(self) -> tuple[int, bytes] | None:
        buf = self.buf
        if len(buf) < 2:
            return None
        n, mul, i = 0, 1, 1
        while True:
            if i >= len(buf):
                return None
            b = buf[i]
            n += (b & 0x7F) * mul
            mul <<= 7
            i += 1
            if not b & 0x80:
                break
        if len(buf) < i + n:
            return None
        first, body = buf[0], bytes(buf[i:i + n])
        del buf[:i + n]
        return first, body

    def subscribe(self, topic_filter: str, qos: int) -> None:
        self.sock.sendall(packet(0x82, _H.pack(1) + _string(topic_filter) + bytes((qos,))))
        first, body = self.read_packet()
        if first != 0x90 or body[2] > 2:
            raise RuntimeError(f"SUBACK refused: {bytes(body)!r}")

    def fill(self) -> int:
        """Read what the socket has (non-blocking socket); the byte count, 0 on EOF."""
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise Closed("connection closed")
        self.buf += chunk
        return len(chunk)

    def count(self) -> tuple[int, int]:
        """(PUBLISH packets, PUBACK packets) complete in the buffer, consumed; for each QoS 1
        PUBLISH its PUBACK is appended to ``self.acks``."""
        buf = self.buf
        n = len(buf)
        i = pubs = acks = 0
        while i + 2 <= n:
            first = buf[i]
            rl = buf[i + 1]
            j = i + 2
            if rl & 0x80:
                rl &= 0x7F
                shift = 7
                while True:
                    if j >= n:
                        break
                    b = buf[j]
                    j += 1
                    rl |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                else:
                    break
                if j > n or buf[j - 1] & 0x80:
                    break
            end = j + rl
            if end > n:
                break
            kind = first >> 4
            if kind == 3:
                pubs += 1
                if first & 0x06:
                    tl = (buf[j] << 8) | buf[j + 1]
                    k = j + 2 + tl
                    self.acks += b"\x40\x02" + buf[k:k + 2]
            elif kind == 4:
                acks += 1
            i = end
        if i:
            del buf[:i]
        return pubs, acks

    def flush_acks(self) -> None:
        if self.acks:
            send_all(self.sock, bytes(self.acks))
            self.acks.clear()

    def close(self) -> None:
        try:
            self.sock.sendall(b"\xe0\x00")
        except OSError:
            pass
        self.sock.close()


class Publisher:
    """Pre-built PUBLISH packets: QoS 0 all alike, QoS 1 one per packet identifier."""

    def __init__(self, topic: str, payload: bytes, qos: int) -> None:
        self.qos = qos
        if qos == 0:
            self.one = publish_packet(topic, payload)
        else:
            head = publish_packet(topic, payload, 1, 1)
            # the packet identifier sits right after the topic: patch it per packet
            at = head.index(_string(topic)) + len(_string(topic))
            self.pre, self.post = head[:at], head[at + 2:]
            self.packets = [self.pre + _H.pack(i) + self.post for i in range(65536)]
        self.next_id = 1

    def batch(self, n: int) -> bytes:
        if self.qos == 0:
            return self.one * n
        out = []
        pid = self.next_id
        for _ in range(n):
            out.append(self.packets[pid])
            pid = pid + 1 if pid < 65535 else 1
        self.next_id = pid
        return b"".join(out)


def send_all(sock: socket.socket, data: bytes) -> None:
    """sendall on a socket the caller keeps non-blocking."""
    sock.setblocking(True)
    try:
        sock.sendall(data)
    finally:
        sock.setblocking(False)


# -- WAMP over RawSocket (msgpack) ---------------------------------------------------------------

class RawSocketWamp:
    """A msgpack RawSocket WAMP session: join, subscribe, raw PUBLISH frames, frame counting."""

    def __init__(self, port: int, realm: str, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(bytes((0x7F, 0xF2, 0, 0)))
        hello = self._recv_exact(4)
        if hello[0] != 0x7F or hello[1] & 0x0F != 2:
            raise RuntimeError(f"RawSocket handshake refused: {hello!r}")
        self.buf = bytearray()
        self.send_msg([1, realm, {"roles": {"subscriber": {}, "publisher": {}}}])
        welcome = self.read_msg()
        if welcome[0] != 2:
            raise RuntimeError(f"not welcomed: {welcome!r}")

    def _recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise Closed("connection closed")
            data += chunk
        return data

    @staticmethod
    def frame(msg: list) -> bytes:
        data = msgpack.packb(msg, use_bin_type=True)
        return struct.pack("!I", len(data)) + data

    def send_msg(self, msg: list) -> None:
        self.sock.sendall(self.frame(msg))

    def read_msg(self) -> list:
        head = self._recv_exact(4)
        return msgpack.unpackb(self._recv_exact(int.from_bytes(head[1:], "big")), raw=False)

    def subscribe(self, topic: str, match: str = "exact") -> None:
        opts = {} if match == "exact" else {"match": match}
        self.send_msg([32, 1, opts, topic])
        msg = self.read_msg()
        if msg[0] != 33:
            raise RuntimeError(f"SUBSCRIBE refused: {msg!r}")

    def fill(self) -> int:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise Closed("connection closed")
        self.buf += chunk
        return len(chunk)

    def count(self) -> tuple[int, int]:
        """(EVENT frames, PUBLISHED frames) complete in the buffer, consumed. Only the
        message type is read: the first msgpack byte after the array header."""
        buf = self.buf
        n = len(buf)
        i = events = published = 0
        while i + 4 <= n:
            size = (buf[i + 1] << 16) | (buf[i + 2] << 8) | buf[i + 3]
            end = i + 4 + size
            if end > n:
                break
            if buf[i] == 0:
                kind = buf[i + 5]   # fixarray header, then a positive fixint message type
                if kind == 36:
                    events += 1
                elif kind == 17:
                    published += 1
            i = end
        if i:
            del buf[:i]
        return events, published

    def close(self) -> None:
        try:
            self.send_msg([6, {}, "wamp.close.normal"])
        except OSError:
            pass
        self.sock.close()
