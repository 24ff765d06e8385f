"""WebServer: one gevent WSGIServer per web transport endpoint (tcp, tcp+tls, unix).

Beyond pywsgi's defaults it sets ``TCP_NODELAY`` on every accepted TCP socket (without it a
keep-alive response written in two sends waits ~40 ms for the client's delayed ACK), applies
``client_timeout`` to each connection (idle keep-alive connections are closed), answers HEAD
without a body, counts in-flight requests so a shutdown can let them finish, and never prints a
traceback for a client's TLS or protocol mistakes.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from gevent import pywsgi
from gevent.pool import Pool

from geonode.web.handler import Handler
from geonode.web.listeners import EndpointError, tcp_listener, tls_context, unix_listener

__all__ = ["EndpointError", "RequestHeaders", "ServerHandler", "WebServer", "wait_idle"]

log = logging.getLogger("geonode.web")

# Response bodies up to this size go out in the same write as the headers.
_COALESCE_MAX = 256 * 1024


class _ErrorLog:
    """pywsgi's error log (client mistakes, ``wsgi.errors``) as one log line per message."""

    _log = logging.getLogger("geonode.http")

    def write(self, msg: str) -> None:
        msg = msg.strip()
        if msg.startswith("<gevent.") and ">: " in msg:
            msg = msg.split(">: ", 1)[1]  # pywsgi prefixes the socket's repr
        if msg:
            self._log.warning("%s", msg)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass


_MAX_HEADER_LINE = 65536
_MAX_HEADERS = 100


class RequestHeaders:
    """Request headers with the interface pywsgi's handler uses, parsed without ``email``.

    pywsgi parses headers with ``http.client.parse_headers`` (the email package): about a third
    of the hub's time per request. This parser is strict where that one is lenient: a line
    without a colon, or whitespace inside a field name, makes the request a 400.
    """

    __slots__ = ("_items", "_map", "status")

    def __init__(self, items: list[tuple[str, str]], status: str = "") -> None:
        self._items = items
        self.status = status
        first: dict[str, str] = {}
        for name, value in items:
            first.setdefault(name.lower(), value)
        self._map = first

    @classmethod
    def parse(cls, rfile: Any) -> RequestHeaders:
        items: list[tuple[str, str]] = []
        while True:
            line = rfile.readline(_MAX_HEADER_LINE + 1)
            if len(line) > _MAX_HEADER_LINE:
                return cls([], "Header line too long")
            if line in (b"\r\n", b"\n", b""):
                return cls(items)
            if len(items) >= _MAX_HEADERS:
                return cls([], f"More than {_MAX_HEADERS} headers")
            text = line.decode("latin-1")
            if text[0] in " \t":
                if not items:
                    return cls([], "Continuation line before any header")
                name, value = items[-1]
                items[-1] = (name, f"{value} {text.strip()}")  # obsolete line folding
                continue
            name, sep, value = text.partition(":")
            if not sep or not name or name != name.strip() or " " in name or "\t" in name:
                return cls([], f"Invalid header line {text.rstrip()!r}")
            items.append((name, value.strip()))

    def get(self, name: str, default: Any = None) -> Any:
        return self._map.get(name.lower(), default)

    getheader = get

    def __getitem__(self, name: str) -> Any:
        return self._map.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map

    def __delitem__(self, name: str) -> None:
        lname = name.lower()
        self._map.pop(lname, None)
        self._items = [(k, v) for k, v in self._items if k.lower() != lname]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def keys(self) -> list[str]:
        return [k for k, _ in self._items]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._items)

    @property
    def headers(self):
        for name, value in self._items:
            yield f"{name}: {value}\r\n"

    @property
    def typeheader(self) -> str | None:
        return self._map.get("content-type")


