"""Running a session's event handlers and procedure endpoints.

They run on the session's own gevent ThreadPool, so blocking code never stalls the hub;
gevent-aware code opts in to run on the hub (in a greenlet) with ``on_hub=True`` or the
``@geonode.wamp.on_hub`` decorator. Handlers run in order, off the delivery greenlet (so a
handler may itself wait for a call result): the on-hub ones in one greenlet per session, the
others fed to the pool by one greenlet, which waits for free threads (back-pressure without a
greenlet per event). Everything in flight is bounded by ``MAX_INFLIGHT``.
"""

from __future__ import annotations

import functools
import logging
import types
from collections.abc import Callable, Iterable
from typing import Any, cast

import gevent
from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallResult

from geonode.handoff import Pump
from geonode.router.errors import RUNTIME_ERROR
from geonode.wamp.pending import Job, Want
from geonode.wamp.registry import hub

log = logging.getLogger("geonode.wamp")

#: handler/endpoint jobs waiting for the pool before new events are dropped (and calls refused)
MAX_INFLIGHT = 10_000


def on_hub(fn: Callable) -> Callable:
    """Mark a handler/endpoint as gevent-aware: it runs in a greenlet on the hub, not the pool.
    Works as a decorator (also on methods) and on bound methods."""
    try:
        fn._geonode_on_hub = True  # type: ignore[attr-defined]  # a mark read by Handlers
        return fn
    except AttributeError:  # a bound method: mark a thin wrapper instead
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        wrapper._geonode_on_hub = True  # type: ignore[attr-defined]
        return wrapper


def wants_hub(fn: Callable, on_hub: bool | None) -> bool:
    """Does ``fn`` run on the hub: ``on_hub`` when given, else whether it was marked."""
    if on_hub is not None:
        return on_hub
    return bool(getattr(fn, "_geonode_on_hub", False))


class Details(types.SimpleNamespace):
    """Event details (topic, publication, publisher, publisher_authid, publisher_authrole) or
    invocation details (procedure, caller, caller_authid, caller_authrole); the publisher and
    caller fields are set only when the router discloses them."""


