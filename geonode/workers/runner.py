"""The worker child: runs autobahn components as Crossbar's container does.

Started by the node as ``python -c <BOOT>`` with the worker's spec as one JSON line on stdin
(nothing about the worker, least of all a credential, is on the command line). It imports
every component, picks the framework (Twisted when the components are Twisted
``ApplicationSession``s, asyncio when asyncio ones; ``options.framework`` decides when given;
the choice is logged), connects each component (its ``transport``, or the node's private
channel for a router worker's components: ``geonode.workers.channel``), and applies
Crossbar's container ``shutdown`` and ``restart`` modes per component, with a backoff
between restarts that Crossbar does not have.

Output: one line per event on stderr, ``LEVEL message``; the node adds the time and the
worker id. Exit status: 0 after an orderly stop, ``EXIT_AFTER_FAILURE`` when a shutdown mode
ended the container because a component failed, 2 for a spec it cannot run.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from geonode.workers.kinds import LoadError, kind_of, load_callbacks, load_session_class

log = logging.getLogger("container")

#: The node starts the child with this program (``root``: the folder holding geonode).
BOOT = "import sys; sys.path.insert(0, {root!r}); from geonode.workers.{module} import main; main()"

EXIT_AFTER_FAILURE = 3
SHUTDOWN_MANUAL = "shutdown-manual"
SHUTDOWN_ON_LAST_STOPPED = "shutdown-on-last-component-stopped"
SHUTDOWN_ON_ANY_FAILED = "shutdown-on-any-component-failed"
SHUTDOWN_ON_ANY_STOPPED = "shutdown-on-any-component-stopped"
SHUTDOWN_MODES = (SHUTDOWN_MANUAL, SHUTDOWN_ON_LAST_STOPPED, SHUTDOWN_ON_ANY_FAILED,
                  SHUTDOWN_ON_ANY_STOPPED)
RESTART_ALWAYS, RESTART_ON_FAILED = "restart-always", "restart-on-failed"
BACKOFF_START, BACKOFF_MAX, STABLE_AFTER = 0.5, 30.0, 10.0
#: How long sessions get to say GOODBYE when the node stops the worker.
LEAVE_TIMEOUT = 2.0


def boot_argv(module: str = "runner") -> list[str]:
    root = str(Path(__file__).resolve().parent.parent.parent)
    return [sys.executable, "-c", BOOT.format(root=root, module=module)]


def _one_line(e: BaseException) -> str:
    """``ValueError: boom (backend.py:12)``: the exception and where it was raised."""
    where = ""
    tb = traceback.extract_tb(e.__traceback__)
    if tb:
        where = f" ({os.path.basename(tb[-1].filename)}:{tb[-1].lineno})"
    return f"{type(e).__name__}: {e}{where}"


class Component:
    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.path: str = cfg["path"]
        self.type: str = cfg.get("type", "class")
        self.name = cfg.get("classname") or cfg.get("id") or self.path
        self.cls: type | None = None
        self.kind: str | None = None
        self.callbacks: dict[str, Callable] = {}
        self.session: Any = None
        self.failed = False
        self.failures = 0
        self.started_at = 0.0
        self.first_start_done = False   # ready (onJoin returned) or failed, once

    def load(self) -> None:
        if self.type == "function":
            self.callbacks = load_callbacks(self.cfg.get("callbacks") or {}, self.path)
        else:
            self.cls, self.kind = load_session_class(self.cfg["classname"], self.path)


# ---- frameworks --------------------------------------------------------------------------

def _serializers(names: list[str] | None) -> list[Any]:
    from autobahn.wamp import serializer as S

    classes = {"json": S.JsonSerializer, "msgpack": getattr(S, "MsgPackSerializer", None),
               "cbor": getattr(S, "CBORSerializer", None),
               "ubjson": getattr(S, "UBJSONSerializer", None)}
    out = []
    for name in names or ["json", "msgpack"]:
        base, _, batched = name.partition(".")
        cls = classes.get(base)
        if cls is not None:
            try:
                out.append(cls(batched=bool(batched)))
            except Exception:  # the serializer's package is not installed here
                continue
    return out or [S.JsonSerializer()]


class Framework:
    name = ""

    def factory(self, target: dict, make_session: Callable) -> Any:
        ws, raw = self.factories()
        if target.get("channel") is not None or target.get("type") == "rawsocket":
            names = target.get("serializers") or ([target["serializer"]]
                                                  if target.get("serializer") else None)
            return raw(make_session, serializer=_serializers(names or ["msgpack", "json"])[0])
        return ws(make_session, url=target.get("url"),
                  serializers=_serializers(target.get("serializers")))

    def factories(self) -> tuple[Any, Any]:
        raise NotImplementedError

    def call_later(self, delay: float, fn: Callable, *args: Any) -> None:
        raise NotImplementedError

    def connect(self, target: dict, make_session: Callable, on_fail: Callable[[str], None],
                config_dir: Path) -> None:
        raise NotImplementedError

    def run(self, start: Callable, terminate: Callable) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class Twisted(Framework):
    name = "Twisted"

    def __init__(self) -> None:
        import txaio

        txaio.use_twisted()
        from twisted.internet import reactor

        # Any: the reactor's interfaces are split over zope interfaces mypy cannot join
        self.reactor: Any = reactor
        self._log_to_stderr()
        from autobahn.twisted.wamp import ApplicationSession

        self.Session = ApplicationSession

    @staticmethod
    def _log_to_stderr() -> None:
        """Components' ``self.log`` (txaio on Twisted's logger) as ``LEVEL message`` lines."""
        import txaio
        from twisted.logger import formatEvent, globalLogBeginner

        def observer(event: dict) -> None:
            level = event.get("log_level")
            name = getattr(level, "name", "info").upper()
            text = formatEvent(event)
            failure = event.get("log_failure")
            if failure is not None:
                text = f"{text} {failure.getErrorMessage()}".strip()
            if text:
                sys.stderr.write(f"{'WARNING' if name == 'WARN' else name} {text}\n")

        globalLogBeginner.beginLoggingTo([cast(Any, observer)], redirectStandardIO=False,
                                         discardBuffer=True)
        txaio.set_global_log_level(logging.getLevelName(logging.getLogger().level).lower())

    def factories(self) -> tuple[Any, Any]:
        from autobahn.twisted.rawsocket import WampRawSocketClientFactory
        from autobahn.twisted.websocket import WampWebSocketClientFactory

        return WampWebSocketClientFactory, WampRawSocketClientFactory

    def call_later(self, delay: float, fn: Callable, *args: Any) -> None:
        self.reactor.callLater(delay, fn, *args)

    def connect(self, target: dict, make_session: Callable, on_fail: Callable[[str], None],
                config_dir: Path) -> None:
        factory = self.factory(target, make_session)
        sock = target.get("socket")
        if sock is not None:
            self.reactor.adoptStreamConnection(sock.fileno(), socket.AF_UNIX, factory)
            sock.close()  # the reactor holds its own duplicate
            return
        from twisted.internet import endpoints

        ep_cfg = target.get("endpoint") or {}
        timeout = ep_cfg.get("timeout", 10)
        ep: Any
        if ep_cfg.get("type") == "unix":
            ep = endpoints.UNIXClientEndpoint(self.reactor,
                                              str(config_dir / ep_cfg["path"]), timeout=timeout)
        else:
            ep = endpoints.HostnameEndpoint(self.reactor, ep_cfg.get("host", "127.0.0.1"),
                                            int(ep_cfg["port"]), timeout=timeout)
            tls = ep_cfg.get("tls")
            if tls is not None:
                ep = endpoints.wrapClientTLS(self._tls(tls, ep_cfg, config_dir), ep)
        d = ep.connect(factory)
        d.addErrback(lambda f: on_fail(f.getErrorMessage()))

    @staticmethod
    def _tls(tls: dict, ep_cfg: dict, config_dir: Path) -> Any:
        from twisted.internet import ssl

        kwargs: dict[str, Any] = {}
        cas = [ssl.Certificate.loadPEM((config_dir / p).read_text())
               for p in tls.get("ca_certificates") or []]
        if cas:
            kwargs["trustRoot"] = ssl.trustRootFromCertificates(cas)
        if tls.get("certificate") and tls.get("key"):
            kwargs["clientCertificate"] = ssl.PrivateCertificate.loadPEM(
                (config_dir / tls["certificate"]).read_text() + (config_dir / tls["key"])
                .read_text())
        return ssl.optionsForClientTLS(tls.get("hostname") or ep_cfg.get("host", "localhost"),
                                       **kwargs)

    def run(self, start: Callable, terminate: Callable) -> None:
        signal.signal(signal.SIGTERM, lambda *a: self.reactor.callFromThread(terminate))
        signal.signal(signal.SIGINT, lambda *a: self.reactor.callFromThread(terminate))
        self.reactor.callWhenRunning(start)
        self.reactor.run(installSignalHandlers=False)

    def stop(self) -> None:
        if self.reactor.running:
            self.reactor.stop()


class Asyncio(Framework):
    name = "asyncio"

    def __init__(self) -> None:
        import asyncio

        import txaio

        txaio.use_asyncio()
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        txaio.config.loop = self.loop
        from autobahn.asyncio.wamp import ApplicationSession

        self.Session = ApplicationSession

    def factories(self) -> tuple[Any, Any]:
        from autobahn.asyncio.rawsocket import WampRawSocketClientFactory
        from autobahn.asyncio.websocket import WampWebSocketClientFactory

        return WampWebSocketClientFactory, WampRawSocketClientFactory

    def call_later(self, delay: float, fn: Callable, *args: Any) -> None:
        self.loop.call_later(delay, fn, *args)

    def connect(self, target: dict, make_session: Callable, on_fail: Callable[[str], None],
                config_dir: Path) -> None:
        factory = self.factory(target, make_session)
        ep_cfg = target.get("endpoint") or {}

        async def go() -> None:
            try:
                if target.get("socket") is not None:
                    await self.loop.create_unix_connection(factory, sock=target["socket"])
                elif ep_cfg.get("type") == "unix":
                    await self.loop.create_unix_connection(factory,
                                                           str(config_dir / ep_cfg["path"]))
                else:
                    host = ep_cfg.get("host", "127.0.0.1")
                    ctx = self._tls(ep_cfg.get("tls"), config_dir)
                    await self.loop.create_connection(
                        factory, host, int(ep_cfg["port"]), ssl=ctx,
                        server_hostname=(ep_cfg["tls"].get("hostname") or host) if ctx else None)
            except Exception as e:
                on_fail(str(e) or type(e).__name__)

        self.loop.create_task(go())

    @staticmethod
    def _tls(tls: dict | None, config_dir: Path) -> Any:
        if tls is None:
            return None
        import ssl

        ctx = ssl.create_default_context()
        for p in tls.get("ca_certificates") or []:
            ctx.load_verify_locations(str(config_dir / p))
        if tls.get("certificate") and tls.get("key"):
            ctx.load_cert_chain(str(config_dir / tls["certificate"]), str(config_dir / tls["key"]))
        return ctx

    def run(self, start: Callable, terminate: Callable) -> None:
        self.loop.add_signal_handler(signal.SIGTERM, terminate)
        self.loop.add_signal_handler(signal.SIGINT, terminate)
        self.loop.call_soon(start)
        self.loop.run_forever()

    def stop(self) -> None:
        self.loop.stop()


def choose(spec: dict, comps: list[Component]) -> tuple[type[Framework], str]:
    """(framework, why) for this worker's components."""
    explicit = spec.get("framework") or "auto"
    if explicit == "twisted":
        return Twisted, "options.framework"
    if explicit == "asyncio":
        return Asyncio, "options.framework"
    kinds = {c.kind for c in comps if c.kind}
    if "twisted" in kinds:
        first = next(c for c in comps if c.kind == "twisted")
        return Twisted, f"detected: {first.name} is a Twisted ApplicationSession"
    if "asyncio" in kinds:
        first = next(c for c in comps if c.kind == "asyncio")
        return Asyncio, f"detected: {first.name} is an asyncio ApplicationSession"
    from geonode.workers.kinds import twisted_available

    functions = any(c.type == "function" for c in comps)
    why = "function components run on Twisted, as in Crossbar" if functions else \
        "no component class could be loaded; Twisted, as in Crossbar"
    if twisted_available():
        return Twisted, why
    return Asyncio, "Twisted is not installed"


