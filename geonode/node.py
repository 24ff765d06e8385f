"""The node: builds routers, web transports and components from a Config, runs, stops gracefully.

Start-up order matters for "nothing left listening" on errors: first every app is built (user
modules imported, routers created), then every endpoint is bound, then all start accepting. A
failure in any step undoes what was done and ``run`` returns 1.

``main`` is the node process (``geonode start``, the dev server's child): logging, the config,
``prepare`` (the worker options that act on the process: ``pythonpath``, ``env``), ``run``.
``load_app`` builds the same node for gunicorn, without listening.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geonode.config import Config, ConfigError
from geonode.config.model import CHILD_WORKERS, Component, Transport, Worker
from geonode.config.sharing import PROCESS_OPTIONS
from geonode.web.context import BuildContext, NodeInfo

log = logging.getLogger("geonode.node")

#: The whole graceful stop, from the signal to the exit (``--shutdown-timeout``, the controller
#: option ``shutdown_timeout``): inside Docker's 10 s between SIGTERM and SIGKILL, leaving 2 s
#: for the exit itself and for a ``--processes`` parent's margin.
DEFAULT_SHUTDOWN_TIMEOUT = 8.0


def stop_budget(total: float) -> tuple[float, float, float]:
    """``total`` seconds split into (requests in flight, WebSocket closing handshakes, the
    final kill of what is left): the phases of ``geonode.web.shutdown.graceful_stop``."""
    total = max(0.0, float(total))
    close = min(2.0, total / 4)
    kill = min(1.0, total / 8)
    return total - close - kill, close, kill


def shutdown_timeout_of(cfg: Any, override: float | None = None) -> float:
    """``--shutdown-timeout`` if given, else ``controller.options.shutdown_timeout``, else the
    default."""
    if override is not None:
        return float(override)
    value = cfg.model.shutdown_timeout
    return DEFAULT_SHUTDOWN_TIMEOUT if value is None else value


#: A supervised node takes a repeated signal within this many seconds for the same stop.
SAME_STOP_WINDOW = 1.0

#: ``--port``'s environment variable
PORT_ENV = "GEONODE_PORT"


def apply_port(cfg: Config, port: int) -> str | None:
    """Set the port of the first TCP endpoint (enabled workers, config order); its JSON path,
    or None when the config has no TCP endpoint."""
    for worker in cfg.model.workers:
        if worker.disabled:
            continue
        for transport in worker.transports:
            if transport.endpoint.type == "tcp" and transport.endpoint.json_path:
                transport.endpoint.port = int(port)
                return f"{transport.endpoint.json_path}.port"
    return None


def _process_age() -> float | None:
    """Seconds since this process started (Linux), so "ready in" includes interpreter start."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class _Transport:
    """One configured web transport before and after its endpoint is bound."""

    def __init__(self, cfg: Transport, app: Callable,
                 protocols: dict[str, Callable] | None = None) -> None:
        self.cfg = cfg
        self.json_path = cfg.json_path
        self.app = app
        # the HTTP server's options (timeouts, max_connections)
        self.server_options = cfg.server_options
        # universal transport: the non-HTTP protocols its first octet may pick
        self.protocols = protocols
        self.server: Any = None


