"""The path services that are applications of their own (``wap``, ``archive``, ``upload``,
``websocket-reverseproxy``, ``status``, ``metrics``, ``health``, the bridge's ``publisher``,
``caller`` and ``webhook``): their typed configs with every default, the checks the schema
cannot make, and the files they need, checked for ``check`` and ``start`` alike.

``geonode.config.model`` builds these objects (its ``_service`` dispatches here through
``BUILDERS``); the service builders in ``geonode.web.services`` and ``geonode.bridge`` read
their fields and never a default of their own. Also the base :class:`Service` (every path
service's config) and the file checks of a WebSocket's cookie store.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import ipaddress
import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from geonode.config.reader import ConfigError

__all__ = [
    "ArchiveService", "BridgeConfig", "HealthService", "MetricsService", "Service",
    "StatusService", "UploadService", "WapRoute", "WapService", "WebhookConfig",
    "WsBackend", "WsProxyService",
]

#: seconds a wap route's call may take before the page is 504
DEFAULT_WAP_TIMEOUT = 30.0
#: Crossbar's upload default: the largest file an upload path accepts
DEFAULT_MAX_FILE_SIZE = 10 * 1024 * 1024
#: seconds to reach a websocket-reverseproxy's backend
DEFAULT_CONNECT_TIMEOUT = 10.0
#: seconds a bridge's call or acknowledged publish may take before the answer is 504
#: (geonode.wamp's default call timeout)
DEFAULT_BRIDGE_TIMEOUT = 30.0
#: seconds a signed bridge request's timestamp may be off (Crossbar's default)
DEFAULT_TIMESTAMP_DELTA = 300.0
#: the webhook's answers (Crossbar's)
DEFAULT_WEBHOOK_SUCCESS = "OK"
DEFAULT_WEBHOOK_ERROR = "NOT OK"

#: what start and check say of a status path in a worker without realms
STATUS_ROUTER_NEEDED = "{path}: a status path needs a router worker (realms)"


def _dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _list(x: Any) -> list:
    return x if isinstance(x, list) else []


def _str(x: Any) -> str | None:
    return x if isinstance(x, str) else None


@dataclass(slots=True)
class Service:
    """A path service. ``extra`` is the service's config as written (its own keys)."""

    type: str
    json_path: str
    extra: dict = field(default_factory=dict)


# -- wap -----------------------------------------------------------------------------------------

@dataclass(slots=True)
class WapRoute:
    path: str
    render: str
    method: str = "GET"
    #: the procedure whose result the page renders (None: an empty result)
    call: str | None = None


@dataclass(slots=True)
class WapService(Service):
    #: a folder relative to the config's, or None: ``package`` + ``resource``
    templates: str | None = None
    package: str | None = None
    resource: str | None = None
    routes: list[WapRoute] = field(default_factory=list)
    realm: str = ""
    authrole: str = ""
    authid: str | None = None
    sandbox: bool = True
    timeout: float = DEFAULT_WAP_TIMEOUT


def _wap(cfg: dict, spath: str, has_router: bool, errors: list[str]) -> Service:
    spec = cfg.get("templates")
    templates = _dict(spec)
    routes = [WapRoute(path=str(r.get("path", "")), render=str(r.get("render", "")),
                       method=str(r.get("method", "GET")), call=_str(r.get("call")))
              for r in map(_dict, _list(cfg.get("routes")))]
    w = _dict(cfg.get("wamp"))
    return WapService("wap", spath, cfg, templates=_str(spec),
                      package=_str(templates.get("package")),
                      resource=_str(templates.get("resource")), routes=routes,
                      realm=str(w.get("realm", "")), authrole=str(w.get("authrole", "")),
                      authid=_str(w.get("authid")), sandbox=cfg.get("sandbox", True) is not False,
                      timeout=float(cfg.get("timeout", DEFAULT_WAP_TIMEOUT)))


