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
``loop.run_callback_threadsafe`` (see ``geonode.transport.inprocess.Pump``) and, when it needs an
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
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import time
import types
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import txaio

txaio.use_asyncio()

from autobahn.wamp import message, role  # noqa: E402
from autobahn.wamp.exception import ApplicationError  # noqa: E402
from autobahn.wamp.types import CallOptions, CallResult  # noqa: E402

from geonode.transport.inprocess import (  # noqa: E402
    InProcessPeer,
    Pump,
    real_allocate_lock,
    real_get_ident,
    real_sleep,
)

__all__ = ["ApplicationError", "CallResult", "DEFAULT_TIMEOUT", "Details", "Session",
           "environ_hook", "on_hub", "register_router", "session"]

log = logging.getLogger("geonode.wamp")

#: seconds a ``call`` (and an acknowledged ``publish``, ``subscribe``, ``register``) waits by default
DEFAULT_TIMEOUT = 30.0
#: handler/endpoint jobs waiting for the pool before new events are dropped (and calls refused)
MAX_INFLIGHT = 10_000
#: messages from threads waiting for the hub before a publishing thread is made to wait
MAX_QUEUED = 10_000
NO_ROUTER = "wamp.error.no_router"

_IDLE, _JOINING, _JOINED = range(3)
_JOIN = object()
_LEAVE = object()


def on_hub(fn: Callable) -> Callable:
    """Mark a handler/endpoint as gevent-aware: it runs in a greenlet on the hub, not the pool.
    Works as a decorator (also on methods) and on bound methods."""
    try:
        fn._geonode_on_hub = True
        return fn
    except AttributeError:  # a bound method: mark a thin wrapper instead
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        wrapper._geonode_on_hub = True
        return wrapper


# -- the hub and the routers of this process ------------------------------------------------

class _HubRef:
    hub: Any = None
    loop: Any = None
    thread: int | None = None


_hubref = _HubRef()
_routers: list = []
_sessions: dict[tuple, Session] = {}
_sessions_lock = real_allocate_lock()


def _in_hub_thread() -> bool:
    return _hubref.thread is not None and real_get_ident() == _hubref.thread


def register_router(router: Any) -> None:
    """Make ``router`` known to ``session()`` (called on the hub by the node's wiring:
    ``components.start``, ``environ_hook``, the bridge services). Sessions with subscriptions or
    registrations made before the router ran join now."""
    if _hubref.thread is None:
        _hubref.hub = gevent.get_hub()
        _hubref.loop = _hubref.hub.loop
        _hubref.thread = real_get_ident()
    if router is None or any(r is router for r in _routers):
        return
    _routers.append(router)
    for s in list(_sessions.values()):
        if s._wanted and s._state == _IDLE:
            s._kick()


def unregister_router(router: Any) -> None:
    """Forget ``router`` (the node closed it), so a later ``session()`` never joins a dead one."""
    _routers[:] = [r for r in _routers if r is not router]


def _find_router(realm: str) -> Any:
    if not _routers:
        return None
    if len(_routers) == 1:
        return _routers[0]
    for r in _routers:
        realms = getattr(r, "realms", None)
        if realms is not None and realm in realms:
            return r
    return _routers[0]


def session(realm: str, role: str, authid: str | None = None) -> Session:
    """The shared in-process session of this process for (realm, role, authid).

    Created lazily (it joins on first use), safe to call at import time and from any thread.
    """
    key = (realm, role, authid)
    s = _sessions.get(key)
    if s is None:
        with _sessions_lock:
            s = _sessions.get(key)
            if s is None:
                s = _sessions[key] = Session(realm, role, authid)
    return s


def environ_hook(wamp_cfg: dict, ctx: Any) -> Callable[[dict], None]:
    """For a ``wsgi`` service's ``"wamp": {"realm", "role", "authid"?}``: returns
    ``fn(environ)`` that puts the shared session into ``environ["geonode.wamp"]``.
    The session is shared by all requests (nothing is created per request)."""
    if ctx is not None and getattr(ctx, "router", None) is not None:
        register_router(ctx.router)
    s = session(wamp_cfg["realm"], wamp_cfg["role"], wamp_cfg.get("authid"))

    def hook(environ: dict) -> None:
        environ["geonode.wamp"] = s

    return hook


