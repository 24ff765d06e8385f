"""Dealer: register/unregister/call/invocation/yield/error, cancel and timeouts, for one realm."""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Iterator
from time import perf_counter
from typing import Any

import gevent
from autobahn.wamp import message as m

from geonode.router.authorization import CONCRETE
from geonode.router.broker import denied_text, strict_note
from geonode.router.errors import (
    CANCELED,
    INVALID_ARGUMENT,
    INVALID_URI,
    LIMIT_EXCEEDED,
    MAX_CONCURRENCY,
    NO_SUCH_PROCEDURE,
    NO_SUCH_REGISTRATION,
    NOT_AUTHORIZED,
    POLICY_CONFLICT,
    PROCEDURE_ALREADY_EXISTS,
    TIMEOUT,
    UNREGISTERED,
)
from geonode.router.session import JOINED
from geonode.router.state import DealerState, Registration
from geonode.uri import uri_text

# Pending calls are per-message state: bounded per caller so a session cannot pile up
# unanswered calls without limit.
MAX_CALLS_IN_FLIGHT = 10_000
INVOKE_POLICIES = ("single", "roundrobin", "random", "first", "last")

_CALL = m.Call.MESSAGE_TYPE
_NONE_ELIGIBLE = object()   # no callee of the registration may register the procedure


class _Ask:
    """A callee whose dynamic authorizer must be asked before it can get the call."""

    __slots__ = ("callee",)

    def __init__(self, callee: Any) -> None:
        self.callee = callee


def _random_order(n: int) -> Iterator[int]:
    """0..n-1 in random order, lazily: one draw usually does; the full shuffle is made only
    when the first pick is not eligible or not free."""
    first = random.randrange(n)
    yield first
    for i in random.sample(range(n), n):
        if i != first:
            yield i


def _busy_text(reg: Registration) -> str:
    # Crossbar's words (it has none for random, which it does not limit)
    n = max(reg.limits.values(), default=0)
    if reg.invoke in ("single", "first", "last"):
        return (f"maximum concurrency {n} of callee/endpoint reached "
                "(on non-shared/single registration)")
    return (f"maximum concurrency {n} of all callee/endpoints reached "
            f"(on {'round-robin' if reg.invoke == 'roundrobin' else reg.invoke} registration)")


class Invocation:
    """One call in flight: indexed by the caller (CALL.Request) and the callee (INVOCATION.Request)."""

    __slots__ = ("id", "caller", "call_request", "callee", "registration", "receive_progress",
                 "timer", "canceled", "started")

    def __init__(self, inv_id: int, caller: Any, call_request: int, callee: Any,
                 registration: Registration, receive_progress: bool) -> None:
        self.id = inv_id
        self.caller = caller
        self.call_request = call_request
        self.callee = callee
        self.registration = registration
        self.receive_progress = receive_progress
        self.timer: Any = None
        self.canceled = False
        self.started = perf_counter()   # geonode_wamp_call_duration_seconds