def templates_dir(svc: WapService, config_dir: Path) -> Path:
    """The templates folder of a ``wap`` path, or ConfigError naming the key."""
    json_path = svc.json_path
    if svc.templates is not None:
        folder = Path(config_dir, svc.templates)
        if not folder.is_dir():
            raise ConfigError(f"{json_path}.templates: folder {svc.templates!r} not found "
                              f"(looked for {folder.resolve()})")
        return folder
    package, resource = str(svc.package), str(svc.resource)
    try:
        folder = Path(str(importlib.resources.files(package).joinpath(resource)))
    except (ImportError, TypeError) as e:
        raise ConfigError(f"{json_path}.templates.package: cannot import {package!r}: {e}") \
            from None
    if not folder.is_dir():
        raise ConfigError(f"{json_path}.templates.resource: {resource!r} is not a folder in "
                          f"package {package!r}")
    return folder


def template_errors(svc: WapService, config_dir: Path) -> list[str]:
    """Problems ``check`` finds as start does: the folder, and each route's template in it."""
    try:
        folder = templates_dir(svc, config_dir)
    except ConfigError as e:
        return e.errors
    return [f"{svc.json_path}.routes[{i}].render: template {route.render!r} not found in "
            f"{str(folder)!r}"
            for i, route in enumerate(svc.routes) if not (folder / route.render).is_file()]


# -- archive -------------------------------------------------------------------------------------

@dataclass(slots=True)
class ArchiveService(Service):
    #: the ZIP file, relative to the config's folder
    archive: str = ""
    origin: str | None = None
    download: bool = False
    cache: bool = False
    default_object: str | None = None
    object_prefix: str = ""
    #: extension (".ext", lower case) -> Content-Type
    mime_types: dict[str, str] = field(default_factory=dict)
    #: SHA-256 digests (lower-case hex) the archive may have; none: any
    hashes: list[str] = field(default_factory=list)
    #: ``options.default_file``: the member answered for names the archive does not hold
    default_file: str | None = None


def mime_table(types: Any) -> dict[str, str]:
    """A ``mime_types`` object keyed by lower-case ``.ext`` (the key may omit its dot)."""
    return {("." + str(k).lstrip(".")).lower(): v for k, v in _dict(types).items()}


def _archive(cfg: dict, spath: str, has_router: bool, errors: list[str]) -> Service:
    return ArchiveService("archive", spath, cfg, archive=str(cfg.get("archive", "")),
                          origin=_str(cfg.get("origin")), download=bool(cfg.get("download")),
                          cache=bool(cfg.get("cache", False)),
                          default_object=_str(cfg.get("default_object")) or None,
                          object_prefix=_str(cfg.get("object_prefix")) or "",
                          mime_types=mime_table(cfg.get("mime_types")),
                          hashes=[h.lower() for h in _list(cfg.get("hashes"))
                                  if isinstance(h, str)],
                          default_file=_str(_dict(cfg.get("options")).get("default_file"))
                          or None)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def archive_problem(svc: ArchiveService, config_dir: Path) -> str | None:
    """What keeps the archive from being served (the check's and start's message), or None.
    A file that is there is read as start reads it (its hash, its ZIP directory); one still
    to be downloaded is checked by start once it has it."""
    json_path = svc.json_path
    path = Path(config_dir, svc.archive)
    if path.exists():
        if not path.is_file():
            return f"{json_path}.archive: {str(path)!r} exists but is not a file"
        return archive_file_problem(svc, path)
    if svc.origin is None:
        return f"{json_path}.archive: file {svc.archive!r} not found (looked for {path}) " \
               "and no 'origin' to download it from"
    if urlparse(svc.origin).scheme not in ("http", "https"):
        return f"{json_path}.origin: {svc.origin!r} is not an http(s) URL"
    if not svc.download:
        return f"{json_path}.archive: file {svc.archive!r} not found (looked for {path}); " \
               "set 'download': true to fetch it from 'origin'"
    return None


