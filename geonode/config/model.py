"""The node config as typed objects, with every default in one place.

``geonode.config.load`` builds a :class:`NodeModel` once, after the schema and the semantic
checks; the node, the routers, the transports and the path services read its fields instead of
walking dicts with ``.get(key, default)``. Every check that used to wait for the node to be
built (an uninstalled serializer, an interface that cannot be bound, a websocket path without
a router) is made here, so ``geonode check`` and ``geonode start`` refuse the same config with
the same line, led by its JSON path.

Keys a service alone understands stay in its ``extra`` dict (the service's whole config); the
fields typed here are the ones the rest of geonode reads or that carry a default.

The ``parse_*`` functions build one part from a dict (tests, benchmarks, ``Router({...})``)
and raise ``ConfigError`` at once; the builders inside collect every problem into a list.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geonode.config import serializers as ser
from geonode.config.backplane import BackplaneConfig
from geonode.config.environ import join_path
from geonode.config.proxies import allowed_proxies
from geonode.config.reader import ConfigError
from geonode.config.services import BUILDERS as APP_BUILDERS
from geonode.config.services import (
    Service,
    StatusService,
    cookie_file_problem,
    status_realm_errors,
)
from geonode.config.services import file_errors as service_file_errors
from geonode.config.sharing import copies, disabled
from geonode.uri import MAX_URI_LENGTH, infer_match

__all__ = [
    "Component", "Endpoint", "History", "JsonService", "LongPollService", "NodeModel",
    "PathService", "Permission", "RealmConfig", "RealmOptions", "RedirectService",
    "ReverseProxyService", "RoleConfig", "Service", "StaticService", "TesteeService",
    "Transport", "WebSocketService", "Worker", "WsgiService", "build_node", "file_errors",
    "parse_service", "parse_transport", "parse_worker", "services",
]

MATCHES = ("exact", "prefix", "wildcard")

# -- defaults (each used by exactly one reader; the why is next to it) --------------------------

#: messages waiting for a WAMP connection's socket (geonode's bound, not Crossbar's)
DEFAULT_MAX_QUEUE = 10_000
#: bytes (characters for JSON) waiting for a WAMP connection's socket
DEFAULT_MAX_QUEUE_BYTES = 16 << 20
#: geonode's own transport options (not Crossbar's): the bound of a connection's outgoing queue
QUEUE_OPTIONS = ("max_queue", "max_queue_bytes")
#: Crossbar's listen backlog
DEFAULT_BACKLOG = 50
#: a wsgi path's thread pool (Crossbar's Twisted default: 20 threads, none kept idle)
DEFAULT_MAXTHREADS = 20
DEFAULT_MINTHREADS = 0
#: seconds a reverse-proxied upstream may stay silent before the request ends with 504
DEFAULT_PROXY_TIMEOUT = 60.0
#: a realm store's event history depth when neither the entry nor the store gives one
DEFAULT_HISTORY_LIMIT = 1000
#: the role of a router component without one (it runs inside the node: trusted)
DEFAULT_COMPONENT_ROLE = "trusted"
#: the largest WAMP message a client may send (WebSocket paths and RawSocket transports
#: without their own max_message_size, a long-poll send body): Crossbar's ``crossbar init``
#: template and autobahn's client runners use 1 MiB, so larger events would not reach
#: autobahn subscribers anyway; it bounds what one connection's message costs (reading,
#: parsing, fan-out copies) to a few MiB
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
#: a long-poll receive waits this long (Crossbar's default; autobahn|js gives up at 12 s)
DEFAULT_REQUEST_TIMEOUT = 10.0
#: seconds without any request before a long-poll session is closed (Crossbar's)
DEFAULT_SESSION_TIMEOUT = 30.0
#: ``session_timeout`` 0 (Crossbar: never) still ends an idle long-poll session after this
LONGPOLL_MAX_IDLE = 3600.0
#: open long-poll sessions per path
DEFAULT_MAX_SESSIONS = 1000
#: a websocket-testee's message bound: the largest message of Autobahn|Testsuite (9.x)
TESTEE_MAX_MESSAGE = 16 << 20
#: the worker types run in a child process by geonode.workers (their config is ``extra``)
CHILD_WORKERS = ("container", "guest")

#: what start and check say of a WAMP transport or path in a worker without realms
ROUTER_NEEDED = "{path}: a {what} needs a router worker with realms"


def _dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _list(x: Any) -> list:
    return x if isinstance(x, list) else []


# -- realms --------------------------------------------------------------------------------------

@dataclass(slots=True)
class Permission:
    """One rule of a static role. ``match`` is explicit: a starred URI without one is read as
    Crossbar reads it (``a.b.*`` is the prefix ``a.b.``)."""

    uri: str
    match: str
    publish: bool = False
    subscribe: bool = False
    call: bool = False
    register: bool = False
    disclose_caller: bool = False
    disclose_publisher: bool = False
    cache: bool = False


@dataclass(slots=True)
class RoleConfig:
    name: str
    permissions: list[Permission] = field(default_factory=list)
    #: a dynamic role's authorizer procedure (None: a static role)
    authorizer: str | None = None
    #: Crossbar 0.x's ``allow-by-default``: a URI no permission matches is allowed
    allow_by_default: bool = False


@dataclass(slots=True)
class RealmOptions:
    enable_meta_api: bool = True
    #: Crossbar's default is loose (its router factory), strict only when asked for
    uri_check: str = "loose"
    max_uri_length: int = MAX_URI_LENGTH


@dataclass(slots=True)
class History:
    """A subscription that keeps its last events (Crossbar's realm store ``event-history``)."""

    uri: str
    match: str = "exact"
    limit: int = DEFAULT_HISTORY_LIMIT


@dataclass(slots=True)
class RealmConfig:
    name: str
    roles: list[RoleConfig] = field(default_factory=list)
    options: RealmOptions = field(default_factory=RealmOptions)
    history: list[History] = field(default_factory=list)
    json_path: str = ""


# -- endpoints and transports -------------------------------------------------------------------

@dataclass(slots=True)
class Endpoint:
    type: str = "tcp"
    json_path: str = ""
    port: int = 0
    #: None: every address of the IP version
    interface: str | None = None
    version: int = 4
    backlog: int = DEFAULT_BACKLOG
    shared: bool = False
    #: a unix endpoint's socket file (relative to the config's folder)
    path: str | None = None
    #: the ``tls`` object as written (its files are checked by the semantic pass)
    tls: dict | None = None

    @property
    def any_interface(self) -> str:
        return self.interface or ("::" if self.version == 6 else "0.0.0.0")


@dataclass(slots=True)
class WsgiService(Service):
    module: str = ""
    object: str = ""
    #: False: the app runs on the hub as greenlets (gevent-aware apps only)
    threads: bool = True
    minthreads: int = DEFAULT_MINTHREADS
    maxthreads: int = DEFAULT_MAXTHREADS
    #: ``{"realm", "role", "authid"?}``: an in-process WAMP session for the app
    wamp: dict | None = None


@dataclass(slots=True)
class WebSocketService(Service):
    serializers: list[str] = field(default_factory=list)
    max_queue: int = DEFAULT_MAX_QUEUE
    max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES
    #: the WebSocket options without geonode's queue keys (geonode.websocket.WebSocketOptions)
    options: dict = field(default_factory=dict)
    auth: dict | None = None
    #: Crossbar's cookie tracking (geonode.router.auth.cookie); None: no cookie is set
    cookie: dict | None = None


@dataclass(slots=True)
class LongPollService(Service):
    """A ``longpoll`` path: its serializers and ``options`` (seconds and counts)."""

    serializers: list[str] = field(default_factory=list)
    #: how long a receive request waits for messages (``request_timeout`` 0: this default)
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    #: a session no request touched for this long is closed (0 in the config: MAX_IDLE)
    session_timeout: float = DEFAULT_SESSION_TIMEOUT
    max_sessions: int = DEFAULT_MAX_SESSIONS
    #: the largest send body: one message (a batch for ``.batched``)
    max_body_size: int = DEFAULT_MAX_MESSAGE_SIZE
    #: ``queue_limit_messages`` / ``queue_limit_bytes``: the session's outgoing queue
    max_queue: int = DEFAULT_MAX_QUEUE
    max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES
    #: Crossbar's debugging aid: every session gets this transport id
    debug_transport_id: str | None = None


@dataclass(slots=True)
class TesteeService(Service):
    """A ``websocket-testee`` (path or worker): WebSocket options with its defaults filled."""

    #: the WebSocket options as written, ``max_message_size`` defaulted to TESTEE_MAX_MESSAGE
    options: dict = field(default_factory=dict)
    #: permessage-deflate offered with its defaults (no ``options.compression`` given)
    deflate: bool = True


@dataclass(slots=True)
class RedirectService(Service):
    url: str = ""


@dataclass(slots=True)
class JsonService(Service):
    value: Any = None
    prettify: bool = False
    allow_cross_origin: bool = True
    discourage_caching: bool = False


@dataclass(slots=True)
class ReverseProxyService(Service):
    host: str = ""
    port: int = 80
    path: str = ""
    timeout: float = DEFAULT_PROXY_TIMEOUT
    forwarded_port: int | None = None
    forwarded_proto: str | None = None


@dataclass(slots=True)
class StaticService(Service):
    directory: str | None = None
    package: str | None = None
    resource: str | None = None
    options: dict = field(default_factory=dict)


@dataclass(slots=True)
class PathService(Service):
    paths: dict[str, Service] = field(default_factory=dict)


@dataclass(slots=True)
class Transport:
    """A listening transport. ``type``: web, rawsocket, websocket (stand-alone), universal,
    mqtt, or websocket-testee (that worker's one transport)."""

    type: str
    json_path: str
    endpoint: Endpoint
    #: the transport's ``options`` as written (web: geonode.web.limits reads the timeouts;
    #: mqtt: geonode.mqtt.service reads its own)
    options: dict = field(default_factory=dict)
    #: the HTTP server's options (timeouts, max_connections): web: ``options``, universal:
    #: ``web.options``, a stand-alone websocket or testee: none (its options are WebSocket's)
    server_options: dict = field(default_factory=dict)
    #: web: the path services by key (universal: ``web.paths``)
    paths: dict[str, Service] = field(default_factory=dict)
    #: rawsocket: what it speaks, its queue bound (mqtt too), its authentication
    serializers: list[str] = field(default_factory=list)
    max_queue: int = DEFAULT_MAX_QUEUE
    max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES
    auth: dict | None = None
    #: None: the node's fair share of the open-file limit
    max_connections: int | None = None
    #: websocket / websocket-testee: the service on every path
    service: Service | None = None
    #: universal: its ``rawsocket`` (a Transport without endpoint of its own) and the
    #: ``websocket`` paths by key
    rawsocket: Transport | None = None
    websockets: dict[str, Service] = field(default_factory=dict)
    #: universal: its ``mqtt`` part (an mqtt Transport sharing the endpoint)
    mqtt: Transport | None = None

    @property
    def tls(self) -> bool:
        return bool(self.endpoint.tls)


@dataclass(slots=True)
class Component:
    classname: str
    realm: str
    json_path: str
    role: str = DEFAULT_COMPONENT_ROLE
    #: the component's id, else its class name: its authid
    authid: str = ""
    extra: Any = None
    #: the component as written (an autobahn one goes to geonode.workers as it is)
    config: dict = field(default_factory=dict)


@dataclass(slots=True)
class Worker:
    json_path: str
    type: str = "router"
    #: not started: ``options.disabled``, or a copy of the worker ``served_by`` names
    disabled: bool = False
    #: identical to that worker (JSON path) on its shared port, which serves for both
    #: (geonode.config.sharing)
    served_by: str | None = None
    #: ``options.pythonpath`` entries as written (relative to the config's folder)
    pythonpath: list[str] = field(default_factory=list)
    env_vars: dict[str, str] = field(default_factory=dict)
    #: the worker's ``options`` as written (auth_throttle: router/auth/throttle.py)
    options: dict = field(default_factory=dict)
    realms: list[RealmConfig] = field(default_factory=list)
    transports: list[Transport] = field(default_factory=list)
    components: list[Component] = field(default_factory=list)
    #: its index in ``workers``, its ``id`` (None: geonode names it by the index)
    index: int = 0
    id: str | None = None
    #: container and guest workers: the worker as written (geonode.workers reads it)
    extra: dict = field(default_factory=dict)
    #: ``options.backplane``: this router is one node of a cluster (geonode.cluster)
    backplane: BackplaneConfig | None = None

    @property
    def has_router(self) -> bool:
        """A worker without realms is web-only: no router is built for it."""
        return bool(self.realms)


@dataclass(slots=True)
class GcOptions:
    """``controller.options.gc`` (geonode.gcpolicy; docs/sessions.md says when to use which)."""

    #: "auto": "freeze" when the node runs none of the user's Python code, else "default"
    policy: str = "auto"
    backstop_interval: float = 3600.0
    backstop_growth: float = 1.0


@dataclass(slots=True)
class NodeModel:
    workers: list[Worker] = field(default_factory=list)
    title: str | None = None
    #: ``controller.options.shutdown`` (geonode.workers.manager acts on them)
    shutdown: list[str] = field(default_factory=list)
    #: ``controller.options.shutdown_timeout``: None, geonode.node's default
    shutdown_timeout: float | None = None
    gc: GcOptions = field(default_factory=GcOptions)


# -- builders -----------------------------------------------------------------------------------

def build_node(data: dict, errors: list[str]) -> NodeModel:
    """The model of a schema-valid config; problems are appended to ``errors``."""
    options = _dict(_dict(data.get("controller")).get("options"))
    title = options.get("title")
    modes = options.get("shutdown")
    workers = [_worker(_dict(w), f"workers[{i}]", errors, i)
               for i, w in enumerate(_list(data.get("workers")))]
    for copy, served in copies(data).items():
        workers[copy].disabled = True
        workers[copy].served_by = workers[served].json_path
    stop = options.get("shutdown_timeout")
    gc = _dict(options.get("gc"))
    return NodeModel(workers=workers, title=title if isinstance(title, str) else None,
                     shutdown_timeout=float(stop) if isinstance(stop, int | float) else None,
                     gc=GcOptions(policy=gc.get("policy", "auto"),
                                  backstop_interval=float(gc.get("backstop_interval", 3600.0)),
                                  backstop_growth=float(gc.get("backstop_growth", 1.0))),
                     shutdown=[modes] if isinstance(modes, str)
                     else [m for m in _list(modes) if isinstance(m, str)])


def _raise(errors: list[str]) -> None:
    if errors:
        raise ConfigError(errors)


def parse_worker(cfg: dict | None, json_path: str = "workers[0]") -> Worker:
    errors: list[str] = []
    worker = _worker(cfg or {}, json_path, errors)
    _raise(errors)
    return worker


def parse_transport(cfg: dict, json_path: str, has_router: bool = True) -> Transport:
    errors: list[str] = []
    transport = _transport(cfg, json_path, has_router, errors)
    _raise(errors)
    return transport


def parse_service(cfg: dict, json_path: str, has_router: bool = True) -> Service:
    errors: list[str] = []
    service = _service(cfg, json_path, has_router, errors)
    _raise(errors)
    return service


def _worker(cfg: dict, wpath: str, errors: list[str], index: int = 0) -> Worker:
    kind = cfg.get("type", "router")
    options = _dict(cfg.get("options"))
    off = disabled(options.get("disabled", False))
    if kind in CHILD_WORKERS:
        # its options act on its own process (geonode.workers), not on the node's
        return Worker(json_path=wpath, type=kind, disabled=off, options=options, index=index,
                      id=cfg.get("id"), extra=cfg)
    if kind == "websocket-testee":
        tpath = f"{wpath}.transport"
        raw = _dict(cfg.get("transport"))
        endpoint = _endpoint(_dict(raw.get("endpoint")), f"{tpath}.endpoint", errors)
        testee = Transport(type=kind, json_path=tpath, endpoint=endpoint, options=options,
                           service=_testee(raw, tpath, False, errors))
        return Worker(json_path=wpath, type=kind, disabled=off, options=options,
                      transports=[testee], index=index)
    if kind != "router":
        errors.append(f"{wpath}.type: worker type {kind!r} is not supported by geonode")
    realms = [_realm(_dict(r), f"{wpath}.realms[{i}]", errors)
              for i, r in enumerate(_list(cfg.get("realms")))]
    has_router = bool(realms)
    transports = [_transport(_dict(t), f"{wpath}.transports[{i}]", has_router, errors)
                  for i, t in enumerate(_list(cfg.get("transports")))]
    components = [_component(_dict(c), f"{wpath}.components[{i}]", errors)
                  for i, c in enumerate(_list(cfg.get("components")))]
    meta_off = {r.name for r in realms if not r.options.enable_meta_api}
    for transport in transports:
        for svc in services(transport):
            if isinstance(svc, StatusService):
                errors.extend(status_realm_errors(svc, meta_off))
    env = _dict(options.get("env"))
    backplane = _backplane(options.get("backplane"), f"{wpath}.options.backplane", errors)
    return Worker(json_path=wpath, type=kind, disabled=off, backplane=backplane,
                  pythonpath=[p for p in _list(options.get("pythonpath")) if isinstance(p, str)],
                  env_vars={str(k): str(v) for k, v in _dict(env.get("vars")).items()},
                  options=options, realms=realms, transports=transports,
                  components=components, index=index, id=cfg.get("id"))


def _backplane(cfg: Any, bpath: str, errors: list[str]) -> BackplaneConfig | None:
    """``options.backplane`` (its own checks: the semantic pass, geonode.config.backplane)."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("url"), str):
        return None
    try:
        return BackplaneConfig.from_options(cfg)
    except (TypeError, ValueError) as e:
        errors.append(f"{bpath}: {e}")
        return None


def _forwarded(options: dict, opath: str, errors: list[str]) -> None:
    """``forwarded_allow_ips``, read by the function geonode.web.forwarded builds it with."""
    allow = options.get("forwarded_allow_ips")
    if allow:
        try:
            allowed_proxies(allow, f"{opath}.forwarded_allow_ips")
        except ConfigError as e:
            errors.extend(e.errors)


def _permission(cfg: dict, ppath: str, errors: list[str]) -> Permission:
    uri = cfg.get("uri", "")
    match = cfg.get("match")
    if match is None:
        uri, match = infer_match(uri)
    elif match == "prefix" and uri.endswith("*"):
        uri = uri[:-1]
    if match not in MATCHES:
        errors.append(f"{ppath}.match: {match!r} is not one of {', '.join(MATCHES)}")
    allow = _dict(cfg.get("allow"))
    disclose = _dict(cfg.get("disclose"))
    # Crossbar's older flat form ({"uri": ..., "call": true}) is accepted too.
    flags = {a: bool(allow.get(a, cfg.get(a, False)))
             for a in ("publish", "subscribe", "call", "register")}
    return Permission(uri=uri, match=match, **flags,
                      disclose_caller=bool(disclose.get("caller", False)),
                      disclose_publisher=bool(disclose.get("publisher", False)),
                      cache=bool(cfg.get("cache", False)))


def _realm(cfg: dict, rpath: str, errors: list[str]) -> RealmConfig:
    roles = []
    for i, r in enumerate(_list(cfg.get("roles"))):
        r = _dict(r)
        opath = f"{rpath}.roles[{i}]"
        authorizer = r.get("authorizer")
        perms = [_permission(_dict(p), f"{opath}.permissions[{j}]", errors)
                 for j, p in enumerate(_list(r.get("permissions")))]
        roles.append(RoleConfig(name=str(r.get("name", "")), permissions=perms,
                                authorizer=authorizer if isinstance(authorizer, str) else None,
                                allow_by_default=bool(r.get("allow-by-default", False))))
    options = _dict(cfg.get("options"))
    realm_options = RealmOptions(
        enable_meta_api=bool(options.get("enable_meta_api", True)),
        uri_check=options.get("uri_check", "loose"),
        max_uri_length=int(options.get("max_uri_length", MAX_URI_LENGTH)))
    if realm_options.uri_check not in ("strict", "loose"):
        errors.append(f"{rpath}.options.uri_check: must be 'strict' or 'loose'")
    store = _dict(cfg.get("store"))
    default_limit = store.get("limit", DEFAULT_HISTORY_LIMIT)
    history = [History(uri=e["uri"], match=e.get("match", "exact"),
                       limit=e.get("limit", default_limit))
               for e in map(_dict, _list(store.get("event-history"))) if "uri" in e]
    return RealmConfig(name=str(cfg.get("name", "")), roles=roles, options=realm_options,
                       history=history, json_path=rpath)


def _interface_error(interface: str, version: int) -> str | None:
    """Why ``interface`` cannot be bound for IP ``version`` (None: it can be tried)."""
    family = socket.AF_INET6 if version == 6 else socket.AF_INET
    try:
        address = ipaddress.ip_address(interface)
    except ValueError:
        pass
    else:
        if address.version != version:
            return f"{interface!r} is an IPv{address.version} address, the endpoint is IPv{version}"
        return None
    # A host name: resolved as the bind will resolve it.
    try:
        socket.getaddrinfo(interface, None, family, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        return (f"{interface!r} is neither an IPv{version} address nor a host name that "
                f"resolves ({getattr(e, 'strerror', None) or e})")
    return None


def _endpoint(cfg: dict, epath: str, errors: list[str],
              kinds: tuple[str, ...] = ("tcp", "unix"), what: str = "") -> Endpoint:
    kind = cfg.get("type", "tcp")
    if kind not in kinds:
        errors.append(f"{epath}.type: {kind!r} is not supported{what} ({' or '.join(kinds)})")
    version = int(cfg.get("version", 4))
    interface = cfg.get("interface") or None
    if kind == "tcp" and isinstance(interface, str):
        why = _interface_error(interface, version)
        if why is not None:
            errors.append(f"{epath}.interface: {why}")
    tls = cfg.get("tls")
    return Endpoint(type=kind, json_path=epath, port=int(cfg.get("port", 0) or 0),
                    interface=interface, version=version,
                    backlog=int(cfg.get("backlog", DEFAULT_BACKLOG)),
                    shared=bool(cfg.get("shared", False)), path=cfg.get("path"),
                    tls=tls if isinstance(tls, dict) else None)


def _serializers(cfg: dict, json_path: str, errors: list[str]) -> list[str]:
    """The base serializer names a transport config asks for (default: all installed)."""
    names = cfg.get("serializers")
    if names is None:
        one = cfg.get("serializer")  # Crossbar 0.x's RawSocket form: one name
        if one is None:
            return list(ser.installed())
        found: list[str] = []
        _serializer_name(one, f"{json_path}.serializer", found, errors)
        return found
    if not isinstance(names, list) or not names:
        errors.append(f"{json_path}.serializers: must be a non-empty list of "
                      f"serializer names ({', '.join(ser.SUPPORTED)})")
        return []
    found = []
    for i, name in enumerate(names):
        _serializer_name(name, f"{json_path}.serializers[{i}]", found, errors)
    return list(dict.fromkeys(found))


def _serializer_name(name: Any, json_path: str, found: list[str], errors: list[str]) -> None:
    """``name`` appended to ``found`` when this installation speaks it, else why not."""
    if name in ser.UNSUPPORTED:
        errors.append(f"{json_path}: serializer {name!r} is not supported "
                      f"by geonode (supported: {', '.join(ser.SUPPORTED)})")
    elif name not in ser.SUPPORTED:
        errors.append(f"{json_path}: unknown serializer {name!r} "
                      f"(known: {', '.join(ser.SUPPORTED)})")
    elif name not in ser.installed():
        errors.append(f"{json_path}: serializer {name!r} is not installed "
                      f"(installed: {', '.join(ser.installed())})")
    else:
        found.append(name)


def _queue_limits(options: dict, json_path: str, errors: list[str]) -> dict[str, int]:
    """``max_queue`` (messages) and ``max_queue_bytes`` from a transport's options."""
    limits = {"max_queue": DEFAULT_MAX_QUEUE, "max_queue_bytes": DEFAULT_MAX_QUEUE_BYTES}
    for key in QUEUE_OPTIONS:
        if key in options:
            value = options[key]
            if type(value) is not int or value < 1:
                errors.append(f"{json_path}.options.{key}: must be a positive integer")
            else:
                limits[key] = value
    return limits


def _transport(cfg: dict, tpath: str, has_router: bool, errors: list[str]) -> Transport:
    kind = str(cfg.get("type"))
    build = _TRANSPORT_BUILDERS.get(kind)
    if build is None:
        errors.append(f"{tpath}.type: transport type {kind!r} is not supported by geonode")
        return Transport(type=kind, json_path=tpath, endpoint=Endpoint(json_path=tpath))
    return build(cfg, tpath, has_router, errors)


def _web_transport(cfg: dict, tpath: str, has_router: bool, errors: list[str]) -> Transport:
    options = _dict(cfg.get("options"))
    _forwarded(options, f"{tpath}.options", errors)
    return Transport(type="web", json_path=tpath,
                     endpoint=_endpoint(_dict(cfg.get("endpoint")), f"{tpath}.endpoint", errors),
                     options=options, server_options=options,
                     paths=_paths(_dict(cfg.get("paths")), f"{tpath}.paths", has_router, errors),
                     max_connections=options.get("max_connections"))


def _wamp_stream(kind: str, cfg: dict, tpath: str, endpoint: Endpoint,
                 errors: list[str]) -> Transport:
    """A RawSocket's (or its part of a universal transport's) serializers, queue, auth."""
    options = _dict(cfg.get("options"))
    auth = cfg.get("auth")
    limits = _queue_limits(options, tpath, errors)
    return Transport(type=kind, json_path=tpath, endpoint=endpoint, options=options,
                     serializers=_serializers(cfg, tpath, errors),
                     max_queue=limits["max_queue"], max_queue_bytes=limits["max_queue_bytes"],
                     auth=auth if isinstance(auth, dict) else None,
                     max_connections=options.get("max_connections"))


def _rawsocket_transport(cfg: dict, tpath: str, has_router: bool,
                         errors: list[str]) -> Transport:
    # (without realms it is allowed, as before: its connections are refused with a log line)
    endpoint = _endpoint(_dict(cfg.get("endpoint")), f"{tpath}.endpoint", errors,
                         what=" for rawsocket")
    return _wamp_stream("rawsocket", cfg, tpath, endpoint, errors)


def _websocket_transport(cfg: dict, tpath: str, has_router: bool,
                         errors: list[str]) -> Transport:
    """Crossbar's stand-alone WebSocket transport: one websocket service on every path."""
    service = _websocket(cfg, tpath, has_router, errors, what="websocket transport")
    return Transport(type="websocket", json_path=tpath,
                     endpoint=_endpoint(_dict(cfg.get("endpoint")), f"{tpath}.endpoint", errors),
                     options=_dict(cfg.get("options")), service=service)


def _universal_transport(cfg: dict, tpath: str, has_router: bool,
                         errors: list[str]) -> Transport:
    """RawSocket, WebSocket paths and web paths on one endpoint (geonode.web.universal)."""
    endpoint = _endpoint(_dict(cfg.get("endpoint")), f"{tpath}.endpoint", errors)
    web = _dict(cfg.get("web"))
    options = _dict(web.get("options"))
    _forwarded(options, f"{tpath}.web.options", errors)
    rawsocket = mqtt = None
    if "mqtt" in cfg:
        mqtt = _mqtt_options(_dict(_dict(cfg["mqtt"]).get("options")), f"{tpath}.mqtt",
                             endpoint, errors)
    if "rawsocket" in cfg:
        rawsocket = _wamp_stream("rawsocket", _dict(cfg["rawsocket"]), f"{tpath}.rawsocket",
                                 endpoint, errors)
    websockets: dict[str, Service] = {key: _websocket({**_dict(svc), "type": "websocket"},
                                  join_path(f"{tpath}.websocket", key), has_router, errors)
                  for key, svc in _dict(cfg.get("websocket")).items()}
    return Transport(type="universal", json_path=tpath, endpoint=endpoint, options=options,
                     server_options=options,
                     paths=_paths(_dict(web.get("paths")), f"{tpath}.web.paths", has_router,
                                  errors),
                     max_connections=options.get("max_connections"), rawsocket=rawsocket,
                     websockets=websockets, mqtt=mqtt)


def _mqtt_transport(cfg: dict, tpath: str, has_router: bool, errors: list[str]) -> Transport:
    """MQTT (geonode.mqtt): its realm and role are checked against the worker's realms by
    the semantic pass; its own limits it reads from ``options``."""
    endpoint = _endpoint(_dict(cfg.get("endpoint")), f"{tpath}.endpoint", errors,
                         what=" for mqtt")
    return _mqtt_options(_dict(cfg.get("options")), tpath, endpoint, errors)


def _mqtt_options(options: dict, tpath: str, endpoint: Endpoint,
                  errors: list[str]) -> Transport:
    """An mqtt transport, or a universal transport's ``mqtt`` part (on its endpoint)."""
    limits = _queue_limits(options, tpath, errors)
    return Transport(type="mqtt", json_path=tpath, endpoint=endpoint, options=options,
                     max_queue=limits["max_queue"], max_queue_bytes=limits["max_queue_bytes"],
                     max_connections=options.get("max_connections"))


_TRANSPORT_BUILDERS: dict[str, Callable[[dict, str, bool, list[str]], Transport]] = {
    "web": _web_transport, "rawsocket": _rawsocket_transport,
    "websocket": _websocket_transport, "universal": _universal_transport,
    "mqtt": _mqtt_transport,
}


def _paths(paths: dict, ppath: str, has_router: bool, errors: list[str]) -> dict[str, Service]:
    return {key: _service(_dict(svc), join_path(ppath, key), has_router, errors)
            for key, svc in paths.items()}


def _service(cfg: dict, spath: str, has_router: bool, errors: list[str]) -> Service:
    kind = str(cfg.get("type"))
    build = _SERVICE_BUILDERS.get(kind)
    if build is None:
        return Service(kind, spath, cfg)  # its keys are its own (cfg.extra)
    return build(cfg, spath, has_router, errors)


def _wsgi(cfg: dict, spath: str, has_router: bool, errors: list[str]) -> Service:
    wamp = cfg.get("wamp")
    maxthreads = int(cfg.get("maxthreads", DEFAULT_MAXTHREADS))
    return WsgiService("wsgi", spath, cfg, module=str(cfg.get("module", "")),
                       object=str(cfg.get("object", "")),
                       threads=cfg.get("threads", True) is not False,
                       minthreads=min(int(cfg.get("minthreads", DEFAULT_MINTHREADS)), maxthreads),
                       maxthreads=maxthreads, wamp=wamp if isinstance(wamp, dict) else None)


def _websocket(cfg: dict, spath: str, has_router: bool, errors: list[str],
               what: str = "websocket path") -> WebSocketService:
    if not has_router:
        errors.append(ROUTER_NEEDED.format(path=spath, what=what))
    options = dict(_dict(cfg.get("options")))
    limits = _queue_limits(options, spath, errors)
    for key in QUEUE_OPTIONS:
        options.pop(key, None)
    auth, cookie = cfg.get("auth"), cfg.get("cookie")
    return WebSocketService("websocket", spath, cfg,
                            serializers=_serializers(cfg, spath, errors),
                            max_queue=limits["max_queue"],
                            max_queue_bytes=limits["max_queue_bytes"], options=options,
                            auth=auth if isinstance(auth, dict) else None,
                            cookie=cookie if isinstance(cookie, dict) else None)


def _longpoll(cfg: dict, spath: str, has_router: bool, errors: list[str]) -> Service:
    if not has_router:
        errors.append(ROUTER_NEEDED.format(path=spath, what="longpoll path"))
    opts = _dict(cfg.get("options"))
    debug_id = opts.get("debug_transport_id")
    return LongPollService(
        "longpoll", spath, cfg, serializers=_serializers(cfg, spath, errors),
        request_timeout=float(opts.get("request_timeout") or DEFAULT_REQUEST_TIMEOUT),
        session_timeout=float(opts.get("session_timeout", DEFAULT_SESSION_TIMEOUT)
                              or LONGPOLL_MAX_IDLE),
        max_sessions=int(opts.get("max_sessions", DEFAULT_MAX_SESSIONS)),
        max_body_size=int(opts.get("max_body_size", DEFAULT_MAX_MESSAGE_SIZE)),
        max_queue=int(opts.get("queue_limit_messages", DEFAULT_MAX_QUEUE)),
        max_queue_bytes=int(opts.get("queue_limit_bytes", DEFAULT_MAX_QUEUE_BYTES)),
        debug_transport_id=debug_id if isinstance(debug_id, str) else None)


def _testee(cfg: dict, spath: str, has_router: bool, errors: list[str]) -> Service:
    options = dict(_dict(cfg.get("options")))
    # bounded like every endpoint, at the size the testsuite needs
    options.setdefault("max_message_size", TESTEE_MAX_MESSAGE)
    return TesteeService("websocket-testee", spath, cfg, options=options,
                         deflate="compression" not in options)


def _redirect(cfg: dict, spath: str, has_router: bool, errors: list[str]) -> Service:
    url = cfg.get("url")
    if not isinstance(url, str) or not url:
        errors.append(f"{spath}.url: a non-empty string is required")
    elif any(c in url for c in "\r\n\x00"):
        errors.append(f"{spath}.url: control characters are not allowed")
    return RedirectService("redirect", spath, cfg, url=url if isinstance(url, str) else "")


def _json(cfg: dict, spath: str, has_router: bool, errors: list[str]) -> Service:
    if "value" not in cfg:
        errors.append(f"{spath}.value: required")
    options = _dict(cfg.get("options"))
    return JsonService("json", spath, cfg, value=cfg.get("value"),
                       prettify=bool(options.get("prettify", False)),
                       allow_cross_origin=bool(options.get("allow_cross_origin", True)),
                       discourage_caching=bool(options.get("discourage_caching", False)))


def _reverseproxy(cfg: dict, spath: str, has_router: bool, errors: list[str]) -> Service:
    host = cfg.get("host")
    if not isinstance(host, str) or not host:
        errors.append(f"{spath}.host: a host name is required")
    port = cfg.get("port", 80)
    if not isinstance(port, int) or not 0 < port < 65536:
        errors.append(f"{spath}.port: must be a port number 1-65535")
    return ReverseProxyService("reverseproxy", spath, cfg,
                               host=host if isinstance(host, str) else "",
                               port=port if isinstance(port, int) else 80,
                               path=cfg.get("path", "") or "",
                               timeout=float(cfg.get("timeout", DEFAULT_PROXY_TIMEOUT)),
                               forwarded_port=cfg.get("forwarded_port"),
                               forwarded_proto=cfg.get("forwarded_proto"))


def _static(cfg: dict, spath: str, has_router: bool, errors: list[str]) -> Service:
    directory, package = cfg.get("directory"), cfg.get("package")
    if directory is not None and package is not None:
        errors.append(f"{spath}: give either 'directory' or 'package'+'resource', not both")
    elif directory is None and package is None:
        errors.append(f"{spath}: 'directory' or 'package'+'resource' required")
    elif package is not None and cfg.get("resource") is None:
        errors.append(f"{spath}.resource: required with 'package'")
    return StaticService("static", spath, cfg, directory=directory, package=package,
                         resource=cfg.get("resource"), options=_dict(cfg.get("options")))


def _path(cfg: dict, spath: str, has_router: bool, errors: list[str]) -> Service:
    return PathService("path", spath, cfg,
                       paths=_paths(_dict(cfg.get("paths")), f"{spath}.paths", has_router, errors))


#: the path services whose keys the model reads (the others keep theirs in ``extra``);
#: the services that are applications of their own are typed in geonode.config.services
_SERVICE_BUILDERS: dict[str, Callable[[dict, str, bool, list[str]], Service]] = {
    "wsgi": _wsgi, "websocket": _websocket, "longpoll": _longpoll, "redirect": _redirect,
    "json": _json, "websocket-testee": _testee,
    "reverseproxy": _reverseproxy, "static": _static, "path": _path, **APP_BUILDERS,
}


def services(transport: Transport) -> Iterator[Service]:
    """Every path service of a transport: its own (a stand-alone websocket, a testee), a
    universal transport's websockets, its paths (nested ones too)."""
    def walk(paths: dict[str, Service]) -> Iterator[Service]:
        for svc in paths.values():
            yield svc
            if isinstance(svc, PathService):
                yield from walk(svc.paths)

    if transport.service is not None:
        yield transport.service
    yield from transport.websockets.values()
    yield from walk(transport.paths)


def file_errors(model: NodeModel, config_dir: Path) -> list[str]:
    """The files the path services need (wap templates, archives, upload folders, cookie
    stores), looked for as their builders will look for them at start."""
    errors: list[str] = []
    for worker in model.workers:
        for transport in worker.transports:
            for svc in services(transport):
                if isinstance(svc, WebSocketService):
                    problem = cookie_file_problem(svc.cookie, config_dir, svc.json_path)
                    if problem:
                        errors.append(problem)
                else:
                    errors.extend(service_file_errors(svc, config_dir))
    return errors


def _component(cfg: dict, cpath: str, errors: list[str]) -> Component:
    kind = cfg.get("type", "class")
    if kind != "class":
        errors.append(f"{cpath}.type: only 'class' components are supported by geonode")
    classname = str(cfg.get("classname", ""))
    return Component(classname=classname, realm=str(cfg.get("realm", "")), json_path=cpath,
                     role=cfg.get("role", DEFAULT_COMPONENT_ROLE),
                     authid=cfg.get("id") or classname.rpartition(".")[2],
                     extra=cfg.get("extra"), config=cfg)


def python_path(model: NodeModel, config_dir: Path) -> list[str]:
    """The folders the enabled workers' ``pythonpath`` puts first on ``sys.path``, in config
    order (the first entry wins, as in Crossbar)."""
    paths: list[str] = []
    for worker in model.workers:
        if worker.disabled:
            continue
        for entry in worker.pythonpath:
            full = str((config_dir / entry).resolve())
            if full not in paths:
                paths.append(full)
    return paths


#: path services through which a router worker serves WAMP (or runs sessions in-process)
WAMP_SERVICES = frozenset({"websocket", "publisher", "caller", "webhook"})


def _paths_serve_wamp(paths: dict[str, Service]) -> bool:
    for svc in paths.values():
        if svc.type in WAMP_SERVICES or (svc.type == "wsgi" and svc.extra.get("wamp")):
            return True
        if isinstance(svc, PathService) and _paths_serve_wamp(svc.paths):
            return True
    return False


def serves_wamp(worker: Worker) -> bool:
    """Whether a router worker has WAMP sessions: a WebSocket path, a non-web transport
    (rawsocket, ...), bridge services, components, in-process sessions of a WSGI app."""
    return bool(worker.components) or any(
        t.type != "web" or _paths_serve_wamp(t.paths) for t in worker.transports)


def wamp_without_backplane(model: NodeModel) -> list[str]:
    """JSON paths of the enabled router workers that serve WAMP and have no backplane: what
    several processes (--processes, gunicorn's workers) would split into separate routers."""
    return [w.json_path for w in model.workers
            if w.type == "router" and not w.disabled and w.backplane is None and serves_wamp(w)]


def _code_in(value: Any, path: str, found: list[str]) -> None:
    if isinstance(value, dict):
        if value.get("type") in ("wsgi", "function"):   # a WSGI app, a function authenticator
            found.append(path)
            return
        for k, v in value.items():
            _code_in(v, f"{path}.{k}", found)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _code_in(v, f"{path}[{i}]", found)


def hosted_code(data: dict) -> list[str]:
    """JSON paths of what runs the user's Python code in the node's own process (a WSGI app,
    a component, a ``function`` authenticator or authorizer) in a config as written:
    ``controller.options.gc``'s "auto" freezes long-lived objects only when there is none
    (geonode.gcpolicy). Container and guest workers run in processes of their own."""
    found: list[str] = []
    for i, w in enumerate(_list(data.get("workers"))):
        w = _dict(w)
        if w.get("type") not in ("router", "websocket-testee"):
            continue
        if _list(w.get("components")):
            found.append(f"workers[{i}].components")
        for key in ("transports", "transport", "realms"):
            if key in w:
                _code_in(w[key], f"workers[{i}].{key}", found)
    return found


#: the transports an HTTP server serves (the others are stream servers of their own)
HTTP_TRANSPORTS = ("web", "websocket", "universal", "websocket-testee")


def require_web_transport(model: NodeModel, path: str) -> None:
    """``geonode.load()`` (gunicorn) serves an enabled worker's web transport: there must be one."""
    if not any(t.type in HTTP_TRANSPORTS
               for w in model.workers if not w.disabled for t in w.transports):
        raise ConfigError(f"{path}: the config has no web transport to serve")
