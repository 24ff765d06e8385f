"""The session API: ``Session``, a WAMP client inside the node, joined to a router through an
in-process peer (``geonode.transport.inprocess``), and its ``Subscription``/``Registration``.

Every public method may be called from any thread or greenlet; the protocol state is touched
only on the hub, in the session's pump greenlet (``_outgoing`` for what callers hand over,
``_incoming`` for what the router sends). See ``geonode.wamp`` for the threading model.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any, cast

import gevent
from autobahn.wamp import message, role
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, CallResult

from geonode.handoff import Pump
from geonode.router.errors import (
    CANCELED,
    CLOSE_SYSTEM_SHUTDOWN,
    CLOSE_TRANSPORT_LOST,
    NO_ROUTER,
    NO_SUCH_REGISTRATION,
    OVERLOADED,
    RUNTIME_ERROR,
    TIMEOUT,
)
from geonode.transport.inprocess import InProcessPeer
from geonode.wamp.handlers import Handlers, wants_hub
from geonode.wamp.pending import REGISTER, SUBSCRIBE, Reply, Request, Want, WantChange
from geonode.wamp.registry import find_router, hub, in_hub_thread, lock
from geonode.wamp.waiters import ProgressWaiter, Waiter

log = logging.getLogger("geonode.wamp")

#: seconds a ``call`` (and an acknowledged ``publish``, ``subscribe``, ``register``) waits by default
DEFAULT_TIMEOUT = 30.0
#: messages from threads waiting for the hub before a publishing thread is made to wait
MAX_QUEUED = 10_000

_IDLE, _JOINING, _JOINED = range(3)
# What callers hand the pump besides WAMP messages, WantChange and Reply: join, leave.
_JOIN = object()
_LEAVE = object()


class Subscription:
    def __init__(self, session: Session, want: Want) -> None:
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
        self._state = _IDLE
        self._ids = itertools.count(1)
        self._pending: dict[int, Request] = {}   # by request id: awaiting the router's answer
        self._subs: dict[int, list[Want]] = {}    # by subscription id: its handlers
        self._regs: dict[int, Want] = {}          # by registration id
        self._wanted: list[Want] = []             # kept alive across re-joins
        self._backlog: list = []                  # messages handed over before WELCOME
        self._wants_at_welcome: list[WantChange] = []   # made (and answered) at WELCOME
        self._rejoins = 0
        self._handlers = Handlers(self.name, pool_size, self._answer_invocation)
        self._rs: Any = None                      # the router's side: a RouterSession
        self._peer: InProcessPeer | None = None
        self._out: Any = None  # a Pump            # everything for the router passes here
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
        waiter = Waiter() if on_progress is None else ProgressWaiter(on_progress)
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
        want = Want(SUBSCRIBE, topic, handler, wants_hub(handler, on_hub), match, None,
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
        want = Want(REGISTER, procedure, endpoint, wants_hub(endpoint, on_hub), match,
                     invoke, details)
        self._add_want(want, timeout)
        return Registration(self, want)

    def leave(self) -> None:
        """Say GOODBYE and forget subscriptions and registrations (the session re-joins if
        used again)."""
        if hub.loop is None:
            return
        self._submit(_LEAVE)

    # -- hand-over to the hub -------------------------------------------------------------------

    def _submit(self, item: Any) -> None:
        out = self._out
        if out is None:
            if hub.loop is None:
                raise ApplicationError(NO_ROUTER, "no WAMP router runs in this process yet")
            with lock:  # two threads' first use must not make two pumps
                if self._out is None:
                    self._out = Pump(self._outgoing, hub.loop, name=f"wamp:{self.name}")
                out = self._out
        if in_hub_thread():
            out.put(item)
            return
        # Back-pressure for threads that publish faster than the router takes it: wait
        # (this thread only, never the hub) rather than queue without bound.
        if len(out) >= MAX_QUEUED and not out.wait_for_room(MAX_QUEUED, DEFAULT_TIMEOUT):
            raise ApplicationError(OVERLOADED,
                                   f"{len(out)} messages to the router not yet sent")
        out.put_threadsafe(item)

    def _kick(self) -> None:
        self._submit(_JOIN)

    def join_if_wanted(self) -> None:
        """A router just started: join if subscriptions or registrations wait for one."""
        if self._wanted and self._state == _IDLE:
            self._kick()

    def _request(self, req: int, kind: str, msg: Any, timeout: float | None, uri: str,
                 waiter: Waiter | None = None) -> Any:
        waiter = waiter or Waiter()
        self._pending[req] = Request(kind, waiter)
        try:
            self._submit(msg)
        except BaseException:   # no router yet, or overloaded: nothing will answer
            self._pending.pop(req, None)
            raise
        if not waiter.wait(timeout):
            if self._pending.pop(req, None) is not None:
                if kind == "call":   # geonode's router always supports call canceling
                    self._submit(message.Cancel(req, mode="killnowait"))
                raise ApplicationError(TIMEOUT,
                                       f"no answer to {kind} '{uri}' within {timeout} s")
            waiter.wait(None)  # answered while timing out: take the answer
        if waiter.error is not None:
            raise waiter.error
        return waiter.value

    def _add_want(self, want: Want, timeout: float | None) -> None:
        if hub.loop is None:
            self._wanted.append(want)  # import time: made when the router starts
            return
        waiter = Waiter()
        self._submit(WantChange(want, True, waiter))
        if not waiter.wait(timeout):
            self._submit(WantChange(want, False, Waiter()))  # nobody waits for this one
            raise ApplicationError(TIMEOUT,
                                   f"no answer to {want.kind} '{want.uri}' within {timeout} s")
        if waiter.error is not None:
            raise waiter.error

    def _drop_want(self, want: Want, timeout: float | None) -> None:
        if hub.loop is None:
            if want in self._wanted:
                self._wanted.remove(want)
            return
        waiter = Waiter()
        self._submit(WantChange(want, False, waiter))
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
            self._wants_at_welcome.clear()
            if self._state == _JOINED:
                self._leaving = True
                self._rs.receive(message.Goodbye())
            return
        t = type(item)
        if t is Reply:
            # answer to an invocation of the router session it came from, never a later one
            if self._state == _JOINED and self._rs is item.router_session:
                self._rs.receive(item.message)
            return
        if t is WantChange:
            if item.add:
                self._make_want(item)
            else:
                self._undo_want(item.want, item.waiter)
            return
        if self._state == _JOINED:
            self._rs.receive(item)
            return
        self._backlog.append(item)
        if self._state == _IDLE:
            self._join()

    def _make_want(self, change: WantChange) -> None:
        self._wanted.append(change.want)
        if self._state != _JOINED:
            # made together with the other wanted ones once WELCOME arrives
            self._wants_at_welcome.append(change)
            if self._state == _IDLE:
                self._join()
            return
        self._send_want(change.want, change.waiter)

    def _undo_want(self, want: Want, waiter: Waiter) -> None:
        if want in self._wanted:
            self._wanted.remove(want)
        self._wants_at_welcome = [c for c in self._wants_at_welcome if c.want is not want]
        if want.wamp_id is None or self._state != _JOINED:
            waiter.resolve()
            return
        req = next(self._ids)
        wid, want.wamp_id = want.wamp_id, None
        if want.kind == SUBSCRIBE:
            lst = self._subs.get(wid, [])
            if want in lst:
                lst.remove(want)
            if lst:  # other handlers still use this subscription
                waiter.resolve()
                return
            self._subs.pop(wid, None)
            kind = "unsubscribe"
        else:
            self._regs.pop(wid, None)
            kind = "unregister"
        self._pending[req] = Request(kind, waiter, want)
        self._rs.receive(want.undo(req, wid))

    def _send_want(self, want: Want, waiter: Waiter | None) -> None:
        req = next(self._ids)
        self._pending[req] = Request(want.kind, waiter, want)
        self._rs.receive(want.message(req))

    def _join(self) -> None:
        router = self._router or find_router(self.realm)
        if router is None:
            self._fail_all(ApplicationError(NO_ROUTER, "no WAMP router runs in this process"))
            return
        self._state = _JOINING
        peer: InProcessPeer | None = None

        def closed() -> None:
            # only the current peer's end counts (an old one may close after a re-join)
            if peer is self._peer:
                self._peer_closed()

        peer = self._peer = InProcessPeer(self._incoming, closed, hub.loop, name=self.name)
        try:
            self._rs = router.attach(self._peer, auth={"authid": self.authid,
                                                       "authrole": self.authrole})
            self._rs.receive(message.Hello(self.realm, _roles(), authid=self.authid,
                                           authrole=self.authrole))
        except Exception as e:
            log.exception("%s: cannot join the router", self.name)
            self._state = _IDLE
            self._fail_all(ApplicationError(RUNTIME_ERROR, str(e)))

    # -- on the hub: incoming ---------------------------------------------------------------------

    def _incoming(self, msg: Any) -> None:
        """Runs in the peer's pump greenlet: every message from the router."""
        t = type(msg)
        if t is message.Event:
            self._handlers.event(self._subs.get(msg.subscription, ()), msg)
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
            # answered at once; the endpoint's late result is dropped by Handlers
            if self._handlers.cancel(msg.request):
                self._rs.receive(message.Error(message.Invocation.MESSAGE_TYPE, msg.request,
                                               CANCELED))
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
        waiters = {id(c.want): c.waiter for c in self._wants_at_welcome}
        self._wants_at_welcome.clear()
        for want in list(self._wanted):
            self._send_want(want, waiters.get(id(want)))
        backlog, self._backlog = self._backlog, []
        if backlog:
            self._out.put_front(backlog)
        for fn in list(self.on_join):
            gevent.spawn(_guard, fn, self)

    def _answer(self, req: int, value: Any) -> None:
        r = self._pending.pop(req, None)
        if r is not None and r.waiter is not None:
            r.waiter.resolve(value)

    def _on_made(self, req: int, wamp_id: int) -> None:
        r = self._pending.pop(req, None)
        if r is None:
            return
        want = cast(Want, r.want)  # a subscribe/register request always has its Want
        if want not in self._wanted:  # dropped meanwhile
            self._rs.receive(want.undo(next(self._ids), wamp_id))
        else:
            want.wamp_id = wamp_id
            if r.kind == SUBSCRIBE:
                self._subs.setdefault(wamp_id, []).append(want)
            else:
                self._regs[wamp_id] = want
        if r.waiter is not None:
            r.waiter.resolve(wamp_id)

    def _on_error(self, msg: message.Error) -> None:
        r = self._pending.pop(msg.request, None)
        if r is None:
            return
        err = _error(msg)
        want = r.want
        if want is not None and r.kind in (SUBSCRIBE, REGISTER) and want in self._wanted:
            self._wanted.remove(want)
        if r.waiter is not None:
            r.waiter.resolve(error=err)
        else:
            log.error("%s: %s '%s' failed: %s", self.name, r.kind, want.uri if want else "?", err)

    def _on_result(self, msg: message.Result) -> None:
        if msg.progress:
            r = self._pending.get(msg.request)
            if r is not None and isinstance(r.waiter, ProgressWaiter):
                r.waiter.progressed(list(msg.args or ()), dict(msg.kwargs or {}))
            return
        r = self._pending.pop(msg.request, None)
        if r is not None:  # a call: someone waits for it
            cast(Waiter, r.waiter).resolve((list(msg.args or ()), dict(msg.kwargs or {})))

    def _on_invocation(self, msg: message.Invocation) -> None:
        want = self._regs.get(msg.registration)
        if want is None:
            self._rs.receive(message.Error(message.Invocation.MESSAGE_TYPE, msg.request,
                                           NO_SUCH_REGISTRATION))
        elif not self._handlers.invoke(want, msg):
            self._rs.receive(message.Error(message.Invocation.MESSAGE_TYPE, msg.request,
                                           RUNTIME_ERROR, args=["callee overloaded"]))

    def _answer_invocation(self, reply: message.Message) -> None:
        """An endpoint's YIELD/ERROR (from Handlers, on the hub): queued behind what callers
        handed over, for the router session of now."""
        self._out.put(Reply(reply, self._rs))

    # -- leaving ----------------------------------------------------------------------------------

    def _peer_closed(self) -> None:
        if self._state != _IDLE:
            self._left(CLOSE_TRANSPORT_LOST)

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
        if not self._wanted or reason == CLOSE_SYSTEM_SHUTDOWN or self._rejoins >= 6:
            return
        delay = min(0.2 * 2 ** self._rejoins, 10.0)
        self._rejoins += 1
        log.info("%s: left (%s); re-joining in %.1f s", self.name, reason, delay)
        gevent.spawn_later(delay, self._outgoing, _JOIN)

    def _detach(self) -> None:
        self._handlers.forget()
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
        for r in list(pending.values()):
            if r.waiter is not None:
                r.waiter.resolve(error=err)
        for change in self._wants_at_welcome:
            if change.waiter is not None:
                change.waiter.resolve(error=err)
        self._wants_at_welcome.clear()
        self._backlog.clear()


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