def archive_file_problem(svc: ArchiveService, path: Path) -> str | None:
    """An archive file on disk: its SHA-256 among ``hashes`` (when given), a ZIP directory."""
    try:
        if svc.hashes:
            digest = sha256(path)
            if digest not in svc.hashes:
                return (f"{svc.json_path}.hashes: archive {str(path)!r} (SHA-256 {digest}) "
                        "matches none of the configured hashes")
        with zipfile.ZipFile(path):
            pass
    except (OSError, zipfile.BadZipFile) as e:
        return (f"{svc.json_path}.archive: {str(path)!r} is not a readable ZIP archive: {e}")
    return None


# -- upload --------------------------------------------------------------------------------------

@dataclass(slots=True)
class UploadService(Service):
    realm: str = ""
    role: str = ""
    #: the in-process session's authid (the path's ``id``; None: geonode names it)
    authid: str | None = None
    directory: str = ""
    #: None: ``<system temp>/geonode-uploads``
    temp_directory: str | None = None
    #: the Resumable.js field names, by role (``file_name``, ``content``, ...)
    form_fields: dict[str, str] = field(default_factory=dict)
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    #: allowed extensions (".ext"); None: any
    file_types: list[str] | None = None
    #: mode of the stored files (``file_permissions``, octal as written); None: umask's
    file_permissions: int | None = None


def _upload(cfg: dict, spath: str, has_router: bool, errors: list[str]) -> Service:
    options = _dict(cfg.get("options"))
    perms = _str(options.get("file_permissions"))
    types = options.get("file_types")
    return UploadService("upload", spath, cfg, realm=str(cfg.get("realm", "")),
                         role=str(cfg.get("role", "")), authid=_str(cfg.get("id")) or None,
                         directory=str(cfg.get("directory", "")),
                         temp_directory=_str(cfg.get("temp_directory")) or None,
                         form_fields={str(k): str(v)
                                      for k, v in _dict(cfg.get("form_fields")).items()},
                         max_file_size=int(options.get("max_file_size",
                                                       DEFAULT_MAX_FILE_SIZE)),
                         file_types=list(types) if isinstance(types, list) else None,
                         file_permissions=_octal(perms))


def _octal(text: str | None) -> int | None:
    try:
        return int(text, 8) if text else None
    except ValueError:   # the schema's pattern names it
        return None


def temp_folder(svc: UploadService, config_dir: Path) -> Path:
    """Where an upload path keeps its pending uploads (made by the service at start)."""
    if svc.temp_directory:
        return Path(config_dir, svc.temp_directory).resolve()
    return Path(tempfile.gettempdir(), "geonode-uploads").resolve()


def folder_errors(svc: UploadService, config_dir: Path) -> list[str]:
    """``directory`` must exist; ``temp_directory`` is made when missing (it is scratch), so
    it must be a folder or a name its nearest existing parent folder can take."""
    if not Path(config_dir, svc.directory).is_dir():
        return [f"{svc.json_path}.directory: folder {svc.directory!r} not found "
                f"(looked for {Path(config_dir, svc.directory).resolve()})"]
    temp = temp_folder(svc, config_dir)
    where = f"{svc.json_path}.temp_directory: cannot create {str(temp)!r}"
    parent = temp
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return [f"{where}: {str(parent)!r} is not a folder"]
    if parent != temp and not os.access(parent, os.W_OK | os.X_OK):
        return [f"{where}: no permission to create folders in {str(parent)!r}"]
    return []


# -- websocket-reverseproxy ----------------------------------------------------------------------

@dataclass(slots=True)
class WsBackend:
    """Where a websocket-reverseproxy reaches its backend (``backend``)."""

    #: "tcp" or "unix"
    kind: str = "tcp"
    host: str = ""
    port: int = 0
    #: a unix endpoint's socket file
    path: str = ""
    timeout: float = DEFAULT_CONNECT_TIMEOUT
    #: ``backend.url``: its scheme (ws/wss), request target and Host header
    url: str = "ws://localhost/"
    #: the endpoint's ``tls`` as written (None: plain, unless the URL is wss://)
    tls: dict | None = None


