"""WAMP meta API: wamp.session.*, wamp.registration.*, wamp.subscription.* procedures.

Procedures are answered by the router itself, synchronously, when a session CALLs them (the
role's permissions apply like for any procedure). Meta events are published by the realm's
service session (``Realm.meta_event``), always after the reply to the session that caused them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from autobahn.wamp import message as m

from geonode.router.errors import (
    HISTORY_UNAVAILABLE,
    INVALID_ARGUMENT,
    INVALID_URI,
    NO_SUCH_REGISTRATION,
    NO_SUCH_SESSION,
    NO_SUCH_SUBSCRIPTION,
    NOT_AUTHORIZED,
    TESTAMENT_ERROR,
)
from geonode.router.state import new_id
from geonode.uri import uri_text

log = logging.getLogger("geonode.router")

TESTAMENT_LIMIT = 100
TESTAMENT_OPTIONS = ("exclude", "exclude_authid", "exclude_authrole", "eligible",
                     "eligible_authid", "eligible_authrole", "retain")

PROCEDURES: dict[str, str] = {}


def procedure(uri: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        PROCEDURES[uri] = fn.__name__
        return fn
    return deco


class MetaError(Exception):
    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


def _options(options: Any, name: str = "options") -> dict:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise MetaError(INVALID_ARGUMENT, f"{name} must be a dict")
    return options


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise MetaError(INVALID_ARGUMENT, f"{name} must be a string")
    return value


def _protected(uri: str, caller: Any) -> bool:
    # Like Crossbar: the router's own URIs are hidden from non-trusted callers.
    return caller.authrole != "trusted" and (uri.startswith("wamp.") or uri.startswith("crossbar."))


class MetaAPI:
    def __init__(self, realm: Any) -> None:
        self.realm = realm
        self._later: list[Callable[[], None]] = []

    def call(self, name: str, session: Any, msg: m.Call) -> None:
        self._later = []
        try:
            result = getattr(self, name)(session, *(msg.args or ()), **(msg.kwargs or {}))
        except MetaError as e:
            if e.error == HISTORY_UNAVAILABLE:
                # Crossbar's form of this one error: the message as a keyword argument
                session.send(m.Error(m.Call.MESSAGE_TYPE, msg.request, e.error, [],
                                     {"message": e.message}))
            else:
                session.send(m.Error(m.Call.MESSAGE_TYPE, msg.request, e.error, [e.message]))
            return
        except TypeError as e:
            session.send(m.Error(m.Call.MESSAGE_TYPE, msg.request, INVALID_ARGUMENT, [str(e)]))
            return
        # As Crossbar: always one positional result (None too), callee = the router's session.
        service = self.realm.service
        session.send(m.Result(msg.request, args=[result], callee=service.id,
                              callee_authid=service.authid, callee_authrole=service.authrole))
        # Effects that publish meta events (kills, revocations) happen after the reply.
        later, self._later = self._later, []
        for fn in later:
            fn()

    # -- helpers --------------------------------------------------------------------------
    def _visible_sessions(self, filter_authroles: list | None) -> list:
        if filter_authroles is not None and not isinstance(filter_authroles, list):
            raise MetaError(INVALID_ARGUMENT, "filter_authroles must be a list")
        # a set: O(sessions + list), not O(sessions x list)
        roles = set(filter_authroles) if filter_authroles is not None else None
        return [s for s in self.realm.session_state.all() if not s.restricted
                and (roles is None or s.authrole in roles)]

    def _session(self, session_id: Any) -> Any:
        s = self.realm.session_state.get(session_id) if isinstance(session_id, int) else None
        if s is None or s.restricted:
            raise MetaError(NO_SUCH_SESSION, f"no session with ID {session_id} exists on this router")
        return s

    def _registration(self, caller: Any, reg_id: Any) -> Any:
        reg = self.realm.dealer.state.get(reg_id) if isinstance(reg_id, int) else None
        if reg is None:
            raise MetaError(NO_SUCH_REGISTRATION, f"no registration with ID {reg_id} exists on this dealer")
        if _protected(reg.uri, caller):
            raise MetaError(NOT_AUTHORIZED, f"not authorized for protected URI {reg.uri!r}")
        return reg

    def _subscription(self, caller: Any, sub_id: Any) -> Any:
        sub = self.realm.broker.state.get(sub_id) if isinstance(sub_id, int) else None
        if sub is None:
            raise MetaError(NO_SUCH_SUBSCRIPTION, f"no subscription with ID {sub_id} exists on this broker")
        if _protected(sub.uri, caller):
            raise MetaError(NOT_AUTHORIZED, f"not authorized for protected URI {sub.uri!r}")
        return sub

    @staticmethod
    def _by_match(items, caller: Any) -> dict:
        out: dict[str, list] = {"exact": [], "prefix": [], "wildcard": []}
        for x in items:
            if not _protected(x.uri, caller):
                out[x.match].append(x.id)
        return out

    # -- wamp.session.* -------------------------------------------------------------------
    @procedure("wamp.session.count")
    def session_count(self, caller, filter_authroles=None):
        return len(self._visible_sessions(filter_authroles))

    @procedure("wamp.session.list")
    def session_list(self, caller, filter_authroles=None):
        return [s.id for s in self._visible_sessions(filter_authroles)]

    @procedure("wamp.session.get")
    def session_get(self, caller, session_id):
        return self._session(session_id).details()

    def _kill_all(self, caller, sessions, reason, message) -> list:
        if reason is not None and not isinstance(reason, str):
            raise MetaError(INVALID_ARGUMENT, "reason must be a URI string")
        if message is not None:
            _string(message, "message")
        killed = [s for s in sessions if s is not caller and not s.restricted]
        self._later.append(lambda: _kill(killed, reason, message))
        return [s.id for s in killed]

    @procedure("wamp.session.kill")
    def session_kill(self, caller, session_id, reason=None, message=None):
        s = self._session(session_id)
        if s is caller:
            raise MetaError(NO_SUCH_SESSION, "a session cannot kill itself (use GOODBYE)")
        self._kill_all(caller, [s], reason, message)
        return None

    @procedure("wamp.session.kill_by_authid")
    def session_kill_by_authid(self, caller, authid, reason=None, message=None):
        return self._kill_all(caller, [s for s in self.realm.session_state.all()
                                       if s.authid == authid], reason, message)

    @procedure("wamp.session.kill_by_authrole")
    def session_kill_by_authrole(self, caller, authrole, reason=None, message=None):
        return self._kill_all(caller, [s for s in self.realm.session_state.all()
                                       if s.authrole == authrole], reason, message)

    @procedure("wamp.session.add_testament")
    def session_add_testament(self, caller, topic, args=None, kwargs=None, publish_options=None,
                              scope="destroyed"):
        if scope not in ("destroyed", "detached"):
            raise MetaError(TESTAMENT_ERROR, "scope must be destroyed or detached")
        if not isinstance(topic, str) or not self.realm.valid_uri(topic, "exact"):
            raise MetaError(INVALID_URI, f"invalid topic URI {uri_text(topic)}")
        if self.realm.reserved(topic, caller):
            raise MetaError(INVALID_URI, f"topic {topic!r} is reserved")
        if args is not None and not isinstance(args, list | tuple):
            raise MetaError(INVALID_ARGUMENT, "args must be a list")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise MetaError(INVALID_ARGUMENT, "kwargs must be a dict")
        opts = {k: v for k, v in _options(publish_options, "publish_options").items()
                if k in TESTAMENT_OPTIONS}
        testaments = caller.testaments.setdefault(scope, [])
        if len(testaments) >= TESTAMENT_LIMIT:
            raise MetaError(TESTAMENT_ERROR, f"at most {TESTAMENT_LIMIT} testaments per scope")
        pub_id = new_id()
        try:
            testaments.append(m.Publish(pub_id, topic, args=list(args) if args else None,
                                        kwargs=kwargs or None, **opts))
        except (AssertionError, TypeError, ValueError) as e:
            raise MetaError(INVALID_ARGUMENT, f"invalid publish_options: {e}") from None
        self.realm.testaments_changed(caller)
        return pub_id

    @procedure("wamp.session.flush_testaments")
    def session_flush_testaments(self, caller, scope="destroyed"):
        if scope not in ("destroyed", "detached"):
            raise MetaError(TESTAMENT_ERROR, "scope must be destroyed or detached")
        flushed = len(caller.testaments.pop(scope, []))
        self.realm.testaments_changed(caller)
        return flushed

    # -- wamp.registration.* --------------------------------------------------------------
    @procedure("wamp.registration.list")
    def registration_list(self, caller, session_id=None):
        if session_id is not None:
            return self._by_match(self._session(session_id).registrations, caller)
        return self._by_match(self.realm.dealer.state.all(), caller)

    @procedure("wamp.registration.lookup")
    def registration_lookup(self, caller, procedure, options=None):
        _string(procedure, "procedure")
        match = _options(options).get("match", "exact")
        if match not in ("exact", "prefix", "wildcard"):
            raise MetaError(INVALID_ARGUMENT, f"invalid match {match!r}")
        reg = self.realm.dealer.state.lookup(procedure, match)
        return reg.id if reg is not None and not _protected(reg.uri, caller) else None

    @procedure("wamp.registration.match")
    def registration_match(self, caller, procedure):
        _string(procedure, "procedure")
        reg = self.realm.dealer.state.best(procedure)
        return reg.id if reg is not None and not _protected(reg.uri, caller) else None

    @procedure("wamp.registration.get")
    def registration_get(self, caller, registration_id):
        return self._registration(caller, registration_id).details()

    @procedure("wamp.registration.list_callees")
    def registration_list_callees(self, caller, registration_id):
        dealer = self.realm.dealer.state
        return [s.id for s in dealer.callees(self._registration(caller, registration_id))]

    @procedure("wamp.registration.count_callees")
    def registration_count_callees(self, caller, registration_id):
        dealer = self.realm.dealer.state
        return len(dealer.callees(self._registration(caller, registration_id)))

    @procedure("wamp.registration.remove_callee")
    def registration_remove_callee(self, caller, registration_id, callee_id, reason=None):
        if reason is not None:
            _string(reason, "reason")
        callee = self._session(callee_id)
        reg = self._registration(caller, registration_id)
        if callee not in self.realm.dealer.state.callees(reg):
            raise MetaError(NO_SUCH_REGISTRATION,
                            f"session {callee_id} is not registered on registration {registration_id}")
        self._later.append(lambda: self.realm.dealer.remove_callee(reg, callee, reason))
        return None

    # -- wamp.subscription.* --------------------------------------------------------------
    @procedure("wamp.subscription.list")
    def subscription_list(self, caller, session_id=None):
        if session_id is not None:
            return self._by_match(self._session(session_id).subscriptions, caller)
        return self._by_match(self.realm.broker.state.all(), caller)

    @procedure("wamp.subscription.lookup")
    def subscription_lookup(self, caller, topic, options=None):
        _string(topic, "topic")
        match = _options(options).get("match", "exact")
        if match not in ("exact", "prefix", "wildcard"):
            raise MetaError(INVALID_ARGUMENT, f"invalid match {match!r}")
        sub = self.realm.broker.state.lookup(topic, match)
        return sub.id if sub is not None and not _protected(sub.uri, caller) else None

    @procedure("wamp.subscription.match")
    def subscription_match(self, caller, topic):
        _string(topic, "topic")
        ids = [s.id for s in self.realm.broker.state.matching(topic)
               if not _protected(s.uri, caller)]
        return ids or None

    @procedure("wamp.subscription.get")
    def subscription_get(self, caller, subscription_id):
        return self._subscription(caller, subscription_id).details()

    @procedure("wamp.subscription.list_subscribers")
    def subscription_list_subscribers(self, caller, subscription_id):
        broker = self.realm.broker.state
        return [s.id for s in broker.subscribers(self._subscription(caller, subscription_id))]

    @procedure("wamp.subscription.count_subscribers")
    def subscription_count_subscribers(self, caller, subscription_id):
        broker = self.realm.broker.state
        return len(broker.subscribers(self._subscription(caller, subscription_id)))

    @procedure("wamp.subscription.remove_subscriber")
    def subscription_remove_subscriber(self, caller, subscription_id, subscriber_id, reason=None):
        if reason is not None:
            _string(reason, "reason")
        subscriber = self._session(subscriber_id)
        sub = self._subscription(caller, subscription_id)
        if subscriber not in self.realm.broker.state.subscribers(sub):
            raise MetaError(NO_SUCH_SUBSCRIPTION,
                            f"session {subscriber_id} is not subscribed to {subscription_id}")
        self._later.append(lambda: self.realm.broker.remove_subscriber(sub, subscriber, reason))
        return None

    @procedure("wamp.subscription.get_events")
    def subscription_get_events(self, caller, subscription_id, limit=10):
        sub = self._subscription(caller, subscription_id)
        if sub.history is None:
            raise MetaError(HISTORY_UNAVAILABLE,
                            "event history for the given subscription is not available or "
                            "enabled")
        if not isinstance(limit, int) or limit < 0:
            raise MetaError(INVALID_ARGUMENT, "limit must be a non-negative integer")
        # newest first, as Crossbar answers
        return [sub.history[-1 - i] for i in range(min(limit, len(sub.history)))]


def _kill(sessions: list, reason: Any, message: Any) -> None:
    for s in sessions:
        s.kill(reason, message)