# ---- the container ------------------------------------------------------------------------

class Container:
    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.id = spec.get("id", "container")
        self.config_dir = Path(spec.get("config_dir", "."))
        self.shutdown_mode = spec.get("shutdown") or SHUTDOWN_MANUAL
        self.restart_mode = spec.get("restart") or "restart-never"
        self.comps = [Component(c) for c in spec["components"]]
        self.running: set[Component] = set()
        self.stopping = False
        self.exit_code = 0
        self._next = 0  # the next component of the first, in-order start
        self.fw: Framework = None  # type: ignore[assignment]
        self.channel: socket.socket | None = None
        if spec.get("channel_fd") is not None:
            self.channel = socket.socket(fileno=int(spec["channel_fd"]))
            self.channel.settimeout(10)

    def prepare(self) -> None:
        for c in self.comps:
            try:
                c.load()
            except LoadError as e:
                c.failed = True
                c.cls = None
                log.error("%s", e)
        for c in self.comps:
            if c.kind == "asyncio" and self.spec.get("framework") == "twisted" or \
                    c.kind == "twisted" and self.spec.get("framework") == "asyncio":
                log.error("%s.classname: %s is a%s ApplicationSession, but options.framework is "
                          "%r", c.path, c.name, " Twisted" if c.kind == "twisted" else "n asyncio",
                          self.spec.get("framework"))
                c.cls = None
        fw_cls, why = choose(self.spec, self.comps)
        self.fw = fw_cls()
        for c in self.comps:
            if c.kind and c.kind != fw_cls.name.lower() and c.cls is not None:
                log.error("%s.classname: %s is a%s ApplicationSession and cannot share a worker "
                          "with %s components: give it a container of its own", c.path, c.name,
                          " Twisted" if c.kind == "twisted" else "n asyncio", self.fw.name)
                c.cls = None
        log.info("%s: %d component(s) on %s (%s)", self.id, len(self.comps), self.fw.name, why)

    # -- one component's life
    def start(self, c: Component) -> None:
        if self.stopping:
            return
        c.failed = False
        if c.cls is None and not c.callbacks:
            try:
                c.load()
                if c.kind and c.kind != self.fw.name.lower():
                    raise LoadError(f"{c.path}.classname: {c.name} is not a {self.fw.name} "
                                    "ApplicationSession like the rest of this worker")
            except LoadError as e:
                if c.failures == 0:
                    pass  # logged by prepare
                else:
                    log.error("%s", e)
                self.running.add(c)
                self.closed(c, failed=True)
                return
        self.running.add(c)
        c.started_at = time.monotonic()
        target = dict(self.spec_target(c))
        if "channel" in target:
            try:
                target["socket"] = self._open_channel(target["channel"])
            except OSError as e:
                log.error("%s: the node's channel failed: %s", c.path, e)
                self.closed(c, failed=True)
                return
        self.fw.connect(target, lambda: self.make_session(c), lambda why: self.connect_failed(c,
                        why), self.config_dir)

    def spec_target(self, c: Component) -> dict:
        if c.cfg.get("channel") is not None:
            return {"channel": c.cfg["channel"]}
        return c.cfg.get("transport") or {}

    def _open_channel(self, index: int) -> socket.socket:
        """A connected socket to the router for component ``index``, from the node (the
        node decides its realm, authid and role; the child only names the component)."""
        assert self.channel is not None
        self.channel.sendall(f"open {index}\n".encode())
        msg, fds, _, _ = socket.recv_fds(self.channel, 256, 1)
        if not fds:
            raise OSError(msg.decode(errors="replace") or "the node closed the channel")
        return socket.socket(fileno=fds[0])

    def connect_failed(self, c: Component, why: str) -> None:
        ep = (c.cfg.get("transport") or {}).get("endpoint") or {}
        where = ep.get("path") or f"{ep.get('host')}:{ep.get('port')}"
        log.error("%s: cannot connect to %s: %s", c.path, where, why)
        self.closed(c, failed=True)

    def make_session(self, c: Component) -> Any:
        extra = c.cfg.get("extra")
        if extra is None:
            extra = {}
        if isinstance(extra, dict):
            extra = dict(extra, cbdir=str(self.config_dir))
        from autobahn.wamp.types import ComponentConfig

        config = ComponentConfig(realm=c.cfg["realm"], extra=extra)
        try:
            if c.type == "function":
                session = self._function_session(c, config)
            else:
                assert c.cls is not None  # a class component's class loaded before it starts
                session = c.cls(config)
        except Exception as e:
            log.error("%s: %s(config) failed: %s", c.path, c.name, _one_line(e))
            self.fw.call_later(0, self.closed, c, True)
            raise
        c.session = session

        def panic(fail: Any, msg: str) -> None:
            # any exception out of the user's on* handlers ends the component (Crossbar)
            value = getattr(fail, "value", fail)
            log.error("%s: %s: %s", c.path, msg, _one_line(value)
                      if isinstance(value, BaseException) else value)
            log.debug("%s", "".join(traceback.format_exception(value))
                      if isinstance(value, BaseException) else "")
            c.failed = True
            session.disconnect()

        session._swallow_error = panic
        session.on("join", lambda s, details: self.joined(c, details))
        session.on("ready", lambda s: self.ready(c))
        session.on("disconnect", lambda s, was_clean=True: self.closed(c, not was_clean))
        return session

    def _function_session(self, c: Component, config: Any) -> Any:
        role = c.cfg.get("role", "anonymous")

        class FunctionSession(self.fw.Session):  # type: ignore[name-defined]
            def onConnect(self) -> None:
                self.join(self.config.realm, authrole=role)

        s = FunctionSession(config)
        for name, fn in c.callbacks.items():
            s.on(name, fn)
        return s

    def joined(self, c: Component, details: Any) -> None:
        log.info("%s: %s joined realm %r (session %s, authid %r, role %r)", c.path, c.name,
                 details.realm, details.session, details.authid, details.authrole)

    def ready(self, c: Component) -> None:
        """onJoin is done: Crossbar starts a container's next component only now (a
        component may rely on the ones before it, e.g. an authorizer)."""
        if not c.first_start_done:
            c.first_start_done = True
            self.start_next()

    def start_next(self) -> None:
        if self._next < len(self.comps):
            c = self.comps[self._next]
            self._next += 1
            self.start(c)

    def closed(self, c: Component, failed: bool) -> None:
        """Crossbar's ``_component_closed``: the container's shutdown mode first, then its
        restart mode (geonode waits with a backoff before each restart)."""
        if c not in self.running:
            return
        self.running.discard(c)
        if not c.first_start_done:
            c.first_start_done = True
            self.start_next()
        failed = failed or c.failed
        c.session = None
        if self.stopping:
            if not self.running:
                self.fw.stop()
            return
        if failed and self.shutdown_mode == SHUTDOWN_ON_ANY_FAILED:
            log.info("%s failed: stopping the container (%s)", c.path, self.shutdown_mode)
            return self.shutdown(failed=True)
        if self.shutdown_mode == SHUTDOWN_ON_ANY_STOPPED:
            log.info("%s stopped: stopping the container (%s)", c.path, self.shutdown_mode)
            return self.shutdown(failed=failed)
        if not self.running and self.shutdown_mode == SHUTDOWN_ON_LAST_STOPPED:
            log.info("%s stopped, no component left: stopping the container (%s)", c.path,
                     self.shutdown_mode)
            return self.shutdown(failed=failed)
        if self.restart_mode == RESTART_ALWAYS or (self.restart_mode == RESTART_ON_FAILED
                                                   and failed):
            lived = time.monotonic() - c.started_at if c.started_at else 0.0
            c.failures = 0 if lived > STABLE_AFTER else c.failures + 1
            delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** max(0, c.failures - 1))
            log.warning("%s %s: restarting in %.1f s (%s)", c.path,
                        "failed" if failed else "stopped", delay, self.restart_mode)
            self.fw.call_later(delay, self.start, c)
        else:
            log.warning("%s %s; not restarted (%s)", c.path, "failed" if failed else "stopped",
                        self.restart_mode)

    def shutdown(self, failed: bool = False) -> None:
        self.exit_code = EXIT_AFTER_FAILURE if failed else 0
        self.terminate()

    def terminate(self) -> None:
        """Leave every session (GOODBYE), then stop; bounded by LEAVE_TIMEOUT."""
        if self.stopping:
            return
        self.stopping = True
        live = [c for c in self.running if c.session is not None]
        for c in live:
            try:
                if c.session.is_attached():
                    c.session.leave()
                else:
                    c.session.disconnect()
            except Exception:
                pass
        if not self.running:
            self.fw.stop()
        else:
            self.fw.call_later(LEAVE_TIMEOUT, self.fw.stop)

    def run(self) -> int:
        self.prepare()
        # The node says "start" once its routers listen (imports above ran meanwhile).
        if sys.stdin.readline().strip() != "start":
            return 0  # the node went away before it was ready

        self.fw.run(self.start_next, self.terminate)
        return self.exit_code


