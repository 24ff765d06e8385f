"""A gunicorn worker class that serves a geonode node (or any WSGI app) the way geonode does.

    gunicorn -k geonode.gunicorn.GeventWorker -b 127.0.0.1:8080 "geonode:load('node.json')"

gunicorn keeps its process management, logging and graceful reload; this worker adds what
``-k gevent`` lacks for a node: geonode's pywsgi handler (``geonode.web.handler.Handler``),
which offers the WebSocket upgrade to the node's ``websocket`` paths as
``environ["geonode.websocket"]``, sets TCP_NODELAY on every TCP connection (small WAMP frames
must not wait for Nagle) and serves plain HTTP the way ``geonode node.json`` does.

The node is built by ``geonode.load()`` inside each worker, after gunicorn's gevent worker has
monkey-patched and re-initialised the hub (gunicorn loads the app in the worker unless
``--preload`` is given), so the router, its components and their greenlets live in the worker
process. geonode's log lines go to gunicorn's error log.

SIGTERM (gunicorn's graceful stop) runs the same stop as ``geonode node.json``
(``geonode.web.shutdown.graceful_stop``): stop accepting, close idle keep-alive connections at
once, let requests in flight finish (at most ``--graceful-timeout``), then the app's ``close()``
(WAMP sessions get GOODBYE ``wamp.close.system_shutdown``, components stop), remaining
WebSockets are closed with 1001, and the worker exits as soon as its connections are gone, not
when the graceful timeout runs out. A second SIGTERM to the worker cuts requests in flight off;
gunicorn's master turns a SIGINT/SIGQUIT during its graceful stop into a quick one.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from gevent.event import Event
from gunicorn.http.wsgi import base_environ
from gunicorn.sock import ssl_context
from gunicorn.workers import ggevent

from geonode.endpoints import ConnectionCap
from geonode.web.handler import Handler
from geonode.web.limits import (
    DEFAULT_CLIENT_TIMEOUT,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_REQUEST_HEAD_TIMEOUT,
)
from geonode.web.shutdown import Connections, graceful_stop

# Not logged when every WAMP router worker has options.backplane (one router across workers).
MULTI_WORKER_WARNING = (
    "geonode: %d gunicorn workers each build their own WAMP router: a WAMP client only sees "
    "sessions, subscriptions and registrations of the worker it happened to connect to. "
    "Run with -w 1 (scale the WSGI apps with their maxthreads instead), or give the router "
    "worker an options.backplane shared by the workers."
)

PRELOAD_WARNING = (
    "geonode: --preload builds the node (router, thread pools) in the gunicorn master, before "
    "gevent is set up and before the workers fork; drop --preload for geonode:load(...) apps."
)


class GunicornHandler(ggevent.PyWSGIHandler, Handler):
    """gunicorn's access logging and environ keys on top of geonode's upgrade-aware handler."""


class GunicornServer(ggevent.PyWSGIServer):
    """gunicorn's pywsgi server plus the connection tracker the graceful stop works with, and
    the timeouts geonode's handler applies (``geonode.web.limits``; the keep-alive one is
    gunicorn's ``--keep-alive``, which its pywsgi worker otherwise ignores)."""

    client_timeout: float | None = DEFAULT_CLIENT_TIMEOUT
    request_head_timeout: float | None = DEFAULT_REQUEST_HEAD_TIMEOUT
    keepalive_timeout: float | None = DEFAULT_KEEPALIVE_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.connections = Connections()
        super().__init__(*args, **kwargs)

    def do_handle(self, sock: Any, address: Any) -> None:
        # From the accept on, so a TLS handshake that never completes is bounded too.
        sock.settimeout(self.client_timeout)
        super().do_handle(sock, address)