class Node:
    """Everything one config describes, in one process."""

    def __init__(self, cfg: Config) -> None:
        import gevent

        # gevent records every greenlet's spawning stack (about ten frame summaries, ~1.2 KiB)
        # for its debugging tree; a node's greenlets live as long as its connections, so that
        # was a tenth of an idle WebSocket session's memory (bench/sessions/breakdown.py).
        gevent.config.track_greenlet_tree = False
        self.cfg = cfg
        self.dir = Path(cfg.dir)
        self.info = NodeInfo(title=cfg.model.title)
        self.routers: list[Any] = []
        self.web: list[_Transport] = []
        self.rawsocket_servers: list[tuple[str, Any]] = []  # (json_path, StreamServer)
        self.components: list[Any] = []
        self.force_stop = False  # a second signal: do not wait for requests in flight
        self._pending_components: list[tuple[Any, list[Component], BuildContext]] = []
        self._pending_rawsocket: list[tuple[Transport, Any, BuildContext]] = []
        self.info.session_count = self._session_count
        self.workers: Any = None  # geonode.workers.manager.Workers: containers, guests, ...
        self.run_workers = True   # False under gunicorn: each of its processes would start them
        self.info.owner = self
        from geonode.metrics import SOURCES

        SOURCES.nodes.add(self)

    # ---- build ------------------------------------------------------------------------
    def _session_count(self) -> int:
        return sum(r.session_count() for r in self.routers)

    def _make_router(self, worker: Worker) -> Any:
        if not worker.has_router:
            return None  # a web-only worker: the router modules are not even imported
        from geonode.router import Router

        backplane: Callable[..., Any] | None = None
        if worker.backplane is not None:
            from geonode.cluster import create

            backplane = create
        router = Router(worker, self.dir, backplane=backplane)
        self.routers.append(router)
        # Known to geonode.wamp.session() from now on: code outside any request (a module at
        # import time, a thread the app starts) reaches it even without a "wamp" key.
        from geonode import wamp

        wamp.register_router(router)
        return router

    def build(self) -> None:
        """Build every router and app without binding anything (imports user code)."""
        for worker in self.cfg.model.workers:
            if worker.served_by:
                log.info("%s: served by %s (identical, on its shared port)", worker.json_path,
                         worker.served_by)
                continue
            if worker.disabled:
                log.info("%s: disabled (options.disabled), not started", worker.json_path)
                continue
            if worker.type in CHILD_WORKERS:
                self._worker_manager().add(worker)
                continue
            if worker.type == "websocket-testee":
                self._build_testee(worker.transports[0])
                continue
            router = self._make_router(worker)
            for transport in worker.transports:
                self._build_transport(transport, router)
            if worker.components:
                self._build_components(worker, router)

    def _build_transport(self, transport: Transport, router: Any) -> None:
        from geonode.web import dispatch, options

        ctx = BuildContext(config_dir=self.dir, json_path=f"{transport.json_path}.paths",
                           router=router, transport_options=transport.options,
                           node=self.info, tls=transport.tls)
        if transport.type == "web":
            app = dispatch.build_app(transport.paths, ctx)
            app = options.wrap(app, transport.options, tls=transport.tls,
                               json_path=f"{transport.json_path}.options")
            self.web.append(_Transport(transport, app))
        elif transport.type in ("rawsocket", "mqtt"):
            # stream transports on their own StreamServer (rawsocket_servers holds both)
            self._pending_rawsocket.append((transport, router, ctx))
        elif transport.type == "websocket":
            # Crossbar's stand-alone WebSocket transport: WAMP on every path
            from geonode.web.services import build_service

            assert transport.service is not None  # the config model gives it one
            ctx.json_path = transport.json_path
            self.web.append(_Transport(transport, build_service(transport.service, ctx)))
        else:  # universal (the config model admits no other)
            self.web.append(self._build_universal(transport, router))

    def _build_components(self, worker: Worker, router: Any) -> None:
        # autobahn ApplicationSession components run in a child (geonode.workers)
        from geonode.workers.routercomp import split

        plain, autobahn = split(worker.components)
        if autobahn:
            self._worker_manager().add_router_components(router, autobahn, worker)
        if plain:
            ctx = BuildContext(config_dir=self.dir, json_path=f"{worker.json_path}.components",
                               router=router, node=self.info)
            self._pending_components.append((router, plain, ctx))

    def _build_testee(self, transport: Transport) -> None:
        """Crossbar's ``websocket-testee`` worker: the echo service on every path."""
        from geonode.web.services import build_service

        assert transport.service is not None  # the config model gives it one
        ctx = BuildContext(config_dir=self.dir, json_path=transport.json_path, router=None,
                           node=self.info, tls=transport.tls)
        self.web.append(_Transport(transport, build_service(transport.service, ctx)))

    def _build_universal(self, transport: Transport, router: Any) -> _Transport:
        """RawSocket and HTTP on one endpoint (geonode.web.universal)."""
        from geonode.web import dispatch, options
        from geonode.web.services import build_service
        from geonode.web.universal import route_websockets

        tpath, tls, wopts = transport.json_path, transport.tls, transport.server_options
        wctx = BuildContext(config_dir=self.dir, json_path=f"{tpath}.web.paths", router=router,
                            transport_options=wopts, node=self.info, tls=tls)
        web_app = dispatch.build_app(transport.paths, wctx)
        wsctx = BuildContext(config_dir=self.dir, json_path=f"{tpath}.websocket", router=router,
                             transport_options=wopts, node=self.info, tls=tls)
        sockets = {key: build_service(svc, wsctx.child(key))
                   for key, svc in transport.websockets.items()}
        app = options.wrap(route_websockets(web_app, sockets), wopts, tls=tls,
                           json_path=f"{tpath}.web.options")
        protocols: dict[str, Callable] = {}
        if transport.rawsocket is not None:
            from geonode.transport import rawsocket

            framing = ("unix" if transport.endpoint.type == "unix"
                       else ("tls" if tls else "tcp"))
            protocols["rawsocket"] = rawsocket.connection_handler(transport.rawsocket, router,
                                                                  framing)
        if transport.mqtt is not None:
            from geonode.mqtt import transport as mqtt

            protocols["mqtt"] = functools.partial(
                mqtt.serve_connection, mqtt.build_service(transport.mqtt, router))
        return _Transport(transport, app, protocols=protocols)

    def _worker_manager(self) -> Any:
        if self.workers is None:
            from geonode.workers.manager import Workers

            level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
            self.workers = Workers(self.cfg.model.shutdown, self.dir, level)
        return self.workers

    def prestart_workers(self) -> None:
        """Component children start importing while the node binds (they connect later)."""
        if self.workers is not None and self.run_workers:
            self.workers.prestart()

    def bind(self) -> None:
        """Open every endpoint (nothing accepts yet). On failure, close what was opened."""
        from geonode.endpoints import default_max_connections
        from geonode.web.limits import timeouts
        from geonode.web.server import WebServer

        # Endpoints without max_connections share the open-file budget between them.
        fair_share = default_max_connections(len(self.web) + len(self._pending_rawsocket))
        try:
            for t in self.web:
                extra: dict = {}
                server_class: Any = WebServer
                if t.protocols is not None:
                    from geonode.web.universal import UniversalServer

                    server_class, extra = UniversalServer, {"protocols": t.protocols}
                t.server = server_class(t.cfg.endpoint, t.app, config_dir=self.dir,
                                        json_path=t.json_path,
                                        timeouts=timeouts(t.server_options),
                                        max_connections=t.cfg.max_connections or fair_share,
                                        **extra)
                if self.info.count_http:
                    from geonode.metrics import HttpStats

                    t.server.http_stats = HttpStats(t.json_path)
            for transport, router, ctx in self._pending_rawsocket:
                if transport.type == "mqtt":
                    from geonode.mqtt import transport as stream
                else:
                    from geonode.transport import rawsocket as stream  # type: ignore[no-redef]

                self.rawsocket_servers.append((transport.json_path, stream.serve(
                    transport, router, ctx, max_connections_default=fair_share)))
        except BaseException:
            self.close_listeners()
            raise

    def start(self) -> None:
        """Start accepting on every endpoint, then start components."""
        for t in self.web:
            t.server.start()
        for _, server in self.rawsocket_servers:
            server.start()
        for t in self.web:
            log.info("listening on %s (%s)", t.server.url, t.json_path)
        for tpath, server in self.rawsocket_servers:
            log.info("listening on %s (%s)", server.url, tpath)
        self.start_components()
        if self.workers is not None:
            if self.run_workers:
                self.workers.start()  # after the routers listen: their clients connect at once
            else:
                log.warning("container, guest and autobahn component workers are not started "
                            "here (run the node with `geonode start` for them)")

    def start_components(self) -> None:
        """Start every worker's router components (their sessions join on the hub)."""
        if self._pending_components:
            from geonode import components

            for router, comps, ctx in self._pending_components:
                self.components.append(components.start(router, comps, ctx))

    # ---- stop -------------------------------------------------------------------------
    def close_listeners(self) -> None:
        for t in self.web:
            if t.server is not None:
                try:
                    t.server.drain()
                except Exception:
                    log.debug("closing %s failed", t.json_path, exc_info=True)
        for tpath, server in self.rawsocket_servers:
            try:
                server.close()  # stop accepting; its sessions end when the router closes
            except Exception:
                log.debug("closing %s failed", tpath, exc_info=True)

    def stop(self, grace: float = DEFAULT_SHUTDOWN_TIMEOUT) -> None:
        """Stop accepting, close idle connections, let requests in flight finish, close routers
        (WAMP sessions get GOODBYE) and WebSockets, drop what is left: all within ``grace``
        seconds (the shutdown timeout, split by ``stop_budget``)."""
        from geonode.web.shutdown import graceful_stop

        grace, close, kill = stop_budget(grace)
        self.close_listeners()
        servers = [t.server for t in self.web if t.server is not None]
        graceful_stop(servers, grace, self.close_routers, give_up=lambda: self.force_stop,
                      close_seconds=close)
        for tpath, server in self.rawsocket_servers:
            try:
                server.stop(timeout=kill)
            except Exception:
                log.debug("stopping %s failed", tpath, exc_info=True)

    def close_routers(self) -> None:
        """Every WAMP session (clients, components, in-process) gets GOODBYE
        ``wamp.close.system_shutdown``; then the components' objects are stopped."""
        from geonode import wamp

        if self.workers is not None:
            # Before the routers close: a component told system_shutdown might restart itself.
            self.workers.stop()
        # Routers first: a component hears the shutdown like any client (its on_leave gets
        # system_shutdown) instead of leaving on its own beforehand.
        for router in self.routers:
            wamp.unregister_router(router)
            try:
                router.close()
            except Exception:
                log.warning("closing a router failed", exc_info=True)
        for comp in self.components:
            try:
                comp.stop()
            except Exception:
                log.warning("stopping a component failed", exc_info=True)
        if self.routers:
            # In-process sessions hear their GOODBYE through a pump greenlet and their on_leave
            # callbacks are greenlets too: give them a turn before the process goes.
            import gevent

            gevent.sleep(0.05)


