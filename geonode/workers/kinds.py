"""What a component class is, and the one wording of every error about loading one.

Runs where user code may be imported: in a worker child (``runner``) or in the probe child
``geonode check`` starts (``probe``), never in the node itself (a Twisted component's module
picks txaio's Twisted flavour on import, the node has picked asyncio).

Kinds: ``"twisted"`` (a subclass of ``autobahn.twisted.wamp.ApplicationSession``),
``"asyncio"`` (of ``autobahn.asyncio.wamp.ApplicationSession``), ``"plain"`` (geonode's own
component API: a class with ``on_join``), or ``None`` (none of those).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

TWISTED_EXTRA = "pip install 'geonode[twisted]'"


class LoadError(Exception):
    """A component that cannot be loaded; ``str()`` is the whole line, led by its JSON path."""


def kind_of(cls: type) -> str | None:
    for base in getattr(cls, "__mro__", ()):
        if base.__name__ == "ApplicationSession":
            if base.__module__ == "autobahn.twisted.wamp":
                return "twisted"
            if base.__module__ == "autobahn.asyncio.wamp":
                return "asyncio"
    if isinstance(cls, type) and callable(getattr(cls, "on_join", None)):
        return "plain"
    return None


def _missing_twisted(e: BaseException) -> bool:
    return isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] == "twisted"


def twisted_missing_message(json_path: str, what: str) -> str:
    return f"{json_path}: {what} needs Twisted, which is not installed ({TWISTED_EXTRA})"


def import_object(ref: str, json_path: str, what: str = "class") -> Any:
    """``package.module.Name`` → the object, or LoadError(``<json_path>: ...``)."""
    module_name, _, attr = ref.rpartition(".")
    if not module_name:
        raise LoadError(f"{json_path}: {ref!r} is not 'package.module.{what.capitalize()}'")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        if _missing_twisted(e):
            raise LoadError(twisted_missing_message(json_path, ref)) from e
        raise LoadError(f"{json_path}: cannot import {module_name!r}: "
                        f"{type(e).__name__}: {e}") from e
    if not hasattr(module, attr):
        raise LoadError(f"{json_path}: module {module_name!r} has no {what} {attr!r}")
    return getattr(module, attr)


def load_session_class(classname: str, json_path: str) -> tuple[type, str]:
    """(class, "twisted" | "asyncio") of a container/router component, or LoadError."""
    path = f"{json_path}.classname"
    if classname.startswith("crossbar.bridge.rest."):  # geonode.components.ALIASES
        raise LoadError(f"{path}: {classname} runs in a router worker's 'components' in geonode "
                        "(its HTTP bridge), not in a container")
    cls = import_object(classname, path)
    kind = kind_of(cls) if isinstance(cls, type) else None
    if kind not in ("twisted", "asyncio"):
        raise LoadError(f"{path}: {classname} is not an autobahn ApplicationSession (a "
                        "container runs subclasses of autobahn.twisted.wamp.ApplicationSession "
                        "or autobahn.asyncio.wamp.ApplicationSession)")
    return cls, kind


def load_callbacks(callbacks: dict, json_path: str) -> dict[str, Callable]:
    """A ``function`` component's callbacks (``join``, ``leave``, ``connect``,
    ``disconnect``) → functions, or LoadError."""
    out = {}
    for name, ref in (callbacks or {}).items():
        fn = import_object(ref, f"{json_path}.callbacks.{name}", "function")
        if not callable(fn):
            raise LoadError(f"{json_path}.callbacks.{name}: {ref} is not callable")
        out[name] = fn
    return out


def twisted_available() -> bool:
    try:
        import twisted.internet  # noqa: F401
    except ImportError:
        return False
    return True
