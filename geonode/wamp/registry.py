"""The hub this process's in-process sessions live on, the routers they may join, and the
shared sessions of ``geonode.wamp.session()``.

Process-wide on purpose: a Flask module subscribing at import time, a thread the app starts and
every request must all reach the same router and the same session, with no object handed down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gevent

from geonode.handoff import real_allocate_lock, real_get_ident

if TYPE_CHECKING:
    from geonode.wamp.client import Session


class HubRef:
    """The hub (and its loop and OS thread) of the first ``register_router`` call."""

    hub: Any = None
    loop: Any = None
    thread: int | None = None


hub = HubRef()
#: the routers of this process, in registration order (the node registers each one it builds)
routers: list = []
#: ``session(realm, role, authid)`` -> the one Session for that key
shared: dict[tuple, Session] = {}
#: guards ``shared`` and each session's first pump (threads may race to make them)
lock = real_allocate_lock()


def in_hub_thread() -> bool:
    return hub.thread is not None and real_get_ident() == hub.thread


def register_router(router: Any) -> None:
    """Make ``router`` known to ``session()`` (called on the hub by the node's wiring:
    ``components.start``, ``environ_hook``, the bridge services). Sessions with subscriptions or
    registrations made before the router ran join now."""
    if hub.thread is None:
        hub.hub = gevent.get_hub()
        hub.loop = hub.hub.loop
        hub.thread = real_get_ident()
    if router is None or any(r is router for r in routers):
        return
    routers.append(router)
    for s in list(shared.values()):
        s.join_if_wanted()


def unregister_router(router: Any) -> None:
    """Forget ``router`` (the node closed it), so a later ``session()`` never joins a dead one."""
    routers[:] = [r for r in routers if r is not router]


def find_router(realm: str) -> Any:
    """The router serving ``realm`` (the first one when none or several say so), or None."""
    if not routers:
        return None
    if len(routers) == 1:
        return routers[0]
    for r in routers:
        realms = getattr(r, "realms", None)
        if realms is not None and realm in realms:
            return r
    return routers[0]