class Handlers:
    """One session's handler and endpoint runs (hub thread only).

    ``answer(msg)`` takes an endpoint's YIELD or ERROR back to the session, which sends it to
    the router session the INVOCATION came from."""

    __slots__ = ("name", "inflight", "dropped", "running", "_answer", "_pool_size", "_pool",
                 "_hub_pump", "_pool_pump")

    def __init__(self, name: str, pool_size: int,
                 answer: Callable[[message.Message], None]) -> None:
        self.name = name
        self.inflight = 0
        self.dropped = 0
        self.running: set[int] = set()   # INVOCATION requests not yet answered
        self._answer = answer
        self._pool_size = pool_size
        self._pool: Any = None
        self._hub_pump: Pump | None = None
        self._pool_pump: Pump | None = None

    # -- events -------------------------------------------------------------------------------

    def event(self, wants: Iterable[Want], msg: message.Event) -> None:
        """Run every handler subscribed as ``wants`` for the EVENT ``msg``."""
        args, kwargs = msg.args or (), msg.kwargs or {}
        for want in wants:
            kw = kwargs   # per handler: another one on this subscription may want no details
            if want.details:
                kw = dict(kwargs, details=Details(
                    topic=msg.topic or want.uri, publication=msg.publication,
                    publisher=msg.publisher, publisher_authid=msg.publisher_authid,
                    publisher_authrole=msg.publisher_authrole))
            if self.inflight >= MAX_INFLIGHT:
                self.dropped += 1
                if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                    log.warning("%s: %d handlers queued: %d event(s) dropped so far (last on %s)",
                                self.name, self.inflight, self.dropped, want.uri)
                continue
            self.inflight += 1
            if want.on_hub:
                self._hub_jobs().put(Job(want, args, kw))
            else:
                self._pool_jobs().put(Job(want, args, kw))

    # -- invocations ------------------------------------------------------------------------

    def invoke(self, want: Want, msg: message.Invocation) -> bool:
        """Run the endpoint registered as ``want`` for ``msg``; its result goes to ``answer``.
        False (nothing runs) when the pool's queue is full: the caller refuses the call."""
        if not want.on_hub and self.inflight >= MAX_INFLIGHT:
            return False
        self.inflight += 1
        self.running.add(msg.request)
        kwargs = msg.kwargs or {}
        if want.details:
            kwargs = dict(kwargs, details=Details(
                procedure=msg.procedure or want.uri, caller=msg.caller,
                caller_authid=msg.caller_authid, caller_authrole=msg.caller_authrole))
        if want.on_hub:
            # gevent-aware endpoints may wait (HTTP, other calls): one greenlet each
            gevent.spawn(self._invoke_on_hub, want, msg, kwargs)
        else:
            self._pool_jobs().put(Job(want, msg.args or (), kwargs, msg))
        return True

    def cancel(self, request: int) -> bool:
        """The router interrupted INVOCATION ``request``: True if it was still running (its
        late result is then dropped)."""
        if request in self.running:
            self.running.discard(request)
            return True
        return False

    def forget(self) -> None:
        """The session left the router: results of what still runs go nowhere."""
        self.running.clear()

    # -- running ----------------------------------------------------------------------------

    def _hub_jobs(self) -> Pump:
        if self._hub_pump is None:
            self._hub_pump = Pump(self._run_hub_job, hub.loop, name=f"handlers:{self.name}")
        return self._hub_pump

    def _pool_jobs(self) -> Pump:
        if self._pool_pump is None:
            self._pool_pump = Pump(self._feed_pool, hub.loop, name=f"pool:{self.name}")
        return self._pool_pump

    def _run_hub_job(self, job: Job) -> None:
        fn = job.want.fn
        try:
            fn(*job.args, **job.kwargs)
        except Exception:
            log.exception("%s: event handler %r failed", self.name, fn)
        finally:
            self.inflight -= 1

    def _feed_pool(self, job: Job) -> None:
        fn = job.want.fn
        if job.invocation is None:
            result = self._get_pool().spawn(_logged_call, self.name, fn, job.args, job.kwargs)
            result.rawlink(self._job_done)
        else:
            result = self._get_pool().spawn(fn, *job.args, **job.kwargs)
            result.rawlink(functools.partial(self._invocation_done, job))

    def _job_done(self, _result: Any) -> None:
        self.inflight -= 1

    def _invoke_on_hub(self, want: Want, msg: message.Invocation, kwargs: dict) -> None:
        try:
            res = want.fn(*(msg.args or ()), **kwargs)
        except Exception as e:
            self._reply(want, msg, error=e)
        else:
            self._reply(want, msg, value=res)

    def _invocation_done(self, job: Job, result: Any) -> None:
        # a link callback: runs in the hub greenlet itself, so it only queues the reply
        invocation = cast(message.Invocation, job.invocation)  # an endpoint's job has one
        if result.successful():
            self._reply(job.want, invocation, value=result.value)
        else:
            self._reply(job.want, invocation, error=result.exception)

    def _reply(self, want: Want, msg: message.Invocation, value: Any = None,
               error: BaseException | None = None) -> None:
        self.inflight -= 1
        if isinstance(error, ApplicationError):
            reply: message.Message = message.Error(
                message.Invocation.MESSAGE_TYPE, msg.request, error.error,
                args=list(error.args) or None, kwargs=error.kwargs or None)
        elif error is not None:
            log.error("%s: procedure %s failed: %s: %s", self.name, want.uri,
                      type(error).__name__, error)
            reply = message.Error(message.Invocation.MESSAGE_TYPE, msg.request,
                                  RUNTIME_ERROR,
                                  args=[str(error) or type(error).__name__])
        elif isinstance(value, CallResult):
            reply = message.Yield(msg.request, args=list(value.results) or None,
                                  kwargs=value.kwresults or None)
        else:
            reply = message.Yield(msg.request, args=[value])
        if msg.request not in self.running:
            return   # interrupted (or from a router session that is gone)
        self.running.discard(msg.request)
        self._answer(reply)

    def _get_pool(self) -> Any:
        if self._pool is None:
            from gevent.threadpool import ThreadPool

            self._pool = ThreadPool(self._pool_size)
        return self._pool


def _logged_call(name: str, fn: Callable, args: Any, kwargs: dict) -> None:
    """An event handler on a pool thread: its failure is logged, never raised into gevent."""
    try:
        fn(*args, **kwargs)
    except Exception:
        log.exception("%s: event handler %r failed", name, fn)
