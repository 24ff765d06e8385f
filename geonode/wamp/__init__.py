"""Synchronous in-process WAMP sessions for WSGI apps, router components and the HTTP bridge.

A WSGI app configured with ``"wamp": {"realm": "realm1", "role": "backend"}`` finds its session
in every request's environ::

    wamp = request.environ["geonode.wamp"]
    wamp.publish("com.example.news", "hello", acknowledge=False)
    total = wamp.call("com.example.add", 2, 3, timeout=5)

and code outside a request (a Flask module at import time, a background thread) uses the same
shared session through ``geonode.wamp.session("realm1", "backend")``.

Threading model
---------------
The session itself lives on the gevent hub: all protocol state is touched only there. A worker
thread never calls into the hub: it builds the message, hands it over with
``loop.run_callback_threadsafe`` (see ``geonode.handoff.Pump``) and, when it needs an
answer, waits on a native lock. A greenlet on the hub waits cooperatively (gevent Event) instead.
The API is the same from both; the session picks the right wait.

Handlers (``subscribe``) and endpoints (``register``) run on the session's own gevent
ThreadPool, so blocking code never stalls the hub. gevent-aware code opts in to run on the hub
(in its own greenlet) with ``on_hub=True`` or the ``@geonode.wamp.on_hub`` decorator.

Errors
------
WAMP errors raise ``autobahn.wamp.exception.ApplicationError`` with ``.error`` set to the URI.
A call that gets no answer within ``timeout`` seconds (default ``DEFAULT_TIMEOUT``) raises
``ApplicationError("wamp.error.timeout")`` and the call is canceled at the router
(``killnowait``). ``publish`` and ``call`` before any
router runs in this process raise ``ApplicationError("wamp.error.no_router")``; ``subscribe``
and ``register`` made that early (import time) are remembered and made when the router starts
(failures are then logged). Subscriptions and registrations are re-made when the session
re-joins: on next use, or by itself (with back-off) when it has subscriptions or registrations
and the router dropped it other than at shutdown.

Modules (one job each; everything public is imported from here)
-------
``registry``  the hub, the routers of this process and the shared sessions' table
``waiters``   waiting for an answer: a gevent Event on the hub, a real lock in a thread
``pending``   the session's state as named records (Want, Request, WantChange, Reply, Job)
``handlers``  running event handlers and endpoints on the pool or the hub (on_hub, Details)
``client``    the session API: Session, Subscription, Registration
``glue``      how the node's parts reach a session: session(), environ_hook()
"""

import txaio

txaio.use_asyncio()  # autobahn needs a txaio flavour chosen before its modules load

from autobahn.wamp.exception import ApplicationError  # noqa: E402
from autobahn.wamp.types import CallResult  # noqa: E402

from geonode.router.errors import NO_ROUTER  # noqa: E402
from geonode.wamp.client import (  # noqa: E402
    DEFAULT_TIMEOUT,
    MAX_QUEUED,
    Registration,
    Session,
    Subscription,
)
from geonode.wamp.glue import environ_hook, session  # noqa: E402
from geonode.wamp.handlers import MAX_INFLIGHT, Details, on_hub  # noqa: E402
from geonode.wamp.registry import register_router, unregister_router  # noqa: E402
from geonode.wamp.registry import routers as _routers  # noqa: E402, F401  (tests use it)

__all__ = ["ApplicationError", "CallResult", "DEFAULT_TIMEOUT", "Details", "MAX_INFLIGHT",
           "MAX_QUEUED", "NO_ROUTER", "Registration", "Session", "Subscription", "environ_hook",
           "on_hub", "register_router", "session", "unregister_router"]
