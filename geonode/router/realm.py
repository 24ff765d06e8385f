"""Realm: its sessions, roles, broker, dealer, meta API and service session."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gevent.event
from autobahn.wamp import message as m
from autobahn.wamp import role as r
from autobahn.wamp.exception import ApplicationError

from geonode.config.model import RealmConfig
from geonode.metrics import CALL_BUCKETS, MESSAGE_TYPES, Histogram
from geonode.router.authorization import Authorization, build_roles
from geonode.router.broker import Broker
from geonode.router.dealer import Dealer
from geonode.router.errors import TIMEOUT
from geonode.router.meta import PROCEDURES, MetaAPI
from geonode.router.session import JOINED, RouterSession, marshalled_roles
from geonode.router.state import SessionState, new_id
from geonode.uri import checker

log = logging.getLogger("geonode.router")

def welcome_roles(meta: bool, history: bool = False) -> dict:
    """The features this router implements, announced in WELCOME (exactly these)."""
    broker = r.RoleBrokerFeatures(
        publisher_identification=True, pattern_based_subscription=True,
        subscriber_blackwhite_listing=True, publisher_exclusion=True,
        subscription_revocation=True, event_retention=True, payload_transparency=True,
        payload_encryption_cryptobox=True,   # E2E: the router only passes enc_* through
        session_meta_api=meta or None, subscription_meta_api=meta or None,
        event_history=(meta and history) or None)
    dealer = r.RoleDealerFeatures(
        caller_identification=True, pattern_based_registration=True, shared_registration=True,
        progressive_call_results=True, registration_revocation=True, call_canceling=True,
        call_timeout=True, payload_transparency=True, payload_encryption_cryptobox=True,
        session_meta_api=meta or None, registration_meta_api=meta or None,
        testament_meta_api=meta or None)
    return {"broker": broker, "dealer": dealer}


class _ServicePeer:
    """The realm's own session's transport: answers land in the waiting greenlets."""

    transport_details = {"type": "internal"}

    def __init__(self) -> None:
        self.pending: dict[int, gevent.event.AsyncResult] = {}

    def send(self, msg: Any) -> None:
        if isinstance(msg, (m.Result, m.Error)):
            waiter = self.pending.pop(msg.request, None)
            if waiter is None:
                return
            if isinstance(msg, m.Result):
                args = msg.args or []
                if msg.kwargs:
                    waiter.set({"args": args, "kwargs": msg.kwargs})
                else:
                    waiter.set(args[0] if len(args) == 1 else (args or None))
            else:
                waiter.set_exception(ApplicationError(msg.error, *(msg.args or []),
                                                      **(msg.kwargs or {})))

    def close(self) -> None:
        pass


class ServiceSession(RouterSession):
    """The router's own session on a realm (role ``trusted``): publishes meta events and
    testaments, calls dynamic authenticators/authorizers."""

    def __init__(self, router: Any, realm: Realm) -> None:
        super().__init__(router, _ServicePeer(), internal=True)
        # A real WAMP ID: meta events and meta results disclose it (as Crossbar's service agent).
        self.id = new_id()
        self.realm = realm
        self.role = realm.roles["trusted"]
        self.authid, self.authrole = "geonode", "trusted"
        self.authmethod, self.authprovider = "trusted", "geonode"
        self.state = JOINED

    def call(self, procedure: str, args: list, kwargs: dict | None = None,
             timeout: float | None = None) -> Any:
        """Call a procedure on this realm and wait (blocks this greenlet only)."""
        request = self.next_request_id()
        waiter = gevent.event.AsyncResult()
        self.peer.pending[request] = waiter
        self.realm.dealer.call(self, m.Call(request, procedure, args=args, kwargs=kwargs))
        try:
            return waiter.get(timeout=timeout)
        except gevent.Timeout:
            self.peer.pending.pop(request, None)
            inv = self.calls.get(request)
            if inv is not None:
                self.realm.dealer.cancel(self, m.Cancel(request, mode="killnowait"))
            raise ApplicationError(TIMEOUT, f"{procedure} did not answer") from None


class Realm:
    def __init__(self, router: Any, cfg: RealmConfig) -> None:
        self.router = router
        self.name: str = cfg.name
        self.meta_enabled = cfg.options.enable_meta_api
        self.uri_check = cfg.options.uri_check
        self.max_uri_length = cfg.options.max_uri_length
        # valid_uri(uri, match) -> bool: O(len(uri)), longer than max_uri_length is invalid
        self.valid_uri = checker(self.uri_check == "strict", self.max_uri_length)
        self.roles = build_roles(cfg.roles, self)
        # The backplane (geonode.cluster) puts the other nodes into the same tables.
        backplane = getattr(router, "backplane", None)
        self.session_state = (backplane.session_state(self) if backplane is not None
                              else SessionState())
        # this process's joined sessions by ID (the state's own dict)
        self.sessions: dict[int, RouterSession] = self.session_state.local
        # Plain counters on the hot path, read by geonode.metrics and the status page at
        # scrape time: messages by WAMP type code, received from joined sessions and sent
        # to them (a list index is the cheapest count there is: issue 13's <= 3%).
        self.received: list[int] = [0] * MESSAGE_TYPES
        self.sent: list[int] = [0] * MESSAGE_TYPES
        self.call_durations = Histogram(CALL_BUCKETS)
        self.broker = Broker(self, backplane.broker_state(self) if backplane else None)
        # Crossbar's realm "store": {"type": "memory", "limit": N, "event-history": [{uri, match,
        # limit}]} -> subscriptions that keep their last events for wamp.subscription.get_events
        for entry in cfg.history:
            self.broker.state.keep_history(entry.uri, entry.match, entry.limit)
        self.dealer = Dealer(self, backplane.dealer_state(self) if backplane else None)
        # What a joined session hands each message type to (RouterSession._process): the
        # realm's broker and dealer, so the session needs nothing of the realm's modules.
        self.handlers: dict[type, Callable[[RouterSession, Any], None]] = {
            m.Publish: self.broker.publish,
            m.Subscribe: self.broker.subscribe,
            m.Unsubscribe: self.broker.unsubscribe,
            m.Call: self.dealer.call,
            m.Cancel: self.dealer.cancel,
            m.Register: self.dealer.register,
            m.Unregister: self.dealer.unregister,
            m.Yield: self.dealer.yield_,
            m.Error: self.dealer.error,
        }
        self.meta = MetaAPI(self)
        self.welcome_roles = welcome_roles(self.meta_enabled, bool(cfg.history))
        self.welcome_roles_raw = marshalled_roles(self.welcome_roles)
        self.service = ServiceSession(router, self)
        if backplane is not None:
            backplane.attach(self)

    def testaments_changed(self, session: RouterSession) -> None:
        """The meta API changed ``session``'s testaments: the other nodes keep a copy (a
        surviving node publishes them if this one dies)."""
        backplane = getattr(self.router, "backplane", None)
        if backplane is not None:
            backplane.testaments_changed(self, session)

    def backplane_up(self) -> bool:
        """True when the other nodes can be reached now (always, without a backplane)."""
        backplane = getattr(self.router, "backplane", None)
        return backplane is None or backplane.up

    # -- membership -----------------------------------------------------------------------
    def join(self, session: RouterSession) -> None:
        self.session_state.add(session)
        if not session.restricted:
            self.meta_event("wamp.session.on_join", lambda: [session.details()])

    def leave(self, session: RouterSession) -> None:
        self.session_state.remove(session)
        self.broker.detach(session)
        self.dealer.detach(session)
        self.publish_testaments(session)
        if not session.restricted:
            self.meta_event("wamp.session.on_leave", [session.id])

    def publish_testaments(self, session: RouterSession) -> None:
        """Publish (and forget) the session's testaments, as the router's own session."""
        for scope in ("detached", "destroyed"):
            for pub in session.testaments.pop(scope, ()):
                self.broker.publish(self.service, pub)

    def meta_event(self, topic: str, args: Any) -> None:
        """Publish a meta event (``args`` may be a callable, built only if someone listens)."""
        if not self.meta_enabled or not self.broker.has_subscribers(topic):
            return
        if callable(args):
            args = args()
        self.broker.publish(self.service, m.Publish(0, topic, args=args))

    def meta_procedure(self, uri: str) -> str | None:
        if self.meta_enabled and uri.startswith("wamp."):
            return PROCEDURES.get(uri)
        return None

    # -- checks ---------------------------------------------------------------------------
    @staticmethod
    def reserved(uri: str, session: RouterSession) -> bool:
        """``wamp.*`` belongs to the router: only trusted sessions publish to or register it."""
        return uri.startswith("wamp.") and session.authrole != "trusted"

    def authorize(self, session: RouterSession, msg: Any, uri: str, action: str,
                  options: dict) -> Authorization | None:
        """The session's role's answer; None when the message was deferred to a greenlet
        because a dynamic authorizer must be asked (the handler then just returns)."""
        role = session.role
        ans = role.authorize_now(session, uri, action, options)
        if ans is not None:
            return ans
        if session.defer(msg):
            return None
        ans = role.authorize(session, uri, action, options)
        if session.state != JOINED or session.realm is not self:
            return None  # the session left while the authorizer was thinking: drop the message
        return ans
