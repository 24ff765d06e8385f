"""Synchronous in-process WAMP sessions for WSGI apps, router components and the HTTP bridge
(the implementation: ``geonode.wamp.client``)."""

from geonode.wamp.client import (
    DEFAULT_TIMEOUT,
    MAX_INFLIGHT,
    MAX_QUEUED,
    NO_ROUTER,
    ApplicationError,
    CallResult,
    Details,
    Registration,
    Session,
    Subscription,
    _routers,  # noqa: F401  (tests remove routers they registered)
    environ_hook,
    on_hub,
    register_router,
    session,
    unregister_router,
)

__all__ = ["ApplicationError", "CallResult", "DEFAULT_TIMEOUT", "Details", "MAX_INFLIGHT",
           "MAX_QUEUED", "NO_ROUTER", "Registration", "Session", "Subscription", "environ_hook",
           "on_hub", "register_router", "session", "unregister_router"]