class ServerHandler(Handler):
    """The connection handler: geonode's Handler plus HEAD, draining and request counting."""

    def MessageClass(self, rfile: Any, *args: Any) -> RequestHeaders:  # noqa: N802 - pywsgi's name
        return RequestHeaders.parse(rfile)

    def handle_one_response(self) -> None:
        server = self.server
        if not isinstance(server, WebServer):  # reused under another server (gunicorn)
            return super().handle_one_response()
        # A WebSocket lives as long as its session; the router closes those on shutdown, so
        # only plain HTTP requests hold the shutdown back.
        counted = self.environ.get("HTTP_UPGRADE", "").lower() != "websocket"
        if counted:
            server.in_flight += 1
        try:
            super().handle_one_response()
        finally:
            if counted:
                server.in_flight -= 1
            if server.draining:
                self.close_connection = True

    def log_request(self) -> None:
        # pywsgi formats a log line per request even with logging off; the access log is
        # geonode's own middleware (options.access_log).
        pass

    def finalize_headers(self) -> None:
        super().finalize_headers()
        if self.command == "HEAD":
            # The headers describe the GET body; no body (and no terminating chunk) follows.
            self.response_use_chunked = False

    def _write(self, data: bytes) -> None:
        if self.command == "HEAD":
            return
        super()._write(data)

    def _write_with_headers(self, data: bytes) -> None:
        # pywsgi sends the headers and the first chunk in two writes; one write is one syscall
        # less per response and leaves nothing for Nagle/delayed-ACK to hold back.
        if not data or len(data) > _COALESCE_MAX or self.command == "HEAD":
            return super()._write_with_headers(data)
        self.headers_sent = True
        self.finalize_headers()
        out = bytearray(b"HTTP/1.1 ")
        out += self.status
        out += b"\r\n"
        for header, value in self.response_headers:
            out += header
            out += b": "
            out += value
            out += b"\r\n"
        out += b"\r\n"
        if self.response_use_chunked:
            out += b"%x\r\n" % len(data)
            out += data
            out += b"\r\n"
        else:
            out += data
        self._sendall(out)


class WebServer(pywsgi.WSGIServer):
    """A WSGI server for one web transport endpoint."""

    handler_class = ServerHandler

    def __init__(self, endpoint: dict, app: Callable, *, config_dir: Path, json_path: str,
                 client_timeout: float | None = None) -> None:
        self.endpoint_cfg = endpoint
        self.json_path = json_path
        self.client_timeout = client_timeout
        self.in_flight = 0
        self.draining = False
        kind = endpoint.get("type", "tcp")
        ssl_args: dict = {}
        if kind == "unix":
            listener, where = unix_listener(endpoint, config_dir, f"{json_path}.endpoint")
            self.unix_path: str | None = where
            self.url = f"http+unix://{where}"
            self.is_tcp = False
        else:
            tls = endpoint.get("tls")
            ctx = tls_context(tls, config_dir, f"{json_path}.endpoint") if tls else None
            listener, where = tcp_listener(endpoint, f"{json_path}.endpoint")
            if ctx is not None:
                ssl_args["ssl_context"] = ctx
            self.unix_path = None
            self.url = f"{'https' if tls else 'http'}://{where}"
            self.is_tcp = True
        self.tls = bool(ssl_args)
        host, _, port = where.rpartition(":")
        environ = {"SERVER_NAME": host.strip("[]") if self.is_tcp else "localhost",
                   "SERVER_PORT": port if self.is_tcp else ""}
        super().__init__(listener, app, spawn=Pool(), log=None,
                         error_log=_ErrorLog(), environ=environ,
                         **ssl_args)

    def do_handle(self, sock: Any, address: Any) -> None:  # type: ignore[override]
        if self.is_tcp:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if self.client_timeout:
            sock.settimeout(self.client_timeout)
        if not self.is_tcp:
            address = ("unix", 0)  # pywsgi formats REMOTE_ADDR from a tuple
        super().do_handle(sock, address)

    def wrap_socket_and_handle(self, client_socket: Any, address: Any) -> Any:
        try:
            ssl_socket = self.wrap_socket(client_socket, **self.ssl_args)
        except (OSError, ValueError) as e:
            # A failed handshake (no client certificate, plain HTTP on the TLS port, a scanner)
            # is the client's business: one debug line, no traceback.
            log.debug("%s: TLS handshake with %s failed: %s", self.json_path, address, e)
            client_socket.close()
            return None
        try:
            return self.handle(ssl_socket, address)
        finally:
            ssl_socket.close()

    def drain(self) -> None:
        """Stop accepting; requests in flight go on, their connections close afterwards."""
        self.draining = True
        self.close()
        if self.unix_path:
            try:
                os.unlink(self.unix_path)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    log.debug("cannot remove %s: %s", self.unix_path, e)

    def kill_connections(self, timeout: float = 1.0) -> None:
        """Close whatever connections remain (idle keep-alive, requests past the grace)."""
        if self.pool is not None:
            self.pool.kill(block=True, timeout=timeout)


def wait_idle(servers: list[WebServer], grace: float,
              give_up: Callable[[], bool] | None = None) -> bool:
    """Wait until no server has a request in flight, at most ``grace`` seconds."""
    deadline = time.monotonic() + grace
    while any(s.in_flight for s in servers):
        if time.monotonic() >= deadline or (give_up is not None and give_up()):
            return False
        gevent.sleep(0.02)
    return True
