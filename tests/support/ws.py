"""Low-level WebSocket and WAMP clients for tests that need to send what a well-behaved client
would not: any handshake header, any frame (``RawWebSocket``), any WAMP message as JSON over a
real WebSocket (``RawWamp``, on websocket-client)."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from typing import Any

import websocket  # websocket-client

from .timing import scaled

__all__ = ["KEY", "RawWamp", "RawWebSocket", "close_payload", "subscribed_clients"]

#: a Sec-WebSocket-Key (any 16 bytes, base64)
KEY = base64.b64encode(b"0123456789abcdef").decode()


class RawWebSocket:
    """A deliberately low-level WebSocket client: any header, any frame."""

    def __init__(self, port: int, path: str = "/", headers: dict | None = None,
                 version: str = "13", key: str = KEY, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(timeout))
        h = {"Host": f"127.0.0.1:{port}", "Upgrade": "websocket", "Connection": "Upgrade",
             "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": version}
        h.update(headers or {})
        req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()
                                                   if v is not None) + "\r\n"
        self.sock.sendall(req.encode())
        self.buf = b""
        head = self._until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.body = b""
        if self.status != 101:
            n = int(self.headers.get("content-length", 0))
            while len(self.buf) < n:
                self._fill()
            self.body, self.buf = self.buf[:n], self.buf[n:]

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError
        self.buf += data

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(marker)
        return head

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send_frame(self, opcode: int, payload: bytes = b"", fin: bool = True,
                   rsv: int = 0, masked: bool = True) -> None:
        b0 = (0x80 if fin else 0) | rsv | opcode
        n = len(payload)
        mbit = 0x80 if masked else 0
        if n < 126:
            head = struct.pack("!BB", b0, mbit | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            head = struct.pack("!BBQ", b0, mbit | 127, n)
        if masked:
            mask = os.urandom(4)
            reps = (mask * (n // 4 + 1))[:n]
            payload = (int.from_bytes(payload, "big") ^ int.from_bytes(reps, "big")).to_bytes(
                n, "big") if n else b""
            head += mask
        self.sock.sendall(head + payload)

    def recv_frame(self) -> tuple[bool, int, int, bytes]:
        """(fin, rsv bits, opcode, payload); server frames must be unmasked."""
        b0, b1 = self._take(2)
        assert not b1 & 0x80, "server frames must not be masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8))[0]
        return bool(b0 & 0x80), b0 & 0x70, b0 & 0x0F, self._take(n)

    def recv_message(self) -> tuple[int, bytes]:
        """Next data message (pings answered, pongs skipped)."""
        parts, op = [], None
        while True:
            fin, _rsv, opcode, payload = self.recv_frame()
            if opcode == 9:
                self.send_frame(10, payload)
                continue
            if opcode == 10:
                continue
            if opcode == 8:
                return 8, payload
            if opcode:
                op = opcode
            parts.append(payload)
            if fin:
                return op, b"".join(parts)

    def expect_close(self) -> tuple[int | None, bytes]:
        """Read until the server's close frame; (code, reason)."""
        while True:
            fin, _rsv, opcode, payload = self.recv_frame()
            if opcode == 8:
                code = struct.unpack("!H", payload[:2])[0] if payload else None
                return code, payload[2:]

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        """The server closes TCP (EOF) after the close frames (within ``scaled(timeout)``)."""
        self.sock.settimeout(scaled(timeout))
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (TimeoutError, ConnectionResetError):
            return False

    def close(self) -> None:
        self.sock.close()


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class RawWamp:
    """WAMP over a real WebSocket (JSON), message by message: sends whatever it is given, reads
    one message at a time. ``source`` binds the client end to another loopback address."""

    def __init__(self, port: int, path: str = "ws", source: str | None = None,
                 timeout: float = 15.0, protocol: str = "wamp.2.json", **ws_options: Any):
        sock = None
        if source is not None:
            sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(timeout),
                                            source_address=(source, 0))
        self.timeout = scaled(timeout)
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}/{path}", socket=sock,
                                              subprotocols=[protocol], timeout=self.timeout,
                                              **ws_options)
        self.req = 0

    def send(self, msg: list) -> None:
        self.ws.send(json.dumps(msg))

    def recv(self, timeout: float | None = None) -> list:
        """The next message (waits ``scaled(timeout)``, or the connection's timeout)."""
        self.ws.settimeout(scaled(timeout) if timeout is not None else self.timeout)
        return json.loads(self.ws.recv())

    def next_request(self) -> int:
        self.req += 1
        return self.req

    def hello(self, realm: str = "realm1", **details: Any) -> list:
        """HELLO (``details``: roles, authmethods, …; roles default to all four) and the reply."""
        details.setdefault("roles", {"caller": {}, "callee": {}, "publisher": {},
                                     "subscriber": {}})
        self.send([1, realm, details])
        return self.recv()

    def close(self) -> None:
        self.ws.close()


def subscribed_clients(port: int, n: int, topic: str) -> list[RawWamp]:
    """``n`` RawWamp sessions on ``port``'s root path, each joined and subscribed to ``topic``
    (blocking: call it from an OS thread while the hub serves)."""
    clients = []
    for _ in range(n):
        c = RawWamp(port, "")
        assert c.hello()[0] == 2
        c.send([32, c.next_request(), {}, topic])
        assert c.recv()[0] == 33
        clients.append(c)
    return clients