def _setup(spec: dict) -> None:
    level = getattr(logging, str(spec.get("loglevel", "info")).upper(), logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    title = spec.get("title")
    if title:
        try:
            import setproctitle

            setproctitle.setproctitle(title)
        except ImportError:
            try:
                import ctypes

                ctypes.CDLL(None).prctl(15, title.encode()[:15], 0, 0, 0)  # PR_SET_NAME
            except Exception:
                pass
    for p in reversed(spec.get("pythonpath") or []):
        if p not in sys.path:
            sys.path.insert(0, p)


def main() -> None:
    try:
        spec = json.loads(sys.stdin.readline())
    except ValueError as e:
        print(f"ERROR the worker spec on stdin is not JSON: {e}", file=sys.stderr)
        sys.exit(2)
    _setup(spec)
    try:
        code = Container(spec).run()
    except ImportError as e:
        from geonode.workers.kinds import twisted_missing_message

        if (e.name or "").startswith("twisted"):  # options.framework "twisted" (check agrees)
            log.error("%s", twisted_missing_message(f"{spec.get('path', 'worker')}.options."
                                                    "framework", "'twisted'"))
        else:
            log.error("%s: %s", spec.get("path", "worker"), _one_line(e))
        code = 2
    sys.stdout.flush()
    os._exit(code)  # no interpreter teardown: the reactor's threads, the loop's transports


__all__ = ["BOOT", "Container", "EXIT_AFTER_FAILURE", "SHUTDOWN_MODES", "boot_argv", "kind_of",
           "main"]