# Worker options that mean something only for Crossbar's one-process-per-worker model.
_IGNORED_OPTIONS = PROCESS_OPTIONS


def prepare(cfg: Config) -> None:
    """Apply worker options that act on this process: ``pythonpath`` and ``env.vars``.

    Logs what ``geonode check`` warns about (a missing pythonpath folder, ...) first. A worker
    with ``options.disabled`` is not started, so its options are not applied either.
    """
    from geonode.config import warnings
    from geonode.config.imports import apply_worker_options

    log = logging.getLogger("geonode.config")
    for line in warnings(cfg):
        log.warning("%s", line)
    for worker in cfg.model.workers:
        if worker.disabled or worker.type != "router":
            continue  # a container's or guest's options are its own process's
        for key in _IGNORED_OPTIONS:
            if key in worker.options:
                log.debug("%s.options.%s: ignored (geonode runs one process)",
                          worker.json_path, key)
    paths = apply_worker_options(cfg)
    if paths:
        log.debug("python path: %s", paths)


def main(config: str, loglevel: str, adjust: Callable[[Config], None] | None = None, *,
         logformat: str = "standard", shutdown_timeout: float | None = None,
         port: int | None = None, process: int | None = None) -> int:
    """Run the node of ``config`` until it stops; the exit code (1: a config it cannot run).

    ``geonode start`` and the dev server's node process. The process must be monkey-patched
    already. ``adjust`` may change the loaded config before anything is built (the dev server
    turns tracebacks on); ``port`` replaces the first TCP endpoint's (``--port``).
    """
    from geonode import logs

    logs.setup(loglevel, logformat, process=process)
    from geonode.config import load, print_errors

    try:
        cfg = load(config)
        if port is not None:
            where = apply_port(cfg, port)
            log.info("%s = %d (--port / %s)", where or "no TCP endpoint: --port ignored", port,
                     PORT_ENV)
        if adjust is not None:
            adjust(cfg)
        prepare(cfg)
        # Under a supervisor the same SIGTERM may come twice at once: from a service manager
        # that signals the whole process group (systemd's default KillMode) and passed on by
        # the parent. That is one stop, not "stop now".
        return int(run(cfg, shutdown_timeout_of(cfg, shutdown_timeout),
                       same_stop_window=SAME_STOP_WINDOW if process else 0.0) or 0)
    except ConfigError as e:
        print_errors(config, e.errors)
        return 1
    except KeyboardInterrupt:
        return 0


