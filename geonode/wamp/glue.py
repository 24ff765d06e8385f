"""How code in the process reaches a session: ``session()`` anywhere (import time, threads,
views), ``environ_hook`` for a ``wsgi`` path's ``"wamp"`` key. (Router components and the bridge
services make their own ``Session`` with ``router=``.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from geonode.wamp import registry
from geonode.wamp.client import Session


def session(realm: str, role: str, authid: str | None = None) -> Session:
    """The shared in-process session of this process for (realm, role, authid).

    Created lazily (it joins on first use), safe to call at import time and from any thread.
    """
    key = (realm, role, authid)
    s = registry.shared.get(key)
    if s is None:
        with registry.lock:
            s = registry.shared.get(key)
            if s is None:
                s = registry.shared[key] = Session(realm, role, authid)
    return s


def environ_hook(wamp_cfg: dict, ctx: Any) -> Callable[[dict], None]:
    """For a ``wsgi`` service's ``"wamp": {"realm", "role", "authid"?}``: returns
    ``fn(environ)`` that puts the shared session into ``environ["geonode.wamp"]``.
    The session is shared by all requests (nothing is created per request)."""
    if ctx is not None and getattr(ctx, "router", None) is not None:
        registry.register_router(ctx.router)
    s = session(wamp_cfg["realm"], wamp_cfg["role"], wamp_cfg.get("authid"))

    def hook(environ: dict) -> None:
        environ["geonode.wamp"] = s

    return hook
