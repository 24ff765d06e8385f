"""Dealer: register/unregister/call/invocation/yield/error, cancel and timeouts, for one realm."""

from __future__ import annotations

import random
from typing import Any

import gevent
from autobahn.wamp import message as m

from geonode.router.broker import denied_text, strict_note
from geonode.router.state import DealerState, Registration

NO_SUCH_PROCEDURE = "wamp.error.no_such_procedure"
NO_SUCH_REGISTRATION = "wamp.error.no_such_registration"
PROCEDURE_ALREADY_EXISTS = "wamp.error.procedure_already_exists"
POLICY_CONFLICT = "wamp.error.procedure_exists_with_different_invocation_policy"
NOT_AUTHORIZED = "wamp.error.not_authorized"
INVALID_URI = "wamp.error.invalid_uri"
INVALID_ARGUMENT = "wamp.error.invalid_argument"
CANCELED = "wamp.error.canceled"
TIMEOUT = "wamp.error.timeout"
LIMIT_EXCEEDED = "wamp.error.limit_exceeded"
MAX_CONCURRENCY = "crossbar.error.max_concurrency_reached"   # Crossbar's URI
# Pending calls are per-message state: bounded per caller so a session cannot pile up
# unanswered calls without limit.
MAX_CALLS_IN_FLIGHT = 10_000
INVOKE_POLICIES = ("single", "roundrobin", "random", "first", "last")
CANCEL_MODES = ("skip", "kill", "killnowait")

_CALL = m.Call.MESSAGE_TYPE


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
                 "timer", "canceled")

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


class Dealer:
    def __init__(self, realm: Any) -> None:
        self.realm = realm
        self.state = DealerState()

    # -- REGISTER -------------------------------------------------------------------------
    def register(self, session: Any, msg: m.Register) -> None:
        realm = self.realm
        uri, match = msg.procedure, msg.match or "exact"
        invoke = msg.invoke or "single"
        err = m.Register.MESSAGE_TYPE
        if not realm.valid_uri(uri, match):
            session.send(m.Error(err, msg.request, INVALID_URI,
                                 [f"register for invalid procedure URI {uri!r} "
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
            if msg.force_reregister and session not in reg.callees:
                # The newcomer takes over: existing callees are revoked (Crossbar semantics).
                for callee in list(reg.callees):
                    self.remove_callee(reg, callee, "wamp.error.unregistered")
                reg = None
            elif session in reg.callees or reg.invoke == "single":
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
        if reg is None or session not in reg.callees:
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
                                 [f"call with invalid procedure URI {uri!r} "
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
        reg = self.state.best(uri)
        if reg is None or not reg.callees:
            session.send(m.Error(_CALL, msg.request, NO_SUCH_PROCEDURE,
                                 [f"no callee registered for procedure <{uri}>"]))
            return
        callee = self._pick(reg)
        if callee is None:
            session.send(m.Error(_CALL, msg.request, MAX_CONCURRENCY, [_busy_text(reg)]))
            return
        if reg.limits:
            reg.busy[callee] = reg.busy.get(callee, 0) + 1
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

    @staticmethod
    def _pick(reg: Registration) -> Any:
        """The callee for the next invocation, or None when all are at their concurrency."""
        callees = reg.callees
        policy = reg.invoke
        if policy == "roundrobin":
            n = len(callees)
            for _ in range(n if reg.limits else 1):
                i = reg.rr_index % n
                reg.rr_index = i + 1
                if reg.available(callees[i]):
                    return callees[i]
            return None
        if policy == "random":
            if reg.limits:
                callees = [c for c in callees if reg.available(c)]
            return random.choice(callees) if callees else None
        callee = callees[-1] if policy == "last" else callees[0]
        return callee if reg.available(callee) else None

    def _finish(self, inv: Invocation) -> None:
        if inv.timer is not None:
            inv.timer.close()
            inv.timer = None
        inv.caller.calls.pop(inv.call_request, None)
        inv.callee.invocations.pop(inv.id, None)
        busy = inv.registration.busy
        if inv.callee in busy:
            busy[inv.callee] -= 1

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
