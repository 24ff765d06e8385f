"""The config's references to code: WSGI modules and objects, component classes, packages of
static files; and the TLS certificates of its endpoints (loaded, not only found).
``geonode start`` resolves them while it builds; ``geonode check`` resolves the same ones with
the same functions (``verify``), so both name a missing module with one line.

Resolving imports user code: that is what ``start`` does too, and the only way to know.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geonode.config.reader import ConfigError
from geonode.config.tls import client_context, server_context
from geonode.logs import origin

if TYPE_CHECKING:
    from geonode.config import Config
    from geonode.config.model import Component, Service, StaticService, WsgiService
    from geonode.config.services import WapService

#: Crossbar's bridge component classes -> geonode's
ALIASES = {
    "crossbar.bridge.rest.MessageForwarder": "geonode.bridge.forwarder.MessageForwarder",
    "crossbar.bridge.rest.subscriber.MessageForwarder":
        "geonode.bridge.forwarder.MessageForwarder",
    "crossbar.bridge.rest.RESTCallee": "geonode.bridge.restcallee.RESTCallee",
    "crossbar.bridge.rest.callee.RESTCallee": "geonode.bridge.restcallee.RESTCallee",
}


def wsgi_object(svc: WsgiService) -> Callable:
    """Import a wsgi path's ``module`` and return its attribute ``object`` (dotted)."""
    try:
        module = importlib.import_module(svc.module)
    except Exception as e:  # any import-time failure of user code is a config problem
        raise ConfigError([
            f"{svc.json_path}.module: cannot import WSGI module {svc.module!r}: "
            f"{type(e).__name__}: {e}{origin(e)}\n  sys.path = {sys.path!r}"
        ]) from e
    obj: Any = module
    for part in svc.object.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError([
                f"{svc.json_path}.object: module {svc.module!r} "
                f"({getattr(module, '__file__', '?')}) has no attribute {svc.object!r}"
            ]) from None
    if not callable(obj):
        raise ConfigError([f"{svc.json_path}.object: {svc.module}.{svc.object} is not callable"])
    return obj


def component_class(comp: Component) -> type:
    """Import a router component's ``classname`` (Crossbar's bridge names included)."""
    path, classname = comp.json_path, comp.classname
    target = ALIASES.get(classname, classname)
    module_name, _, attr = target.rpartition(".")
    if not module_name:
        raise ConfigError(f"{path}.classname: {classname!r} is not 'package.module.Class'")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise ConfigError(f"{path}.classname: cannot import {module_name!r}: "
                          f"{type(e).__name__}: {e}{origin(e)}") from e
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise ConfigError(f"{path}.classname: module {module_name!r} has no class {attr!r}")
    if not callable(getattr(cls, "on_join", None)):
        raise ConfigError(f"{path}.classname: {classname} has no on_join(session) method "
                          "(geonode components are plain classes, see geonode.components)")
    return cls


_AUTOBAHN = re.compile(rb"ApplicationSession|autobahn\.twisted|autobahn\.asyncio")
#: Source read to decide (a module whose first megabyte does not say so is not one of them).
MAX_SOURCE = 1 << 20


def is_autobahn_component(classname: str) -> bool:
    """Whether a router component is an autobahn ``ApplicationSession`` (run in a child by
    geonode.workers) rather than geonode's plain class (run in the node), decided without
    importing user code into the node: a class whose module's source names
    ``ApplicationSession`` (or imports autobahn's Twisted or asyncio flavour) is one; importing
    it here would pick txaio's flavour under geonode's feet. Decided on the python path
    ``start`` builds with (after ``apply_worker_options``)."""
    if classname.startswith("crossbar.bridge.rest.") or classname.startswith("geonode."):
        return False
    module = classname.rpartition(".")[0]
    if not module:
        return False
    try:
        spec = importlib.util.find_spec(module)
    except Exception:  # a parent package fails to import: component_class reports it
        return False
    origin = getattr(spec, "origin", None)
    if not origin or not origin.endswith(".py"):
        return False
    try:
        with open(origin, "rb") as f:
            return bool(_AUTOBAHN.search(f.read(MAX_SOURCE)))
    except OSError:
        return False


def component_error(comp: Component, e: ValueError) -> ConfigError:
    """A component constructor's complaint about its config (the bridge components say
    ``extra.<key>: ...``), as a config error with its JSON path."""
    msg = str(e)
    return ConfigError(f"{comp.json_path}.{msg}" if msg.startswith("extra")
                       else f"{comp.json_path}: {comp.classname}: {msg}")