def _log_cause(e: BaseException) -> None:
    """The traceback of what caused a config error (an app module that fails to import), with
    its file and line, at error level: the error line alone says only what, not where."""
    import traceback

    cause = e.__cause__
    if cause is None or isinstance(cause, ConfigError):
        return
    # Only failures while importing user code: a component refusing its "extra" (a ValueError
    # raised on purpose) is a config error like any other, its line says it all.
    # A module that is simply not there (a typo in the config) has no user frame: no traceback.
    frames = traceback.extract_tb(cause.__traceback__)
    here = str(Path(__file__).parent)
    importing = any(f.filename.startswith("<frozen importlib") for f in frames)
    user_code = any(not f.filename.startswith(("<", here)) and "importlib" not in f.filename
                    for f in frames)
    if isinstance(cause, SyntaxError) or (importing and user_code):
        log.error("the import failed here:", exc_info=(type(cause), cause, cause.__traceback__))


def install_gc(cfg: Config) -> str:
    """Freeze what the node built (it lives as long as the process), and with the "freeze"
    policy the survivors of every later full collection too (``controller.options.gc``,
    geonode.gcpolicy): the policy in force, "freeze" or "default"."""
    from geonode import gcpolicy
    from geonode.config.model import hosted_code

    opts = cfg.model.gc
    policy = opts.policy
    if policy == "auto":
        code = hosted_code(cfg.data)
        policy = "default" if code else "freeze"
        log.debug("garbage collector: %s policy (auto: %s)", policy,
                  f"the node runs the user's code: {', '.join(code[:3])}" if code
                  else "the node runs none of the user's Python code")
    if policy == "freeze":
        gcpolicy.install(opts.backstop_interval, opts.backstop_growth)
    else:
        gc.freeze()
    return policy