@dataclass(slots=True)
class WsProxyService(Service):
    backend: WsBackend = field(default_factory=WsBackend)
    #: the client side's WebSocket options (geonode.websocket.WebSocketOptions)
    options: dict = field(default_factory=dict)


def _wsproxy(cfg: dict, spath: str, has_router: bool, errors: list[str]) -> Service:
    raw = _dict(cfg.get("backend"))
    endpoint = _dict(raw.get("endpoint"))
    url = raw.get("url") or "ws://localhost/"
    if not isinstance(url, str) or urlparse(url).scheme not in ("ws", "wss"):
        errors.append(f"{spath}.backend.url: {raw.get('url')!r} is not a ws:// or wss:// URL")
        url = "ws://localhost/"
    tls = endpoint.get("tls")
    backend = WsBackend(kind=str(endpoint.get("type", "tcp")), host=str(endpoint.get("host", "")),
                        port=int(endpoint.get("port", 0) or 0),
                        path=str(endpoint.get("path", "")),
                        timeout=float(endpoint.get("timeout", DEFAULT_CONNECT_TIMEOUT)),
                        url=url, tls=tls if isinstance(tls, dict) else None)
    return WsProxyService("websocket-reverseproxy", spath, cfg, backend=backend,
                          options=_dict(cfg.get("options")))


# -- status, metrics, health ---------------------------------------------------------------------

@dataclass(slots=True)
class StatusService(Service):
    realm: str = ""
    #: the role a viewer must get from ``auth`` (both or neither: a check of the model)
    role: str | None = None
    auth: dict | None = None


def _status(cfg: dict, spath: str, has_router: bool, errors: list[str]) -> Service:
    if not has_router:
        errors.append(STATUS_ROUTER_NEEDED.format(path=spath))
    role, auth = _str(cfg.get("role")), cfg.get("auth")
    auth = auth if isinstance(auth, dict) else None
    if (role is None) != (auth is None):
        errors.append(f"{spath}: 'role' and 'auth' go together (viewers authenticate with "
                      "'auth' and must get 'role')")
    return StatusService("status", spath, cfg, realm=str(cfg.get("realm", "")), role=role,
                         auth=auth)


def status_realm_errors(svc: StatusService, meta_off: set[str]) -> list[str]:
    """A status page reads its realm's meta API: the realm must have it on."""
    if svc.realm in meta_off:
        return [f"{svc.json_path}.realm: realm {svc.realm!r} has the meta API off "
                "(options.enable_meta_api); the status page reads it"]
    return []


@dataclass(slots=True)
class MetricsService(Service):
    """No keys of its own; it needs ``prometheus_client`` (geonode.config.imports checks)."""


@dataclass(slots=True)
class HealthService(Service):
    """No keys of its own."""


def _metrics(cfg: dict, spath: str, has_router: bool, errors: list[str]) -> Service:
    return MetricsService("metrics", spath, cfg)


def _health(cfg: dict, spath: str, has_router: bool, errors: list[str]) -> Service:
    return HealthService("health", spath, cfg)


# -- the HTTP bridge (publisher, caller, webhook) ------------------------------------------------

@dataclass(slots=True)
class BridgeConfig(Service):
    """A publisher or caller path (``options`` typed); webhook: :class:`WebhookConfig`."""

    realm: str = ""
    role: str = ""
    #: the in-process session's authid (the path's ``id``; None: geonode names it)
    authid: str | None = None
    #: signed requests: both, or neither
    key: str | None = None
    secret: str | None = None
    require_tls: bool = False
    require_ip: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    #: bytes of a request body (0: geonode.bridge.common's own bound)
    post_body_limit: int = 0
    timestamp_delta_limit: float = DEFAULT_TIMESTAMP_DELTA
    timeout: float = DEFAULT_BRIDGE_TIMEOUT


@dataclass(slots=True)
class WebhookConfig(BridgeConfig):
    topic: str = ""
    success_response: str = DEFAULT_WEBHOOK_SUCCESS
    error_response: str = DEFAULT_WEBHOOK_ERROR
    #: GitHub's HMAC secret (None: requests are not signed)
    github_secret: str | None = None


