"""Endpoints: listening sockets for a Crossbar endpoint config (``tcp``, ``tcp`` + ``tls``,
``unix``) and the cap on the connections one endpoint holds.

Shared by the web transports (``geonode.web.server``) and RawSocket transports
(``geonode.transport.rawsocket``), so both follow the same endpoint rules and name the same
JSON paths in their errors. Each function takes ``json_path``, the endpoint's own path
(``workers[0].transports[0].endpoint``), and raises :class:`EndpointError` naming it.

- ``tcp_listener(endpoint, json_path) -> (socket, "host:port")``: ``interface`` (default all),
  ``version`` 4/6, ``port`` (0 = any free port), ``backlog`` (50), ``shared`` (SO_REUSEPORT).
- ``unix_listener(endpoint, config_dir, json_path) -> (socket, path)``: ``path`` relative to the
  config folder; a stale socket file nobody answers on is replaced.
- ``tls_context(tls, config_dir, json_path) -> ssl.SSLContext``: the endpoint's ``tls`` dict
  (``certificate``, ``key``, ``chain_certificates``, ``ca_certificates`` = client certificates
  required, ``ciphers``, ``dhparam``); TLS 1.2 at least. A TLS file that does not load is a
  config problem (``ConfigError``, from ``geonode.config.tls``, which ``geonode check`` runs).

The sockets are gevent sockets, bound and listening, non-blocking: hand them to a gevent server.

- ``set_nodelay(sock)``: TCP_NODELAY on an accepted (or connected) TCP socket, for every
  server that carries small latency-bound messages (web handler, RawSocket, MQTT).
- ``ConnectionCap(limit, where)``: ``max_connections`` for a gevent server (why and the
  default: ``geonode.web.limits``); ``default_max_connections(endpoints)``: an endpoint's share
  of the open-file limit when the config sets none.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import stat
import time
from pathlib import Path
from typing import Any

from geonode.config.model import Endpoint
from geonode.config.tls import server_context

__all__ = ["ConnectionCap", "EndpointError", "default_max_connections", "open_file_limit",
           "set_nodelay", "tcp_listener", "tls_context", "unix_listener"]

log = logging.getLogger("geonode.web")

#: share of the open-file limit the endpoints' connections may take together
_FD_SHARE = 0.8
#: at most one "max_connections reached" line per endpoint in this many seconds
CAP_LOG_INTERVAL = 60.0


def set_nodelay(sock: Any) -> None:
    """Disable Nagle: WAMP and MQTT messages are small and latency-bound (idempotent, best
    effort; a unix socket or an object without ``family`` is left alone).

    Without it a keep-alive response written in two sends waits ~40 ms for the client's
    delayed ACK."""
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass


class EndpointError(Exception):
    """An endpoint cannot be opened (bad TLS files, port in use, ...)."""


#: Set by the ``--processes`` supervisor for its children (``geonode.supervisor``): the listening
#: sockets it opened, as JSON ``{"workers[0].transports[0].endpoint": fd}``. A child serves on
#: those instead of binding, so every child shares the parent's endpoints.
LISTEN_FDS_ENV = "GEONODE_LISTEN_FDS"
_inherited: dict[str, int] | None = None


def _inherited_listener(json_path: str) -> tuple[socket.socket, Any] | None:
    """(gevent socket, its address) for an endpoint the supervisor opened, else None."""
    global _inherited
    if _inherited is None:
        import json

        _inherited = {k: int(v) for k, v in
                      json.loads(os.environ.pop(LISTEN_FDS_ENV, "") or "{}").items()}
    fd = _inherited.pop(json_path, None)
    if fd is None:
        return None
    from gevent import socket as gsocket

    sock = gsocket.socket(fileno=fd)
    sock.setblocking(False)
    # Inheritable only to get here: not into subprocesses the app starts.
    sock.set_inheritable(False)
    return sock, sock.getsockname()


def _busy_hint(json_path: str, errno_: int | None) -> str:
    import errno

    if errno_ != errno.EADDRINUSE:
        return ""
    return (f" (another process listens there: stop it, or choose another port with "
            f"{json_path}.port in the config; for the first endpoint also --port N or "
            f"GEONODE_PORT=N)")


def tls_context(tls: dict, base: Path, json_path: str) -> Any:
    """The server SSLContext for an endpoint's ``tls`` dict (files relative to ``base``), made
    by the function ``geonode check`` verifies it with (geonode.config.tls)."""
    from gevent import ssl

    return server_context(tls, base, json_path, ssl)


def tcp_listener(endpoint: Endpoint, json_path: str, *, plain: bool = False,
                 reuseport: bool = False) -> tuple[socket.socket, str]:
    """A listening TCP socket for a ``tcp`` endpoint and its ``host:port`` (actual port).

    ``plain``: a stdlib socket, not gevent's (the supervisor, which runs no hub);
    ``reuseport``: SO_REUSEPORT whatever the endpoint's ``shared`` says."""
    family = socket.AF_INET6 if endpoint.version == 6 else socket.AF_INET
    interface = endpoint.any_interface
    port = endpoint.port
    inherited = None if plain else _inherited_listener(json_path)
    if inherited is not None:
        sock, address = inherited
        host = f"[{interface}]" if ":" in interface else interface
        return sock, f"{host}:{address[1]}"
    if plain:
        sock = socket.socket(family, socket.SOCK_STREAM)
    else:
        from gevent import socket as gsocket

        sock = gsocket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if endpoint.shared or reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((interface, port))
        sock.listen(endpoint.backlog)
    except OSError as e:
        sock.close()
        raise EndpointError(f"{json_path}: cannot listen on {interface} port {port}: "
                            f"{e.strerror or e}{_busy_hint(json_path, e.errno)}") from e
    sock.setblocking(False)
    host = f"[{interface}]" if ":" in interface else interface
    return sock, f"{host}:{sock.getsockname()[1]}"