# -- waiting for an answer -------------------------------------------------------------------

class _Waiter:
    """One answer, awaited either by a greenlet on the hub or by a native thread."""

    __slots__ = ("_event", "_lock", "value", "error")

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        if _in_hub_thread():
            self._event: gevent.event.Event | None = gevent.event.Event()
            self._lock = None
        else:
            self._event = None
            self._lock = real_allocate_lock()
            self._lock.acquire()

    def resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        """Hub thread only."""
        self.value, self.error = value, error
        if self._event is not None:
            self._event.set()
        else:
            self._lock.release()

    def wait(self, timeout: float | None) -> bool:
        if self._event is not None:
            return self._event.wait(timeout)
        return self._lock.acquire(timeout=-1 if timeout is None else timeout)


class _ProgressWaiter(_Waiter):
    """The answer to a call with ``on_progress``: progressive results are handed to the waiting
    thread/greenlet, which runs ``on_progress`` itself, in order, before the final result."""

    __slots__ = ("on_progress", "progress", "done")

    def __init__(self, on_progress: Callable) -> None:
        super().__init__()
        self.on_progress = on_progress
        self.progress: collections.deque = collections.deque()
        self.done = False

    def resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        self.done = True
        self._signal(value, error)

    def progressed(self, args: list, kwargs: dict) -> None:
        """Hub thread only."""
        self.progress.append((args, kwargs))
        self._signal(self.value, self.error)

    def _signal(self, value: Any, error: BaseException | None) -> None:
        # The lock is a binary semaphore here: released = "something new"; a second release
        # before the waiter took the first is the same news.
        try:
            super().resolve(value, error)
        except RuntimeError:
            pass

    def wait(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            woke = super().wait(left)
            if self._event is not None:
                # before anything that may switch (on_progress can): a later set() is kept
                self._event.clear()
            done = self.done   # read before draining: the hub queues every progress first
            while self.progress:
                args, kwargs = self.progress.popleft()
                try:
                    self.on_progress(*args, **kwargs)
                except Exception:
                    log.exception("on_progress %r failed", self.on_progress)
            if done:
                return True
            if not woke:
                return False


class Subscription:
    def __init__(self, session: Session, want: _Want) -> None:
        self._session, self._want = session, want

    @property
    def id(self) -> int | None:
        return self._want.wamp_id

    @property
    def active(self) -> bool:
        return self._want in self._session._wanted

    def unsubscribe(self, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self._session._drop_want(self._want, timeout)


class Registration(Subscription):
    def unregister(self, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self._session._drop_want(self._want, timeout)


class _Want:
    """A subscription or registration the session keeps alive across re-joins."""

    __slots__ = ("kind", "uri", "fn", "on_hub", "match", "invoke", "wamp_id", "details")

    def __init__(self, kind: str, uri: str, fn: Callable, on_hub: bool,
                 match: str | None, invoke: str | None, details: bool = False) -> None:
        self.kind, self.uri, self.fn, self.on_hub = kind, uri, fn, on_hub
        self.match, self.invoke, self.details = match, invoke, details
        self.wamp_id: int | None = None

    def message(self, request: int) -> message.Message:
        if self.kind == "subscribe":
            return message.Subscribe(request, self.uri, match=self.match)
        return message.Register(request, self.uri, match=self.match, invoke=self.invoke)


def _roles() -> dict:
    # Only what this session does: it never asks to be disclosed (disclose_me; the router's
    # role config decides that), so no publisher/caller identification as publisher/caller.
    return {
        "publisher": role.RolePublisherFeatures(publisher_exclusion=True,
                                                subscriber_blackwhite_listing=True),
        "subscriber": role.RoleSubscriberFeatures(pattern_based_subscription=True,
                                                  publisher_identification=True),
        "caller": role.RoleCallerFeatures(call_canceling=True, progressive_call_results=True),
        "callee": role.RoleCalleeFeatures(pattern_based_registration=True,
                                          shared_registration=True, call_canceling=True,
                                          caller_identification=True),
    }


def _error(msg: message.Error) -> ApplicationError:
    return ApplicationError(msg.error, *(msg.args or ()), **(msg.kwargs or {}))


def _result_value(args: list | None, kwargs: dict | None) -> Any:
    # autobahn's convention: one positional result is returned as is.
    if kwargs or (args and len(args) > 1):
        return CallResult(*(args or ()), **(kwargs or {}))
    return args[0] if args else None


class Session:
    """A WAMP client session inside the node, joined to the router through an in-process peer.

    Thread-safe: every public method may be called from any thread or greenlet.
    """

    def __init__(self, realm: str, role: str, authid: str | None = None, *, router: Any = None,
                 pool_size: int = 10, name: str | None = None) -> None:
        self.realm = realm
        self.authrole = role
        self.authid = authid or f"geonode-{role}"
        self.name = name or f"{realm}/{self.authid}"
        self.session_id: int | None = None
        self.welcome: message.Welcome | None = None
        #: callables ``fn(session)`` / ``fn(session, reason)`` run on the hub at join / leave
        self.on_join: list[Callable] = []
        self.on_leave: list[Callable] = []
        self._router = router
        self._pool_size = pool_size
        self._pool: Any = None
        self._state = _IDLE
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, Any, Any]] = {}
        self._subs: dict[int, list[_Want]] = {}
        self._regs: dict[int, _Want] = {}
        self._wanted: list[_Want] = []
        self._backlog: list = []
        self._pending_wants: list[tuple[_Want, _Waiter | None]] = []
        self._rejoins = 0
        self._dropped = 0
        self._hub_pump: Pump | None = None
        self._pool_pump: Pump | None = None
        self._inflight = 0
        self._running: set[int] = set()   # INVOCATION requests not yet answered
        self._rs: Any = None
        self._peer: InProcessPeer | None = None
        self._out: Pump | None = None
        self._leaving = False

    def __repr__(self) -> str:
        return f"<geonode.wamp.Session {self.name} role={self.authrole} id={self.session_id}>"

    # -- public API ----------------------------------------------------------------------------

    @property
    def joined(self) -> bool:
        return self._state == _JOINED

    def publish(self, topic: str, *args: Any, acknowledge: bool = False, options: Any = None,
                **kwargs: Any) -> int | None:
        """Publish an event; with ``acknowledge=True`` wait for the router and return the
        publication id (errors raise ApplicationError). ``options`` may be an autobahn
        ``PublishOptions`` or a dict of PUBLISH options (``exclude_me``, ``eligible``, …);
        options of the wrong type raise ValueError.
        Unlike autobahn, ``exclude_me`` defaults to False: the session is shared, so handlers
        subscribed on it elsewhere in the process receive the event too."""
        return self.publish_with(topic, list(args) if args else None, kwargs or None,
                                 options=options, acknowledge=acknowledge)

    def publish_with(self, topic: str, args: list | None = None, kwargs: dict | None = None,
                     options: Any = None, acknowledge: bool = False,
                     timeout: float | None = DEFAULT_TIMEOUT) -> int | None:
        """``publish`` with the payload given as values (no clash with option names)."""
        opts = _publish_options(options)
        acknowledge = bool(opts.pop("acknowledge", False) or acknowledge)
        # One session is shared by unrelated parts of a process (a view publishes, a module
        # subscribed at import time): they should see each other's events.
        opts.setdefault("exclude_me", False)
        req = next(self._ids)
        try:
            msg = message.Publish(req, topic, args=args or None, kwargs=kwargs or None,
                                  acknowledge=acknowledge or None, **opts)
        except AssertionError:  # autobahn checks the option types with assert
            raise ValueError(f"invalid publication to {topic!r}: options {opts}") from None
        if not acknowledge:
            self._submit(msg)
            return None
        return self._request(req, "publish", msg, timeout, topic)

    def call(self, procedure: str, *args: Any, timeout: float | None = DEFAULT_TIMEOUT,
             on_progress: Callable | None = None, **kwargs: Any) -> Any:
        """Call a procedure and return its result (one value, or ``CallResult`` when it returns
        several values or keyword results). WAMP errors raise ApplicationError; no answer
        within ``timeout`` seconds raises ApplicationError("wamp.error.timeout").
        ``on_progress(*args, **kwargs)`` receives progressive results, in the calling thread
        or greenlet, before ``call`` returns (``timeout`` bounds the whole call)."""
        opts = kwargs.get("options")
        if isinstance(opts, CallOptions):  # autobahn style: options=CallOptions(timeout=...)
            del kwargs["options"]
            if opts.timeout:
                timeout = opts.timeout
            on_progress = on_progress or opts.on_progress
        res_args, res_kwargs = self.call_with(procedure, list(args) if args else None,
                                              kwargs or None, timeout=timeout,
                                              on_progress=on_progress)
        return _result_value(res_args, res_kwargs)

    def call_with(self, procedure: str, args: list | None = None, kwargs: dict | None = None,
                  timeout: float | None = DEFAULT_TIMEOUT,
                  on_progress: Callable | None = None) -> tuple[list, dict]:
        """``call`` returning the raw result ``(args, kwargs)``."""
        req = next(self._ids)
        msg = message.Call(req, procedure, args=args or None, kwargs=kwargs or None,
                           receive_progress=True if on_progress is not None else None)
        waiter = _Waiter() if on_progress is None else _ProgressWaiter(on_progress)
        return self._request(req, "call", msg, timeout, procedure, waiter)

    def subscribe(self, topic: str, handler: Callable, *, match: str | None = None,
                  on_hub: bool | None = None, details: bool = False,
                  timeout: float | None = DEFAULT_TIMEOUT) -> Subscription:
        """``handler(*args, **kwargs)`` for every event on ``topic`` (runs on the pool unless
        ``on_hub``); with ``details=True`` also ``details=Details(topic, publication,
        publisher, publisher_authid, publisher_authrole)``. Before the router runs (import
        time) it is remembered and made later."""
        if callable(topic) and isinstance(handler, str):  # autobahn's order: (handler, topic)
            topic, handler = handler, topic
        want = _Want("subscribe", topic, handler, _wants_hub(handler, on_hub), match, None,
                     details)
        self._add_want(want, timeout)
        return Subscription(self, want)

    def register(self, procedure: str, endpoint: Callable, *, match: str | None = None,
                 invoke: str | None = None, on_hub: bool | None = None, details: bool = False,
                 timeout: float | None = DEFAULT_TIMEOUT) -> Registration:
        """Register ``endpoint(*args, **kwargs)`` (runs on the pool unless ``on_hub``); with
        ``details=True`` also ``details=Details(procedure, caller, caller_authid,
        caller_authrole)``. Raise ``ApplicationError`` in it to answer with a WAMP error URI."""
        if callable(procedure) and isinstance(endpoint, str):  # autobahn's order
            procedure, endpoint = endpoint, procedure
        want = _Want("register", procedure, endpoint, _wants_hub(endpoint, on_hub), match,
                     invoke, details)
        self._add_want(want, timeout)
        return Registration(self, want)

    def leave(self) -> None:
        """Say GOODBYE and forget subscriptions and registrations (the session re-joins if
        used again)."""
        if _hubref.loop is None:
            return
        self._submit(_LEAVE)

    # -- hand-over to the hub -------------------------------------------------------------------

    def _submit(self, msg: Any) -> None:
        out = self._out
        if out is None:
            if _hubref.loop is None:
                raise ApplicationError(NO_ROUTER, "no WAMP router runs in this process yet")
            with _sessions_lock:  # two threads' first use must not make two pumps
                if self._out is None:
                    self._out = Pump(self._outgoing, _hubref.loop, name=f"wamp:{self.name}")
                out = self._out
        if _in_hub_thread():
            out.put(msg)
            return
        if len(out) >= MAX_QUEUED:
            self._wait_for_room(out)
        out.put_threadsafe(msg)

    def _wait_for_room(self, out: Pump) -> None:
        # Back-pressure for threads that publish faster than the router takes it: wait
        # (this thread only, never the hub) rather than queue without bound.
        deadline = time.monotonic() + DEFAULT_TIMEOUT
        while len(out) >= MAX_QUEUED:
            if time.monotonic() > deadline:
                raise ApplicationError("wamp.error.overloaded",
                                       f"{len(out)} messages to the router not yet sent")
            real_sleep(0.001)

    def _kick(self) -> None:
        self._submit(_JOIN)

    def _request(self, req: int, kind: str, msg: Any, timeout: float | None, uri: str,
                 waiter: _Waiter | None = None) -> Any:
        waiter = waiter or _Waiter()
        self._pending[req] = (kind, waiter, None)
        try:
            self._submit(msg)
        except BaseException:   # no router yet, or overloaded: nothing will answer
            self._pending.pop(req, None)
            raise
        if not waiter.wait(timeout):
            if self._pending.pop(req, None) is not None:
                if kind == "call":   # geonode's router always supports call canceling
                    self._submit(message.Cancel(req, mode="killnowait"))
                raise ApplicationError(ApplicationError.TIMEOUT,
                                       f"no answer to {kind} '{uri}' within {timeout} s")
            waiter.wait(None)  # answered while timing out: take the answer
        if waiter.error is not None:
            raise waiter.error
        return waiter.value

    def _add_want(self, want: _Want, timeout: float | None) -> None:
        if _hubref.loop is None:
            self._wanted.append(want)  # import time: made when the router starts
            return
        waiter = _Waiter()
        self._submit(("want", want, waiter))
        if not waiter.wait(timeout):
            self._submit(("unwant", want, _Waiter()))  # nobody waits for this one
            raise ApplicationError(ApplicationError.TIMEOUT,
                                   f"no answer to {want.kind} '{want.uri}' within {timeout} s")
        if waiter.error is not None:
            raise waiter.error

    def _drop_want(self, want: _Want, timeout: float | None) -> None:
        if _hubref.loop is None:
            if want in self._wanted:
                self._wanted.remove(want)
            return
        waiter = _Waiter()
        self._submit(("unwant", want, waiter))
        waiter.wait(timeout)
        if waiter.error is not None:
            raise waiter.error

    # -- on the hub: outgoing ---------------------------------------------------------------------

    def _outgoing(self, item: Any) -> None:
        """Runs in the session's pump greenlet: every message to the router passes here."""
        if item is _JOIN:
            if self._state == _IDLE:
                self._join()
            return
        if item is _LEAVE:
            self._wanted.clear()
            self._pending_wants.clear()
            if self._state == _JOINED:
                self._leaving = True
                self._rs.receive(message.Goodbye())
            return
        if isinstance(item, tuple):
            self._want_op(*item)
            return
        if self._state == _JOINED:
            self._rs.receive(item)
            return
        self._backlog.append(item)
        if self._state == _IDLE:
            self._join()

    def _want_op(self, op: str, want: Any, waiter: Any) -> None:
        if op == "reply":
            # answer to an invocation of the router session it came from, never a later one
            if self._state == _JOINED and self._rs is waiter:
                self._rs.receive(want)
            return
        if op == "want":
            if self._state != _JOINED:
                # made together with the other wanted ones once WELCOME arrives
                self._wanted.append(want)
                self._pending_wants.append((want, waiter))
                if self._state == _IDLE:
                    self._join()
                return
            self._wanted.append(want)
            self._send_want(want, waiter)
        else:
            if want in self._wanted:
                self._wanted.remove(want)
            self._pending_wants = [(w, wt) for w, wt in self._pending_wants if w is not want]
            if want.wamp_id is None or self._state != _JOINED:
                waiter.resolve()
                return
            req = next(self._ids)
            wid, want.wamp_id = want.wamp_id, None
            if want.kind == "subscribe":
                lst = self._subs.get(wid, [])
                if want in lst:
                    lst.remove(want)
                if lst:  # other handlers still use this subscription
                    waiter.resolve()
                    return
                self._subs.pop(wid, None)
                msg = message.Unsubscribe(req, wid)
            else:
                self._regs.pop(wid, None)
                msg = message.Unregister(req, wid)
            self._pending[req] = ("unwant", waiter, want)
            self._rs.receive(msg)

    def _send_want(self, want: _Want, waiter: _Waiter | None) -> None:
        req = next(self._ids)
        self._pending[req] = (want.kind, waiter, want)
        self._rs.receive(want.message(req))

    def _join(self) -> None:
        router = self._router or _find_router(self.realm)
        if router is None:
            self._fail_all(ApplicationError(NO_ROUTER, "no WAMP router runs in this process"))
            return
        self._state = _JOINING
        peer: InProcessPeer | None = None

        def closed() -> None:
            # only the current peer's end counts (an old one may close after a re-join)
            if peer is self._peer:
                self._peer_closed()

        peer = self._peer = InProcessPeer(self._incoming, closed, _hubref.loop, name=self.name)
        try:
            self._rs = router.attach(self._peer, auth={"authid": self.authid,
                                                       "authrole": self.authrole})
            self._rs.receive(message.Hello(self.realm, _roles(), authid=self.authid,
                                           authrole=self.authrole))
        except Exception as e:
            log.exception("%s: cannot join the router", self.name)
            self._state = _IDLE
            self._fail_all(ApplicationError("wamp.error.runtime_error", str(e)))

    # -- on the hub: incoming ---------------------------------------------------------------------

    def _incoming(self, msg: Any) -> None:
        """Runs in the peer's pump greenlet: every message from the router."""
        t = type(msg)
        if t is message.Event:
            self._on_event(msg)
        elif t is message.Result:
            self._on_result(msg)
        elif t is message.Invocation:
            self._on_invocation(msg)
        elif t is message.Published:
            self._answer(msg.request, msg.publication)
        elif t is message.Error:
            self._on_error(msg)
        elif t is message.Subscribed:
            self._on_made(msg.request, msg.subscription)
        elif t is message.Registered:
            self._on_made(msg.request, msg.registration)
        elif t in (message.Unsubscribed, message.Unregistered):
            self._answer(msg.request, None)
        elif t is message.Interrupt:
            # answered at once; the endpoint's late result is dropped by _reply
            if msg.request in self._running:
                self._running.discard(msg.request)
                self._rs.receive(message.Error(message.Invocation.MESSAGE_TYPE, msg.request,
                                               ApplicationError.CANCELED))
        elif t is message.Welcome:
            self._on_welcome(msg)
        elif t is message.Abort:
            log.warning("%s: the router refused the session: %s %s", self.name, msg.reason,
                        msg.message or "")
            self._state = _IDLE
            self._detach()
            self._fail_all(ApplicationError(msg.reason, msg.message or ""))
            self._schedule_rejoin(msg.reason)
        elif t is message.Goodbye:
            if not self._leaving:
                self._rs.receive(message.Goodbye(reason=message.Goodbye.DEFAULT_REASON))
            self._leaving = False
            self._left(msg.reason)
        else:
            log.debug("%s: ignored %r", self.name, msg)

    def _on_welcome(self, msg: message.Welcome) -> None:
        self.session_id = msg.session
        self.welcome = msg
        self._state = _JOINED
        self._rejoins = 0
        for want in self._wanted:
            want.wamp_id = None
        self._subs.clear()
        self._regs.clear()
        waiters = {id(w): wt for w, wt in self._pending_wants}
        self._pending_wants.clear()
        for want in list(self._wanted):
            self._send_want(want, waiters.get(id(want)))
        backlog, self._backlog = self._backlog, []
        if backlog:
            self._out.put_front(backlog)
        for fn in list(self.on_join):
            gevent.spawn(_guard, fn, self)

    def _answer(self, req: int, value: Any) -> None:
        p = self._pending.pop(req, None)
        if p is not None and p[1] is not None:
            p[1].resolve(value)

    def _on_made(self, req: int, wamp_id: int) -> None:
        p = self._pending.pop(req, None)
        if p is None:
            return
        kind, waiter, want = p
        if want not in self._wanted:  # dropped meanwhile
            self._rs.receive(message.Unsubscribe(next(self._ids), wamp_id) if kind == "subscribe"
                             else message.Unregister(next(self._ids), wamp_id))
        else:
            want.wamp_id = wamp_id
            if kind == "subscribe":
                self._subs.setdefault(wamp_id, []).append(want)
            else:
                self._regs[wamp_id] = want
        if waiter is not None:
            waiter.resolve(wamp_id)

    def _on_error(self, msg: message.Error) -> None:
        p = self._pending.pop(msg.request, None)
        if p is None:
            return
        kind, waiter, want = p
        err = _error(msg)
        if want is not None and kind in ("subscribe", "register") and want in self._wanted:
            self._wanted.remove(want)
        if waiter is not None:
            waiter.resolve(error=err)
        else:
            log.error("%s: %s '%s' failed: %s", self.name, kind, want.uri if want else "?", err)

    def _on_result(self, msg: message.Result) -> None:
        if msg.progress:
            p = self._pending.get(msg.request)
            if p is not None and isinstance(p[1], _ProgressWaiter):
                p[1].progressed(list(msg.args or ()), dict(msg.kwargs or {}))
            return
        p = self._pending.pop(msg.request, None)
        if p is not None:
            p[1].resolve((list(msg.args or ()), dict(msg.kwargs or {})))

    def _on_event(self, msg: message.Event) -> None:
        args, kwargs = msg.args or (), msg.kwargs or {}
        for want in self._subs.get(msg.subscription, ()):
            kw = kwargs   # per handler: another one on this subscription may want no details
            if want.details:
                kw = dict(kwargs, details=Details(
                    topic=msg.topic or want.uri, publication=msg.publication,
                    publisher=msg.publisher, publisher_authid=msg.publisher_authid,
                    publisher_authrole=msg.publisher_authrole))
            if self._inflight >= MAX_INFLIGHT:
                self._dropped += 1
                if self._dropped in (1, 10, 100) or self._dropped % 1000 == 0:
                    log.warning("%s: %d handlers queued: %d event(s) dropped so far (last on %s)",
                                self.name, self._inflight, self._dropped, want.uri)
                continue
            self._inflight += 1
            # Handlers run in order, off the delivery greenlet (so a handler may itself wait
            # for a call result): gevent-aware ones in one greenlet per session, the others
            # fed to the pool by one greenlet (which waits for free threads: back-pressure
            # without a greenlet per event).
            if want.on_hub:
                self._hub_jobs().put((want.fn, args, kw))
            else:
                self._pool_jobs().put((want.fn, args, kw, None))

    def _hub_jobs(self) -> Pump:
        if self._hub_pump is None:
            self._hub_pump = Pump(self._run_hub_job, _hubref.loop, name=f"handlers:{self.name}")
        return self._hub_pump

    def _pool_jobs(self) -> Pump:
        if self._pool_pump is None:
            self._pool_pump = Pump(self._feed_pool, _hubref.loop, name=f"pool:{self.name}")
        return self._pool_pump

    def _run_hub_job(self, job: tuple) -> None:
        fn, args, kwargs = job
        try:
            fn(*args, **kwargs)
        except Exception:
            log.exception("%s: event handler %r failed", self.name, fn)
        finally:
            self._inflight -= 1

    def _feed_pool(self, job: tuple) -> None:
        fn, args, kwargs, invocation = job
        if invocation is None:
            result = self._get_pool().spawn(_logged_call, self.name, fn, args, kwargs)
            result.rawlink(self._job_done)
        else:
            result = self._get_pool().spawn(fn, *args, **kwargs)
            result.rawlink(functools.partial(self._invocation_done, invocation))

    def _job_done(self, _result: Any) -> None:
        self._inflight -= 1

    def _on_invocation(self, msg: message.Invocation) -> None:
        want = self._regs.get(msg.registration)
        if want is None:
            self._rs.receive(message.Error(message.Invocation.MESSAGE_TYPE, msg.request,
                                           "wamp.error.no_such_registration"))
            return
        if not want.on_hub and self._inflight >= MAX_INFLIGHT:
            self._rs.receive(message.Error(message.Invocation.MESSAGE_TYPE, msg.request,
                                           "wamp.error.runtime_error",
                                           args=["callee overloaded"]))
            return
        self._inflight += 1
        self._running.add(msg.request)
        kwargs = msg.kwargs or {}
        if want.details:
            kwargs = dict(kwargs, details=Details(
                procedure=msg.procedure or want.uri, caller=msg.caller,
                caller_authid=msg.caller_authid, caller_authrole=msg.caller_authrole))
        if want.on_hub:
            # gevent-aware endpoints may wait (HTTP, other calls): one greenlet each
            gevent.spawn(self._invoke_on_hub, want, msg, kwargs)
        else:
            self._pool_jobs().put((want.fn, msg.args or (), kwargs, (want, msg)))

    def _invoke_on_hub(self, want: _Want, msg: message.Invocation, kwargs: dict) -> None:
        try:
            res = want.fn(*(msg.args or ()), **kwargs)
        except Exception as e:
            self._reply(want, msg, error=e)
        else:
            self._reply(want, msg, value=res)

    def _invocation_done(self, invocation: tuple, result: Any) -> None:
        # a link callback: runs in the hub greenlet itself, so it only queues the reply
        want, msg = invocation
        if result.successful():
            self._reply(want, msg, value=result.value)
        else:
            self._reply(want, msg, error=result.exception)

    def _reply(self, want: _Want, msg: message.Invocation, value: Any = None,
               error: BaseException | None = None) -> None:
        self._inflight -= 1
        if isinstance(error, ApplicationError):
            reply: message.Message = message.Error(
                message.Invocation.MESSAGE_TYPE, msg.request, error.error,
                args=list(error.args) or None, kwargs=error.kwargs or None)
        elif error is not None:
            log.error("%s: procedure %s failed: %s: %s", self.name, want.uri,
                      type(error).__name__, error)
            reply = message.Error(message.Invocation.MESSAGE_TYPE, msg.request,
                                  "wamp.error.runtime_error",
                                  args=[str(error) or type(error).__name__])
        elif isinstance(value, CallResult):
            reply = message.Yield(msg.request, args=list(value.results) or None,
                                  kwargs=value.kwresults or None)
        else:
            reply = message.Yield(msg.request, args=[value])
        if msg.request not in self._running:
            return   # interrupted (or from a router session that is gone)
        self._running.discard(msg.request)
        self._out.put(("reply", reply, self._rs))

    def _get_pool(self) -> Any:
        if self._pool is None:
            from gevent.threadpool import ThreadPool

            self._pool = ThreadPool(self._pool_size)
        return self._pool

    # -- leaving ----------------------------------------------------------------------------------

    def _peer_closed(self) -> None:
        if self._state != _IDLE:
            self._left("wamp.close.transport_lost")

    def _left(self, reason: str) -> None:
        was_joined = self._state == _JOINED
        self._state = _IDLE
        self.session_id = None
        self._detach()
        self._fail_all(ApplicationError(reason, "the session left the router"))
        if was_joined:
            for fn in list(self.on_leave):
                gevent.spawn(_guard, fn, self, reason)
        self._schedule_rejoin(reason)

    def _schedule_rejoin(self, reason: str) -> None:
        # A session that only subscribes/registers (import time, components) is never "used"
        # again, so it re-joins by itself when the router dropped it (killed, overflow) -- not
        # at shutdown, and with back-off when the router keeps refusing.
        if not self._wanted or reason == "wamp.close.system_shutdown" or self._rejoins >= 6:
            return
        delay = min(0.2 * 2 ** self._rejoins, 10.0)
        self._rejoins += 1
        log.info("%s: left (%s); re-joining in %.1f s", self.name, reason, delay)
        gevent.spawn_later(delay, self._outgoing, _JOIN)

    def _detach(self) -> None:
        self._running.clear()
        rs, self._rs = self._rs, None
        peer, self._peer = self._peer, None
        if peer is not None:
            peer.discard()
        if rs is not None:
            try:
                rs.detach()
            except Exception:
                log.exception("%s: detach failed", self.name)

    def _fail_all(self, err: ApplicationError) -> None:
        pending, self._pending = self._pending, {}
        # a snapshot: a thread that timed out may still pop from the old dict
        for _kind, waiter, _want in list(pending.values()):
            if waiter is not None:
                waiter.resolve(error=err)
        for _want, waiter in self._pending_wants:
            if waiter is not None:
                waiter.resolve(error=err)
        self._pending_wants.clear()
        self._backlog.clear()


class Details(types.SimpleNamespace):
    """Event details (topic, publication, publisher, publisher_authid, publisher_authrole) or
    invocation details (procedure, caller, caller_authid, caller_authrole); the publisher and
    caller fields are set only when the router discloses them."""


def _wants_hub(fn: Callable, on_hub: bool | None) -> bool:
    if on_hub is not None:
        return on_hub
    return bool(getattr(fn, "_geonode_on_hub", False))


_PUBLISH_KEYS = ("exclude_me", "exclude", "exclude_authid", "exclude_authrole", "eligible",
                 "eligible_authid", "eligible_authrole", "retain", "acknowledge")


def _publish_options(options: Any) -> dict:
    if options is None:
        return {}
    if not isinstance(options, dict):
        options = {k: getattr(options, k, None) for k in _PUBLISH_KEYS}
    return {k: v for k, v in options.items() if k in _PUBLISH_KEYS and v is not None}


def _guard(fn: Callable, *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("callback %r failed", fn)


def _logged_call(name: str, fn: Callable, args: Any, kwargs: dict) -> None:
    """An event handler on a pool thread: its failure is logged, never raised into gevent."""
    try:
        fn(*args, **kwargs)
    except Exception:
        log.exception("%s: event handler %r failed", name, fn)