def _networks(value: Any, opath: str, errors: list[str]) -> list:
    out = []
    for i, net in enumerate(_list(value)):
        try:
            out.append(ipaddress.ip_network(net, strict=False))
        except (TypeError, ValueError) as e:
            errors.append(f"{opath}.require_ip[{i}]: {net!r} is not an IP network ({e})")
    return out


def _bridge_fields(cfg: dict, spath: str, errors: list[str]) -> dict[str, Any]:
    opts = _dict(cfg.get("options"))
    return {"realm": str(cfg.get("realm", "")), "role": str(cfg.get("role", "")),
            "authid": _str(cfg.get("id")) or None, "key": _str(opts.get("key")),
            "secret": _str(opts.get("secret")),
            "require_tls": bool(opts.get("require_tls", False)),
            "require_ip": _networks(opts.get("require_ip"), f"{spath}.options", errors),
            "post_body_limit": int(opts.get("post_body_limit", 0) or 0),
            "timestamp_delta_limit": float(opts.get("timestamp_delta_limit",
                                                    DEFAULT_TIMESTAMP_DELTA)),
            "timeout": float(opts.get("timeout", DEFAULT_BRIDGE_TIMEOUT))}


def _bridge(cfg: dict, spath: str, has_router: bool, errors: list[str]) -> Service:
    return BridgeConfig(str(cfg.get("type")), spath, cfg, **_bridge_fields(cfg, spath, errors))


def _webhook(cfg: dict, spath: str, has_router: bool, errors: list[str]) -> Service:
    opts = _dict(cfg.get("options"))
    return WebhookConfig("webhook", spath, cfg, **_bridge_fields(cfg, spath, errors),
                         topic=str(opts.get("topic", "")),
                         success_response=str(opts.get("success_response",
                                                       DEFAULT_WEBHOOK_SUCCESS)),
                         error_response=str(opts.get("error_response", DEFAULT_WEBHOOK_ERROR)),
                         github_secret=_str(opts.get("github_secret")) or None)


#: type -> builder (cfg, its JSON path, whether the worker has a router, errors)
BUILDERS: dict[str, Callable[[dict, str, bool, list[str]], Service]] = {
    "wap": _wap, "archive": _archive, "upload": _upload, "websocket-reverseproxy": _wsproxy,
    "status": _status, "metrics": _metrics, "health": _health,
    "publisher": _bridge, "caller": _bridge, "webhook": _webhook,
}


# -- files ---------------------------------------------------------------------------------------

def file_errors(svc: Service, config_dir: Path) -> list[str]:
    """The files a service needs, as its builder will look for them at start."""
    if isinstance(svc, WapService):
        return template_errors(svc, config_dir)
    if isinstance(svc, ArchiveService):
        problem = archive_problem(svc, config_dir)
        return [problem] if problem else []
    if isinstance(svc, UploadService):
        return folder_errors(svc, config_dir)
    return []


def cookie_file_problem(cookie: dict | None, config_dir: Path, json_path: str) -> str | None:
    """Why a WebSocket's ``cookie.store`` file cannot be used, or None. The store reads the
    file when it is there, and rewrites it through a ``.tmp`` beside it (so the folder must
    take new files): the same line for check and start (``json_path``: the service's)."""
    store = _dict(_dict(cookie).get("store"))
    filename = store.get("filename")
    if store.get("type") != "file" or not isinstance(filename, str):
        return None
    where = f"{json_path}.cookie.store.filename: cannot use the cookie file"
    path = (config_dir / filename).resolve()
    folder = path.parent
    if path.is_dir():
        return f"{where}: {str(path)!r} is a directory"
    if not folder.is_dir():
        return f"{where}: {str(folder)!r} is not a folder" if folder.exists() else \
            f"{where}: folder {str(folder)!r} does not exist"
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return f"{where}: no permission to read and write {str(path)!r}"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{where}: no permission to create files in {str(folder)!r}"
    return None