def unix_listener(endpoint: Endpoint, base: Path, json_path: str, *,
                  plain: bool = False) -> tuple[socket.socket, str]:
    """A listening Unix socket for a ``unix`` endpoint (path relative to ``base``)."""
    path = (base / str(endpoint.path)).absolute()
    inherited = None if plain else _inherited_listener(json_path)
    if inherited is not None:
        return inherited[0], str(path)
    if path.exists():
        if not stat.S_ISSOCK(path.stat().st_mode):
            raise EndpointError(f"{json_path}.path: {path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody answers: a stale file left by a crashed node
        else:
            raise EndpointError(f"{json_path}.path: another process is listening on {path}")
        finally:
            probe.close()
    if plain:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        from gevent import socket as gsocket

        sock = gsocket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen(endpoint.backlog)
    except OSError as e:
        sock.close()
        raise EndpointError(f"{json_path}: cannot listen on unix socket {path}: "
                            f"{e.strerror or e}") from e
    sock.setblocking(False)
    return sock, str(path)


def open_file_limit() -> int:
    """The process's soft RLIMIT_NOFILE (a large number when unlimited)."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return 1024
    return 1 << 20 if soft == resource.RLIM_INFINITY or soft <= 0 else int(soft)


def default_max_connections(endpoints: int = 1) -> int:
    """``max_connections`` of each of ``endpoints`` endpoints when the config has none."""
    return max(16, int(open_file_limit() * _FD_SHARE) // max(1, endpoints))


class ConnectionCap:
    """``max_connections`` for a gevent server: a bounded Pool plus one log line when hit.

    gevent's accept loop asks ``server.full()`` before each ``accept()``; while it says so the
    listening socket is not watched at all (no busy loop, other endpoints unaffected), and the
    pool's first free slot starts accepting again. So excess clients wait in the kernel's
    listen backlog; nothing is read from them and nothing is answered early.
    """

    def __init__(self, limit: int, where: str, key: str = "max_connections") -> None:
        from gevent.pool import Pool

        self.limit = limit
        self.where = where
        self.key = key
        self.pool = Pool(limit)
        self._next_log = 0.0
        self._missed = 0
        if limit >= open_file_limit():
            log.warning("%s: %s %d is not below the open-file limit %d (ulimit -n): "
                        "the process runs out of file descriptors first", where, key, limit,
                        open_file_limit())

    def install(self, server: Any) -> None:
        """Make ``server`` (built with ``spawn=self.pool``) log when the cap stops it."""
        server.full = self.full

    def full(self) -> bool:
        if self.pool.free_count() > 0:
            return False
        now = time.monotonic()
        if now >= self._next_log:
            more = f"; reached {self._missed} more time(s) since the last report" \
                if self._missed else ""
            log.warning("%s: %d connections open (%s): new connections wait until one "
                        "closes%s", self.where, self.limit, self.key, more)
            self._next_log = now + CAP_LOG_INTERVAL
            self._missed = 0
        else:
            self._missed += 1
        return True