class GeventWorker(ggevent.GeventPyWSGIWorker):
    """``-k geonode.gunicorn.GeventWorker``: gevent + geonode's handler (WebSocket upgrades)."""

    server_class = GunicornServer
    wsgi_handler = GunicornHandler

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        # Runs once in the master at start-up, so the warnings appear once, not per worker.
        super_check = getattr(super(), "check_config", None)
        if super_check is not None:
            super_check(cfg, log)
        if cfg.workers > 1 and _is_geonode_app(cfg) and _splits_router(cfg):
            log.warning(MULTI_WORKER_WARNING, cfg.workers)
        if cfg.preload_app and _is_geonode_app(cfg):
            log.warning(PRELOAD_WARNING)

    def init_process(self) -> None:
        _log_through(self.log)
        self._stop_requested = Event()
        self._cut_off = False
        super().init_process()

    def run(self) -> None:
        # gevent's worker polls ``alive`` once a second and then waits for its connection
        # pools to empty, idle keep-alive connections included: a SIGTERM took 1-2 s at best
        # and the whole graceful timeout with a keep-alive client. Here the stop starts the
        # moment the signal arrives and idle connections are closed at once.
        servers = [self._make_server(s) for s in self.sockets]
        for server in servers:
            server.start()
        while self.alive:
            self.notify()
            self._stop_requested.wait(1.0)
        graceful_stop(servers, self.cfg.graceful_timeout, self._close_node,
                      give_up=lambda: self._cut_off, tick=self.notify)

    def _make_server(self, sock: Any) -> GunicornServer:
        sock.setblocking(1)
        environ = base_environ(self.cfg)
        environ.update({"wsgi.multithread": True, "SERVER_SOFTWARE": ggevent.VERSION})
        ssl_args = {"ssl_context": ssl_context(self.cfg)} if self.cfg.is_ssl else {}
        # --worker-connections is this worker's max_connections: the same pause of the accept
        # loop when full (gevent's), plus the one log line saying so.
        cap = ConnectionCap(self.worker_connections, f"gunicorn worker {self.pid}",
                            key="worker_connections")
        server = self.server_class(sock, application=self.wsgi, spawn=cap.pool, log=self.log,
                                   handler_class=self.wsgi_handler, environ=environ,
                                   **ssl_args)
        cap.install(server)
        if self.cfg.keepalive and self.cfg.keepalive > 0:
            server.keepalive_timeout = float(self.cfg.keepalive)
        return server

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.alive:
            if not self._cut_off:
                self._cut_off = True
                self.log.warning("geonode: second SIGTERM: stopping now, requests in flight "
                                 "are cut off")
            return
        super().handle_exit(sig, frame)
        self._stop_requested.set()

    def _close_node(self) -> None:
        # geonode.load() returns a NodeApp (routers, components): close it. A plain WSGI app
        # has nothing of geonode's to close (and never imported geonode.node).
        node_module = sys.modules.get("geonode.node")
        app = getattr(self, "wsgi", None)
        if node_module is None or not isinstance(app, node_module.NodeApp):
            return
        try:
            app.close()
        except Exception:
            self.log.exception("closing the node failed")


def _log_through(glog: Any) -> None:
    """Send geonode's log lines (components joining, router warnings, app errors) to gunicorn's
    error log, at its level and in its format; without this only warnings reach stderr."""
    error_log = getattr(glog, "error_log", None)
    geonode_log = logging.getLogger("geonode")
    if error_log is None or geonode_log.handlers:
        return  # a custom gunicorn logger class, or the app set up geonode's logging itself
    for handler in error_log.handlers:
        geonode_log.addHandler(handler)
    geonode_log.setLevel(error_log.level)
    geonode_log.propagate = False


def _splits_router(cfg: Any) -> bool:
    """Whether the node's config has a WAMP router worker without ``options.backplane`` (the
    workers would be separate routers); True when the config cannot be read here."""
    import re

    uri = str(cfg.wsgi_app or cfg.default_proc_name or "")
    m = re.search(r"load\(\s*(?:path\s*=\s*)?['\"]([^'\"]+)['\"]", uri)
    if m is None:
        return True
    from geonode.config import ConfigError, load
    from geonode.config.model import wamp_without_backplane

    try:
        model = load(Path(cfg.chdir or ".") / m.group(1)).model
    except (ConfigError, OSError):
        return True
    return bool(wamp_without_backplane(model))


def _is_geonode_app(cfg: Any) -> bool:
    """Whether gunicorn was told to serve a node (``geonode:load(...)``) rather than a plain app."""
    # gunicorn keeps the positional APP_MODULE as default_proc_name, --wsgi-app as wsgi_app.
    uri = cfg.wsgi_app or cfg.default_proc_name or ""
    return "geonode:load" in str(uri).replace(" ", "")