def run(cfg: Config, shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        same_stop_window: float = 0.0) -> int:
    """Serve the node described by ``cfg`` until SIGTERM/SIGINT; the process exit code.

    A second signal cuts requests in flight off, unless it comes within ``same_stop_window``
    seconds of the first."""
    import gevent
    from gevent.event import Event

    from geonode import sdnotify
    from geonode.endpoints import EndpointError

    t0 = time.monotonic()
    node = Node(cfg)
    grace = stop_budget(shutdown_timeout)[0]
    stopping = Event()
    first_signal = [0.0]

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stopping.is_set() and time.monotonic() - first_signal[0] < same_stop_window:
            log.debug("received %s again at once: the same stop", name)
            return
        if not stopping.is_set():
            first_signal[0] = time.monotonic()
            node.info.state = "stopping"   # the health service answers 503 from now on
            log.info("received %s: stopping (waiting up to %.1f s for requests in flight; "
                     "again to stop now)", name, grace)
            sdnotify.notify("STOPPING=1")
            stopping.set()
        elif not node.force_stop:
            log.warning("received %s again (second signal): stopping now, requests in flight "
                        "are cut off", name)
            node.force_stop = True

    # Before the first port opens: a SIGTERM that comes as soon as the port answers (docker
    # stop, a supervisor, a test) is a graceful stop once the node is up, never the default
    # action (killed, no drain, exit -15).
    handlers = [gevent.signal_handler(s, on_signal, s) for s in (signal.SIGTERM, signal.SIGINT)]
    try:
        try:
            node.build()
            node.prestart_workers()
            node.bind()
            node.start()
        except Exception as e:
            node.stop(grace=0)
            if isinstance(e, ConfigError):
                for line in e.errors:
                    log.error("%s", line)
                _log_cause(e)
            elif isinstance(e, EndpointError):
                log.error("%s", e)
            else:
                log.exception("the node failed to start")
            return 1
        # Everything built so far (modules, apps, routers) lives as long as the process:
        # frozen, the garbage collector's full collections skip it (~50k objects for the
        # sample node, a hub stall of 10-40 ms each time one runs while serving).
        install_gc(cfg)
        node.info.state = "stopping" if stopping.is_set() else "up"
        age = _process_age()
        log.info("ready in %.2f s%s", time.monotonic() - t0,
                 f" ({age:.2f} s since process start)" if age is not None else "")
        sdnotify.notify("READY=1\nSTATUS=serving")
        if node.workers is not None:
            node.workers.request_stop = lambda why: stopping.set()
        stopping.wait()
        node.stop(shutdown_timeout)
    finally:
        for h in handlers:
            h.cancel()
    log.info("stopped")
    # The process exits next. Interpreter shutdown runs a full garbage collection over every
    # object the node and its apps ever made (autobahn, Django, ...): 0.1-0.7 s of CPU for
    # nothing. Frozen objects are skipped; module teardown still closes files and sockets.
    gc.freeze()
    return 0


class NodeApp:
    """The WSGI app ``load_app`` returns: the first web transport's app, plus ``close()``."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.app = node.web[0].app
        self._closed = False

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        return self.app(environ, start_response)

    def close(self) -> None:
        """Stop the node's components and close its routers (their sessions get GOODBYE).

        Idempotent: a server may call it on every stop signal."""
        if self._closed:
            return
        self._closed = True
        self.node.info.state = "stopping"
        self.node.stop(grace=0)


def load_app(path: str | Path) -> NodeApp:
    """The config's first web transport as a WSGI app, routers built and components started,
    nothing bound (gunicorn binds). Call its ``close()`` when the server stops."""
    from geonode.config import load
    from geonode.config.model import require_web_transport

    cfg = load(path)
    require_web_transport(cfg.model, str(path))
    prepare(cfg)
    node = Node(cfg)
    try:
        node.build()
        node.run_workers = False
        unserved = ([t.json_path for t in node.web[1:]]
                    + [t.json_path for t, *_ in node._pending_rawsocket])
        if unserved:
            log.warning("%s: only %s is served here (the server's own socket); not served: %s",
                        path, node.web[0].json_path, ", ".join(unserved))
        node.start_components()
    except BaseException:
        node.stop(grace=0)
        raise
    node.info.state = "up"
    install_gc(cfg)  # as in run(): the built node lives as long as the worker
    return NodeApp(node)
