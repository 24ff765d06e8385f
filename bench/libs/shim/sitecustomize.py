"""Swap a hand-written part of geonode for a library adapter, in every Python process.

``bench/libs`` puts this folder on ``PYTHONPATH`` with ``GEONODE_LIBS=wsproto`` (or ``h11``,
``urllib3``, ``send_file``, ``shareddata``; comma-separated). Python imports ``sitecustomize``
at start-up, so the pytest process and every ``python -m geonode`` node it spawns run with the
adapter in place: geonode's own tests and benchmarks then exercise the library, unchanged.

The patch is applied right after the target module is imported (an import hook), never by
importing geonode here: the CLI monkey-patches gevent first, and that order must not change.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

_WANTED = {w.strip() for w in os.environ.get("GEONODE_LIBS", "").split(",") if w.strip()}

# module that, once imported, gets patched -> (adapter module, function called with it)
_TARGETS = {
    "wsproto": ("geonode.websocket.handshake", "geonode_libs.ws_wsproto"),
    "h11": ("geonode.web.handler", "geonode_libs.http_h11"),
    "urllib3": ("geonode.bridge.httpclient", "geonode_libs.client_urllib3"),
    "urllib3-nopool": ("geonode.bridge.httpclient", "geonode_libs.client_urllib3"),
    "urllib3-proxy": ("geonode.web.services.reverseproxy", "geonode_libs.client_urllib3"),
    "send_file": ("geonode.web.services.static", "geonode_libs.static_werkzeug"),
    "shareddata": ("geonode.web.services.static", "geonode_libs.static_werkzeug"),
}


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    def __init__(self, hooks: dict[str, list[tuple[str, str]]]) -> None:
        self.hooks = hooks

    def find_spec(self, name, path, target=None):
        if name not in self.hooks:
            return None
        sys.meta_path.remove(self)   # find the real spec without us, then wrap its loader
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader, hooks = spec.loader, self.hooks[name]
        exec_module = loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            for adapter, variant in hooks:
                importlib.import_module(adapter).install(module, variant)

        loader.exec_module = exec_and_patch
        return spec


def _install() -> None:
    hooks: dict[str, list[tuple[str, str]]] = {}
    for variant in sorted(_WANTED):
        if variant not in _TARGETS:
            raise SystemExit(f"GEONODE_LIBS: unknown adapter {variant!r} "
                             f"(known: {', '.join(sorted(_TARGETS))})")
        module, adapter = _TARGETS[variant]
        hooks.setdefault(module, []).append((adapter, variant))
    if hooks:
        sys.meta_path.insert(0, _PatchAfterImport(hooks))


_install()