class Dealer:
    def __init__(self, realm: Any, state: DealerState | None = None) -> None:
        self.realm = realm
        self.state = state if state is not None else DealerState()

    # -- REGISTER -------------------------------------------------------------------------
    def register(self, session: Any, msg: m.Register) -> None:
        realm = self.realm
        uri, match = msg.procedure, msg.match or "exact"
        invoke = msg.invoke or "single"
        err = m.Register.MESSAGE_TYPE
        if not realm.valid_uri(uri, match):
            session.send(m.Error(err, msg.request, INVALID_URI,
                                 [f"register for invalid procedure URI {uri_text(uri)} "
                                  f"{strict_note(realm)}"]))
            return
        if realm.reserved(uri, session):
            session.send(m.Error(err, msg.request, INVALID_URI,
                                 [f"register for restricted procedure URI {uri!r}"]))
            return
        if invoke not in INVOKE_POLICIES:
            session.send(m.Error(err, msg.request, INVALID_ARGUMENT,
                                 [f"invalid invocation policy {invoke!r}"]))
            return
        authz = realm.authorize(session, msg, uri, "register", {"match": match, "invoke": invoke})
        if authz is None:
            return
        if not authz.allow:
            session.send(m.Error(err, msg.request, NOT_AUTHORIZED,
                                 [denied_text(session, "register procedure", uri)]))
            return
        reg = self.state.lookup(uri, match)
        if reg is not None:
            callees = self.state.callees(reg)
            if msg.force_reregister and session not in callees:
                # The newcomer takes over: existing callees are revoked (Crossbar semantics).
                for callee in list(callees):
                    self.remove_callee(reg, callee, UNREGISTERED)
                reg = None
            elif session in callees or reg.invoke == "single":
                session.send(m.Error(err, msg.request, PROCEDURE_ALREADY_EXISTS,
                                     [f"register for already registered procedure {uri!r}"]))
                return
            elif reg.invoke != invoke:
                session.send(m.Error(err, msg.request, POLICY_CONFLICT,
                                     [f"register for already registered procedure {uri!r} with "
                                      f"conflicting invocation policy (has {reg.invoke} and "
                                      f"{invoke} was requested)"]))
                return
        reg, created = self.state.register(session, uri, match, invoke, msg.concurrency)
        session.registrations[reg] = None
        session.send(m.Registered(msg.request, reg.id))
        if uri.startswith("wamp."):
            return  # no meta events about the router's own URIs (as Crossbar)
        if created:
            realm.meta_event("wamp.registration.on_create", [session.id, reg.details()])
        realm.meta_event("wamp.registration.on_register", [session.id, reg.id])

    # -- UNREGISTER -----------------------------------------------------------------------
    def unregister(self, session: Any, msg: m.Unregister) -> None:
        reg = self.state.get(msg.registration)
        if reg is None or session not in self.state.callees(reg):
            session.send(m.Error(m.Unregister.MESSAGE_TYPE, msg.request, NO_SUCH_REGISTRATION))
            return
        deleted = self._remove(session, reg)
        session.send(m.Unregistered(msg.request))
        self._meta_removed(session, reg, deleted)

    def _remove(self, session: Any, reg: Registration) -> bool:
        session.registrations.pop(reg, None)
        return self.state.unregister(session, reg)

    def _meta_removed(self, session: Any, reg: Registration, deleted: bool) -> None:
        if reg.uri.startswith("wamp."):
            return
        self.realm.meta_event("wamp.registration.on_unregister", [session.id, reg.id])
        if deleted:
            self.realm.meta_event("wamp.registration.on_delete", [session.id, reg.id])

    def remove_callee(self, reg: Registration, session: Any, reason: str | None) -> None:
        """Registration revocation (meta API / force_reregister)."""
        if getattr(session, "node", None) is not None:
            session.revoke("registration", reg, reason)   # another node's callee: its node
            return
        deleted = self._remove(session, reg)
        if session.feature("callee", "registration_revocation"):
            session.send(m.Unregistered(0, registration=reg.id, reason=reason))
        self._meta_removed(session, reg, deleted)

    # -- CALL -----------------------------------------------------------------------------
    def call(self, session: Any, msg: m.Call) -> None:
        realm = self.realm
        uri = msg.procedure
        if not realm.valid_uri(uri, "exact"):
            session.send(m.Error(_CALL, msg.request, INVALID_URI,
                                 [f"call with invalid procedure URI {uri_text(uri)} "
                                  f"{strict_note(realm)}"]))
            return
        authz = realm.authorize(session, msg, uri, "call", {})
        if authz is None:
            return
        if not authz.allow:
            session.send(m.Error(_CALL, msg.request, NOT_AUTHORIZED,
                                 [denied_text(session, "call procedure", uri)]))
            return
        if msg.request in session.calls:
            session.protocol_violation(f"CALL request id {msg.request} is already in flight")
            return
        if len(session.calls) >= MAX_CALLS_IN_FLIGHT:
            session.send(m.Error(_CALL, msg.request, LIMIT_EXCEEDED,
                                 [f"more than {MAX_CALLS_IN_FLIGHT} calls in flight"]))
            return
        meta = realm.meta_procedure(uri)
        if meta is not None:
            realm.meta.call(meta, session, msg)
            return
        reg = self.state.exact(uri)
        if reg is not None:
            # The callee's role allowed this very procedure when it registered.
            callee = self.state.pick(reg)
        else:
            routed = self._route_pattern(session, msg, uri)
            if routed is None:
                return  # deferred to the caller's greenlet, or the caller left meanwhile
            reg, callee = routed
        if reg is None:
            session.send(m.Error(_CALL, msg.request, NO_SUCH_PROCEDURE,
                                 [f"no callee registered for procedure <{uri}>"]))
            return
        if callee is None:
            session.send(m.Error(_CALL, msg.request, MAX_CONCURRENCY, [_busy_text(reg)]))
            return
        if reg.limits:
            self.state.acquire(reg, callee)
        inv = Invocation(callee.next_request_id(), session, msg.request, callee, reg,
                         bool(msg.receive_progress))
        session.calls[msg.request] = inv
        callee.invocations[inv.id] = inv
        if msg.timeout:
            # CALL.Options.timeout is in milliseconds; the router enforces it (callees need not).
            inv.timer = gevent.get_hub().loop.timer(msg.timeout / 1000.0)
            inv.timer.start(self._on_timeout, inv)
        invocation = m.Invocation(
            inv.id, reg.id, args=msg.args, kwargs=msg.kwargs, payload=msg.payload,
            receive_progress=(True if msg.receive_progress
                              and callee.feature("callee", "progressive_call_results") else None),
            procedure=uri if reg.match != "exact" else None,
            # forwarded (as Crossbar does) so a callee can give up on its own too
            timeout=msg.timeout or None,
            enc_algo=msg.enc_algo, enc_key=msg.enc_key, enc_serializer=msg.enc_serializer)
        # Like Crossbar, the router's own procedures always learn who calls them.
        if authz.disclose or uri.startswith("wamp.") or uri.startswith("crossbar."):
            invocation.caller = session.id
            invocation.caller_authid = session.authid
            invocation.caller_authrole = session.authrole
        callee.send(invocation)

    def _route_pattern(self, session: Any, msg: m.Call,
                       uri: str) -> tuple[Registration | None, Any] | None:
        """The pattern registration and callee for a call to ``uri``: the most specific
        registration with a callee whose role may register ``uri`` itself (the others are
        passed over, so a pattern cannot capture calls its role could not register);
        (None, None) when there is none, (registration, None) when its eligible callees are
        all at their concurrency. None when the message was deferred: a dynamic authorizer
        must be asked about a callee, which blocks only the caller's greenlet."""
        answers: dict = {}   # role (or callee session, for dynamic roles) -> allow
        while True:
            ask = None
            for reg in self.state.ranked(uri):
                if not reg.callees and not reg.remote:
                    continue
                found = self._pick_eligible(reg, uri, answers)
                if type(found) is _Ask:
                    ask = found.callee
                    break
                if found is not _NONE_ELIGIBLE:
                    return reg, found
            if ask is None:
                return None, None
            # The callee's authorizer must be asked; the router's own session (authorizer
            # and authenticator calls) is already in a greenlet that may block.
            if not session.internal and session.defer(msg):
                return None
            answers[ask] = ask.role.authorize(ask, uri, "register", CONCRETE).allow
            if session.state != JOINED or session.realm is not self.realm:
                return None

    def _pick_eligible(self, reg: Registration, uri: str, answers: dict) -> Any:
        """A callee of pattern registration ``reg`` that may register ``uri``, in the order of
        the invoke policy; None when the eligible ones are all busy; _NONE_ELIGIBLE; _Ask
        when a dynamic authorizer must be asked first."""
        state = self.state
        callees = state.callees(reg)
        n = len(callees)
        policy = reg.invoke
        if policy == "roundrobin":
            start = reg.rr_index % n
            order: Any = ((start + k) % n for k in range(n))
        elif policy == "random":
            order = _random_order(n)
        elif policy == "last":
            order = range(n - 1, -1, -1)
        else:   # single, first
            order = range(n)
        eligible = False
        for i in order:
            callee = callees[i]
            role = callee.role
            key = callee if role.per_session else role
            allow = answers.get(key)
            if allow is None:
                ans = role.authorize_now(callee, uri, "register", CONCRETE)
                if ans is None:
                    return _Ask(callee)
                allow = answers[key] = ans.allow
            if not allow:
                continue
            eligible = True
            if state.available(reg, callee):
                if policy == "roundrobin":
                    state.advance(reg, i + 1)
                return callee
        return None if eligible else _NONE_ELIGIBLE

    def _finish(self, inv: Invocation) -> None:
        if inv.timer is not None:
            inv.timer.close()
            inv.timer = None
        inv.caller.calls.pop(inv.call_request, None)
        inv.callee.invocations.pop(inv.id, None)
        if inv.registration.busy:
            self.state.release(inv.registration, inv.callee)

    def _interrupt(self, inv: Invocation, mode: str, reason: str | None = None) -> None:
        if inv.callee.feature("callee", "call_canceling"):
            inv.callee.send(m.Interrupt(inv.id, mode, reason=reason))

    def _on_timeout(self, inv: Invocation) -> None:
        if inv.caller.calls.get(inv.call_request) is not inv:
            return
        inv.timer = None
        self._finish(inv)
        inv.caller.send(m.Error(_CALL, inv.call_request, TIMEOUT, ["call timed out"]))
        self._interrupt(inv, "killnowait", TIMEOUT)

    def invoke_remote(self, caller: Any, callee: Any, reg: Registration,
                      invocation: m.Invocation) -> None:
        """Another node's call for this node's ``callee`` (the backplane): ``caller`` stands
        for that node, ``invocation.request`` is the ID that node gave the invocation. That
        node keeps the call's timeout; this node its callee's concurrency."""
        request = invocation.request
        if request in caller.calls:
            return   # a duplicate delivery: the first is in flight
        if reg.match != "exact" and invocation.procedure:
            # A pattern callee gets a call only if its role may register that very
            # procedure (as in one process); its own node knows the role, so it checks here.
            ans = callee.role.authorize_now(callee, invocation.procedure, "register", CONCRETE)
            if ans is None:
                gevent.spawn(self._invoke_remote_asked, caller, callee, reg, invocation)
                return
            if not ans.allow:
                caller.send(m.Error(m.Invocation.MESSAGE_TYPE, request, NO_SUCH_PROCEDURE,
                                    [f"no callee registered for procedure "
                                     f"<{invocation.procedure}>"]))
                return
        self._invoke_remote_now(caller, callee, reg, invocation)

    def _invoke_remote_asked(self, caller: Any, callee: Any, reg: Registration,
                             invocation: m.Invocation) -> None:
        """invoke_remote after the callee's dynamic authorizer answered (in a greenlet)."""
        ans = callee.role.authorize(callee, invocation.procedure, "register", CONCRETE)
        if callee.state != JOINED:
            caller.send(m.Error(m.Invocation.MESSAGE_TYPE, invocation.request, CANCELED,
                                ["callee disconnected from in-flight request"]))
        elif not ans.allow:
            caller.send(m.Error(m.Invocation.MESSAGE_TYPE, invocation.request,
                                NO_SUCH_PROCEDURE, [f"no callee registered for procedure "
                                                    f"<{invocation.procedure}>"]))
        else:
            self._invoke_remote_now(caller, callee, reg, invocation)

    def _invoke_remote_now(self, caller: Any, callee: Any, reg: Registration,
                           invocation: m.Invocation) -> None:
        request = invocation.request
        if not self.state.available(reg, callee):
            caller.send(m.Error(m.Invocation.MESSAGE_TYPE, request, MAX_CONCURRENCY,
                                [_busy_text(reg)]))
            return
        self.state.acquire(reg, callee)
        receive_progress = bool(invocation.receive_progress)
        inv = Invocation(callee.next_request_id(), caller, request, callee, reg,
                         receive_progress)
        caller.calls[request] = inv
        callee.invocations[inv.id] = inv
        invocation.request = inv.id
        invocation.receive_progress = (True if receive_progress and
                                       callee.feature("callee", "progressive_call_results")
                                       else None)
        callee.send(invocation)

    # -- CANCEL ---------------------------------------------------------------------------
    def cancel(self, session: Any, msg: m.Cancel) -> None:
        inv = session.calls.get(msg.request)
        if inv is None or inv.canceled:
            return  # already answered: the cancel raced the result
        inv.canceled = True
        mode = msg.mode or "killnowait"
        if not inv.callee.feature("callee", "call_canceling"):
            mode = "skip"
        if mode == "kill":
            # The callee's ERROR (or RESULT) finishes the call.
            self._interrupt(inv, "kill")
            return
        self._finish(inv)
        if mode == "killnowait":
            self._interrupt(inv, "killnowait")
        session.send(m.Error(_CALL, msg.request, CANCELED))

    # -- callee answers -------------------------------------------------------------------
    def yield_(self, session: Any, msg: m.Yield) -> None:
        inv = session.invocations.get(msg.request)
        if inv is None:
            return  # the call was canceled, timed out or its caller left
        if msg.progress:
            if inv.receive_progress:
                inv.caller.send(m.Result(inv.call_request, args=msg.args, kwargs=msg.kwargs,
                                         payload=msg.payload, progress=True,
                                         enc_algo=msg.enc_algo, enc_key=msg.enc_key,
                                         enc_serializer=msg.enc_serializer,
                                         callee=session.id, callee_authid=session.authid,
                                         callee_authrole=session.authrole))
            return
        self._finish(inv)
        # Histogram.observe inlined: this is the per-call hot path
        h, d = self.realm.call_durations, perf_counter() - inv.started
        h.counts[bisect_left(h.bounds, d)] += 1
        h.sum += d
        # Crossbar always discloses the callee in RESULT (its dealer hardcodes it); so do we.
        inv.caller.send(m.Result(inv.call_request, args=msg.args, kwargs=msg.kwargs,
                                 payload=msg.payload, enc_algo=msg.enc_algo,
                                 enc_key=msg.enc_key, enc_serializer=msg.enc_serializer,
                                 callee=session.id, callee_authid=session.authid,
                                 callee_authrole=session.authrole))

    def error(self, session: Any, msg: m.Error) -> None:
        if msg.request_type != m.Invocation.MESSAGE_TYPE:
            session.protocol_violation(f"ERROR for message type {msg.request_type} from a client")
            return
        inv = session.invocations.get(msg.request)
        if inv is None:
            return
        self._finish(inv)
        self.realm.call_durations.observe(perf_counter() - inv.started)
        inv.caller.send(m.Error(_CALL, inv.call_request, msg.error, args=msg.args,
                                kwargs=msg.kwargs, payload=msg.payload, enc_algo=msg.enc_algo,
                                enc_key=msg.enc_key, enc_serializer=msg.enc_serializer))

    # -- session gone ---------------------------------------------------------------------
    def detach(self, session: Any) -> None:
        for inv in list(session.calls.values()):
            self._finish(inv)
            self._interrupt(inv, "killnowait")
        for inv in list(session.invocations.values()):
            self._finish(inv)
            inv.caller.send(m.Error(_CALL, inv.call_request, CANCELED,
                                    ["callee disconnected from in-flight request"]))
        for reg in list(session.registrations):
            deleted = self._remove(session, reg)
            self._meta_removed(session, reg, deleted)