def static_root(svc: StaticService, config_dir: Path) -> Path:
    """The folder a static path serves: its ``directory``, or a package's ``resource``."""
    if svc.directory is not None:
        root = Path(config_dir, svc.directory)
        if not root.is_dir():
            raise ConfigError(f"{svc.json_path}.directory: {str(root)!r} is not a directory")
        return root
    package, resource = str(svc.package), str(svc.resource)
    try:
        ref = importlib.resources.files(package).joinpath(resource)
    except (ImportError, TypeError) as e:
        raise ConfigError(f"{svc.json_path}.package: cannot import {package!r}: {e}") from None
    root = Path(str(ref))
    if not isinstance(ref, Path) and not root.is_dir():
        raise ConfigError(f"{svc.json_path}.package: {package!r} is not installed as plain files")
    if not root.is_dir():
        raise ConfigError(
            f"{svc.json_path}.resource: {resource!r} is not a folder in package {package!r}")
    return root


def prometheus(svc: Service) -> None:
    """The ``metrics`` service's exposition library (an extra: ``geonode[metrics]``)."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"{svc.json_path}.type: the metrics service needs prometheus_client "
                          f"(pip install 'geonode[metrics]'): {e}") from None


def wap_templates(svc: WapService, config_dir: Path) -> list[Any]:
    """A wap path's Jinja2 templates, one per route, compiled as start compiles them (a
    template that does not compile is refused by both)."""
    from geonode.config.services import templates_dir

    try:
        from jinja2 import Environment, FileSystemLoader, TemplateError
        from jinja2.sandbox import SandboxedEnvironment
    except ImportError as e:
        raise ConfigError(f"{svc.json_path}.type: the wap service needs Jinja2 "
                          f"(pip install jinja2): {e}") from None
    folder = templates_dir(svc, config_dir)
    env_class = SandboxedEnvironment if svc.sandbox else Environment
    env = env_class(loader=FileSystemLoader(str(folder)), autoescape=True)
    templates = []
    for i, route in enumerate(svc.routes):
        try:
            templates.append(env.get_template(route.render))
        except TemplateError as e:
            raise ConfigError(f"{svc.json_path}.routes[{i}].render: {e}") from None
    return templates


def _services(paths: dict[str, Service]) -> Iterable[Service]:
    from geonode.config.model import PathService

    for svc in paths.values():
        if isinstance(svc, PathService):
            yield from _services(svc.paths)
        else:
            yield svc


def apply_worker_options(cfg: Config) -> list[str]:
    """What ``start`` does to its process before it builds: the enabled workers'
    ``pythonpath`` first on ``sys.path``, their ``env.vars`` in the environment. The folders
    added (in order)."""
    from geonode.config.model import python_path

    paths = python_path(cfg.model, cfg.dir)
    for worker in cfg.model.workers:
        if not worker.disabled:
            os.environ.update(worker.env_vars)
    sys.path[:0] = [p for p in paths if p not in sys.path]
    return paths


def verify(cfg: Config) -> list[str]:
    """Resolve every reference to code of an enabled worker as ``start`` would (after
    ``apply_worker_options``); every failure, path-named. ``[]``: all of them resolve."""
    from geonode.config.model import StaticService, WsgiService
    from geonode.config.services import MetricsService, WapService, WsProxyService

    errors: list[str] = []

    def attempt(fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except ConfigError as e:
            errors.extend(e.errors)

    for worker in cfg.model.workers:
        if worker.disabled:
            continue
        for transport in worker.transports:
            if transport.endpoint.tls:
                attempt(server_context, transport.endpoint.tls, cfg.dir,
                        f"{transport.json_path}.endpoint")
            for svc in _services(transport.paths):
                if isinstance(svc, WsgiService):
                    attempt(wsgi_object, svc)
                elif isinstance(svc, StaticService):
                    attempt(static_root, svc, cfg.dir)
                elif isinstance(svc, WsProxyService) and svc.backend.tls is not None:
                    attempt(client_context, svc.backend.tls, cfg.dir,
                            f"{svc.json_path}.backend.endpoint")
                elif isinstance(svc, MetricsService):
                    attempt(prometheus, svc)
                elif isinstance(svc, WapService):
                    attempt(wap_templates, svc, cfg.dir)
        for comp in worker.components:
            # an autobahn component is imported in a child, by start and check alike
            # (geonode.workers.check)
            if not is_autobahn_component(comp.classname):
                attempt(component_class, comp)
    return errors


def unverified(cfg: Config) -> list[str]:
    """What ``check`` cannot verify without running the app's code: a component's constructor
    checks its ``extra`` only when the node starts it."""
    return [f"{comp.json_path}.extra: checked by {comp.classname}() when the node starts"
            for worker in cfg.model.workers if not worker.disabled
            for comp in worker.components if comp.extra is not None]
