"""Raw HTTP/1.1 over a socket: send bytes exactly as given (no client normalization), read the
answer, take it apart. For what requests would refuse to send or would tidy up."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .timing import scaled

__all__ = ["connect", "exchange", "http_server", "parse_response", "read_response",
           "read_until_close", "split_response"]


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler], quiet: bool = False) -> Iterator[int]:
    """A threading HTTP server (an upstream, a webhook target) on a free loopback port, in
    this process; yields the port. ``quiet``: no traceback for a client that goes away."""
    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            if not quiet:
                super().handle_error(request, client_address)

    srv = Server(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    """A connection to 127.0.0.1:``port`` whose every wait is bounded by ``scaled(timeout)``."""
    return socket.create_connection(("127.0.0.1", port), timeout=scaled(timeout))


def read_until_close(s: socket.socket) -> bytes:
    """Everything until the server closes (the socket's timeout bounds each wait)."""
    out = bytearray()
    while chunk := s.recv(65536):
        out += chunk
    return bytes(out)


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it."""
    with connect(port, timeout) as s:
        s.sendall(data)
        return read_until_close(s)


def _headers(lines: list[str]) -> dict[str, str]:
    headers = {}
    for line in lines:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return headers


def split_response(response: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, everything after the head) of one response."""
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return int(lines[0].split()[1]), _headers(lines[1:]), body


def parse_response(buf: bytes, head: bool = False) -> tuple[int, dict, bytes, bytes]:
    """One response off the front of ``buf`` (Content-Length, chunked, or to the end):
    (status, headers, body, rest). ``head``: the answer to a HEAD (no body)."""
    head_end = buf.index(b"\r\n\r\n")
    lines = buf[:head_end].decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = _headers(lines[1:])
    rest = buf[head_end + 4:]
    if head or status in (100, 204, 304):
        return status, headers, b"", rest
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size_end = rest.index(b"\r\n")
            size = int(rest[:size_end], 16)
            chunk, rest = rest[size_end + 2:size_end + 2 + size], rest[size_end + 4 + size:]
            if size == 0:
                return status, headers, body, rest
            body += chunk
    if "content-length" in headers:
        n = int(headers["content-length"])
        return status, headers, rest[:n], rest[n:]
    return status, headers, rest, b""


def read_response(s: socket.socket, buf: bytes = b"") -> tuple[bytes, dict, bytes, bytes]:
    """Read exactly one Content-Length response from ``s`` (``buf``: bytes already read);
    (status line, headers, body, bytes read beyond it)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"connection closed mid-headers: {buf!r}"
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {k.strip().lower(): v.strip()
               for k, v in (ln.decode("latin-1").split(":", 1) for ln in lines[1:])}
    n = int(headers.get("content-length", 0))
    while len(buf) < n:
        chunk = s.recv(65536)
        assert chunk, f"connection closed mid-body: {buf!r}"
        buf += chunk
    return lines[0], headers, buf[:n], buf[n:]
