"""WebServer: one gevent WSGIServer per web transport endpoint (tcp, tcp+tls, unix).

Beyond pywsgi's defaults it carries the transport's limits (``geonode.web.limits``): the
timeouts, which the handler applies per request phase (``client_timeout`` is also the socket
timeout from the accept on, so a TLS handshake is bounded too), and ``max_connections``, a
bounded pool that makes the accept loop pause while the endpoint is full. It tracks its
connections (idle / in a request / WebSocket) for the graceful stop in
``geonode.web.shutdown`` and never prints a traceback for a client's TLS or protocol mistakes.
Plain HTTP behaviour (TCP_NODELAY, header parsing, HEAD, one write per small response) is the
handler's: ``geonode.web.handler``, shared with the gunicorn worker.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gevent import pywsgi

from geonode.config.model import Endpoint
from geonode.endpoints import (
    ConnectionCap,
    default_max_connections,
    tcp_listener,
    tls_context,
    unix_listener,
)
from geonode.web.handler import Handler
from geonode.web.limits import Timeouts
from geonode.web.shutdown import Connections

__all__ = ["WebServer"]

log = logging.getLogger("geonode.web")


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


class WebServer(pywsgi.WSGIServer):
    """A WSGI server for one web transport endpoint."""

    handler_class = Handler

    def __init__(self, endpoint: Endpoint, app: Callable, *, config_dir: Path, json_path: str,
                 timeouts: Timeouts | None = None, max_connections: int | None = None) -> None:
        self.endpoint_cfg = endpoint
        self.json_path = json_path
        timeouts = timeouts or Timeouts()
        # Read by the handler (geonode.web.strict) for every request.
        self.client_timeout = timeouts.client
        self.request_head_timeout = timeouts.request_head
        self.keepalive_timeout = timeouts.keepalive
        self.connections = Connections()
        ssl_args: dict = {}
        if endpoint.type == "unix":
            listener, where = unix_listener(endpoint, config_dir, f"{json_path}.endpoint")
            self.unix_path: str | None = where
            self.url = f"http+unix://{where}"
            self.is_tcp = False
        else:
            tls = endpoint.tls
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
        cap = ConnectionCap(max_connections or default_max_connections(), json_path)
        super().__init__(listener, app, spawn=cap.pool, log=None,
                         error_log=_ErrorLog(), environ=environ,
                         **ssl_args)
        cap.install(self)
        self.max_connections = cap.limit

    def do_handle(self, sock: Any, address: Any) -> None:
        # From the accept on (a TLS handshake is a wait on the client too); the handler
        # switches to keepalive_timeout while it waits for a request.
        timeout = self.client_timeout if self.client_timeout is not None \
            else self.keepalive_timeout
        if timeout is not None:
            sock.settimeout(timeout)
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
        self.close()
        if self.unix_path:
            try:
                os.unlink(self.unix_path)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    log.debug("cannot remove %s: %s", self.unix_path, e)

    @property
    def in_flight(self) -> int:
        """Plain HTTP requests being served now."""
        return self.connections.in_flight()
