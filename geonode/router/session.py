"""RouterSession: the per-connection WAMP state machine.

    ESTABLISHING --HELLO--> [AUTHENTICATING --AUTHENTICATE-->] JOINED --GOODBYE--> ESTABLISHING
         `--> ABORT (no realm / auth failed / protocol violation)

The transport calls ``receive(msg)`` for each incoming message and ``detach()`` once when the
connection goes. Work that must wait (dynamic authenticators, dynamic authorizers) runs in a
greenlet of this session; later messages of the same session queue up behind it so their
order is kept, while other sessions carry on.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, cast

import gevent
from autobahn.wamp import message as m

from geonode.router.auth import METHODS, Accept, Challenge, Deny, PendingAuth, pending_auth
from geonode.router.auth.throttle import address_key
from geonode.router.authorization import AnswerCache
from geonode.router.errors import (
    AUTHENTICATION_FAILED,
    CLOSE_GOODBYE_AND_OUT,
    CLOSE_KILLED,
    CLOSE_LOGOUT,
    CLOSE_SYSTEM_SHUTDOWN,
    NO_AUTH_METHOD,
    NO_SUCH_REALM,
    NO_SUCH_ROLE,
    PROTOCOL_VIOLATION,
)
from geonode.router.state import new_id

log = logging.getLogger("geonode.router")

ESTABLISHING, AUTHENTICATING, JOINED, CLOSING, CLOSED = range(5)
# Messages a session may queue while one of its own earlier messages waits on an authorizer.
BACKLOG_LIMIT = 1000
GOODBYE_TIMEOUT = 5.0


_FEATURE_SETS: dict[frozenset, frozenset] = {}
# id(roles) -> (roles, its features): the HELLOs of identical payloads share one parsed message
# (geonode.transport.serializers), so their roles dict is one object; kept alive here, so its
# id is not reused while the entry lives. Bounded: cleared when full.
_BY_ROLES: dict[int, tuple[dict, frozenset]] = {}


def client_features(roles: dict | None) -> frozenset:
    """The (role, feature) pairs a client announced, as a shared frozenset: clients of one
    library announce the same roles, so 10,000 sessions hold one set, not 10,000 role objects."""
    if roles is None:
        roles = {}
    known = _BY_ROLES.get(id(roles))
    if known is not None and known[0] is roles:
        return known[1]
    shared = _features(roles)
    if len(_BY_ROLES) >= 256:
        _BY_ROLES.clear()
    _BY_ROLES[id(roles)] = (roles, shared)
    return shared


def _features(roles: dict) -> frozenset:
    pairs = frozenset(
        (name, k) for name, obj in roles.items()
        for k, v in getattr(obj, "__dict__", {}).items() if v is True and not k.startswith("_"))
    shared = _FEATURE_SETS.get(pairs)
    if shared is None:
        if len(_FEATURE_SETS) < 256:   # bounded: odd clients just get their own set
            _FEATURE_SETS[pairs] = pairs
        shared = pairs
    return shared


class Welcome(m.Welcome):
    """autobahn's WELCOME with the router's roles marshalled once per realm, not per session
    (the loop over every role feature was a twentieth of a join's CPU). ``roles_raw`` is
    what autobahn's ``marshal`` makes of the roles (``marshalled_roles``): the output is the
    same, key for key. Sent only to peers that just serialize it (``serializes_only``)."""

    __slots__ = ("roles_raw",)

    def __init__(self, session: int, roles: dict, roles_raw: dict, **kw: Any) -> None:
        super().__init__(session, roles, **kw)
        self.roles_raw = roles_raw

    def marshal(self) -> list:
        # autobahn's own marshal with no roles to walk (its per-feature loop is what this
        # saves), then the realm's marshalled roles in their place: the same keys in the
        # same order. (The message is its session's own: nobody reads its roles meanwhile.)
        roles, self.roles = self.roles, {}
        try:
            raw = super().marshal()
        finally:
            self.roles = roles
        raw[2]["roles"] = self.roles_raw
        return raw


def marshalled_roles(roles: dict) -> dict:
    """The router's roles as autobahn's WELCOME carries them (shared by every WELCOME of a
    realm: serializers only read it)."""
    return m.Welcome(1, roles).marshal()[2]["roles"]


class RouterSession:
    """One client connection's WAMP session (and, after GOODBYE, the next one on it)."""

    __slots__ = ("router", "peer", "auth_config", "trusted_auth", "internal",
                 "transport_details", "state", "id", "pending_id", "realm", "authid", "authrole",
                 "authmethod", "authprovider", "authextra", "role", "client_roles", "_pending",
                 "_backlog", "in_worker", "_request_id", "_goodbye_timer", "subscriptions",
                 "registrations", "calls", "invocations", "testaments", "authz_cache",
                 "__weakref__")

    def __init__(self, router: Any, peer: Any, auth_config: dict | None = None,
                 auth: dict | None = None, internal: bool = False) -> None:
        self.router = router
        self.peer = peer
        self.auth_config = auth_config
        self.trusted_auth = auth
        self.internal = internal
        # The peer's own dict (not a copy): one per connection is enough.
        self.transport_details: dict = getattr(peer, "transport_details", None) or {}
        self.state = ESTABLISHING
        self.id: int = 0
        self.pending_id: int = 0
        self.realm: Any = None
        self.authid: str | None = None
        self.authrole: str | None = None
        self.authmethod: str | None = None
        self.authprovider: str | None = None
        self.authextra: dict | None = None
        self.role: Any = None
        self.client_roles: frozenset = frozenset()
        self._pending: PendingAuth | None = None
        self._backlog: deque | None = None
        self.in_worker = False
        self._request_id = 0
        self._goodbye_timer: Any = None
        self._init_joined_state()

    def _init_joined_state(self) -> None:
        self.subscriptions: dict[Any, None] = {}
        self.registrations: dict[Any, None] = {}
        self.calls: dict[int, Any] = {}          # CALL.Request -> invocation (as caller)
        self.invocations: dict[int, Any] = {}    # INVOCATION.Request -> invocation (as callee)
        self.testaments: dict[str, list] = {}
        self.authz_cache = AnswerCache()

    # -- helpers used by realm/broker/dealer ----------------------------------------------
    def send(self, msg: Any) -> None:
        if self.state != CLOSED:
            realm = self.realm
            if realm is not None:
                realm.sent[msg.MESSAGE_TYPE] += 1
            self.peer.send(msg)

    def next_request_id(self) -> int:
        # Session-scope ids for router-originated requests (INVOCATION); 2**53 wraps to 1.
        self._request_id = self._request_id + 1 if self._request_id < 2**53 else 1
        return self._request_id

    def feature(self, role: str, name: str) -> bool:
        return (role, name) in self.client_roles

    def details(self) -> dict:
        """Session details as the meta API and authorizers see them."""
        # Crossbar's keys: authextra {} when none; no session resumption, so never resumable
        return {"session": self.id, "realm": self.realm.name if self.realm else None,
                "authid": self.authid, "authrole": self.authrole,
                "authmethod": self.authmethod, "authprovider": self.authprovider,
                "authextra": self.authextra or {}, "resumable": False, "resume_token": None,
                "resumed": False,
                "serializer": self.transport_details.get("channel_serializer"),
                "transport": self.transport_details}

    @property
    def restricted(self) -> bool:
        """The router's own and trusted sessions, left out of meta listings (as Crossbar does)."""
        return self.internal or self.authrole == "trusted"

    def __repr__(self) -> str:
        return f"<RouterSession {self.id} {self.authid}/{self.authrole}>"

    # -- transport entry points -----------------------------------------------------------
    def receive(self, msg: Any) -> None:
        """One message from the client (in the transport's greenlet)."""
        if self.state == CLOSED:
            return
        if self._backlog is not None:
            if type(msg) in _ANSWERS and self.state == JOINED:
                # A callee's answers need no authorization and must not wait behind it: the
                # awaited authorizer may be the very call this session is answering.
                self._process(msg)
                return
            if len(self._backlog) >= BACKLOG_LIMIT:
                self.protocol_violation("too many messages while waiting for an authorizer")
                return
            self._backlog.append(msg)
            return
        self._process(msg)

    def defer(self, msg: Any) -> bool:
        """Run ``msg`` (and everything queued after it) in a greenlet that may block.

        Returns True when deferred; handlers call it before any side effect and return."""
        if self.in_worker:
            return False
        self._backlog = deque([msg])
        gevent.spawn(self._drain)
        return True

    def _drain(self) -> None:
        self.in_worker = True
        try:
            while self._backlog and self.state != CLOSED:
                self._process(self._backlog.popleft())
        finally:
            self.in_worker = False
            self._backlog = None

    def detach(self) -> None:
        """The transport is gone (called exactly once by the transport)."""
        if self.state != CLOSED:
            self._leave_realm()
            self.state = CLOSED
        self._stop_goodbye_timer()
        self._backlog = None
        self._pending = None
        self.router.detached(self)

    def protocol_violation(self, text: str) -> None:
        """End this session for a malformed or out-of-order message (also for transports
        that fail to parse a message)."""
        if self.state == CLOSED:
            return
        log.warning("session %s (%s): protocol violation: %s", self.id or "-",
                    self.transport_details.get("peer", "?"), text)
        self.peer.send(m.Abort(PROTOCOL_VIOLATION, text))
        self._leave_realm()
        self.state = CLOSED
        self.peer.close()

    def kill(self, reason: str | None = None, message: str | None = None) -> None:
        """Router-initiated end of session: GOODBYE now, state freed now."""
        if self.state != JOINED:
            return
        self.peer.send(m.Goodbye(reason or CLOSE_KILLED, message))
        self._leave_realm()
        self.state = CLOSING
        # The client should answer GOODBYE; if it does not, drop the connection.
        self._goodbye_timer = gevent.get_hub().loop.timer(GOODBYE_TIMEOUT)
        self._goodbye_timer.start(self._close_transport)

    def shutdown(self) -> None:
        """Router shutdown: GOODBYE (if joined), state freed, transport closed."""
        if self.state == JOINED:
            self.peer.send(m.Goodbye(CLOSE_SYSTEM_SHUTDOWN, "router is shutting down"))
            self._leave_realm()
        self._stop_goodbye_timer()   # a killed session's wait for its GOODBYE ends here too
        self.state = CLOSED
        # A WebSocket peer closes with 1001 ("going away") here; peers without it just close.
        getattr(self.peer, "close_going_away", self.peer.close)()

    def _stop_goodbye_timer(self) -> None:
        if self._goodbye_timer is not None:
            self._goodbye_timer.close()
            self._goodbye_timer = None

    def _close_transport(self) -> None:
        self._stop_goodbye_timer()
        if self.state != CLOSED:
            self.state = CLOSED
            self.peer.close()

    # -- state machine --------------------------------------------------------------------
    def _process(self, msg: Any) -> None:
        try:
            state = self.state
            if state == JOINED:
                realm = self.realm
                cls = type(msg)
                realm.received[msg.MESSAGE_TYPE] += 1
                handler = realm.handlers.get(cls)
                if handler is None:
                    if isinstance(msg, m.Goodbye):
                        self._on_goodbye(msg)
                    elif isinstance(msg, m.Abort):
                        # The client gave up on the session: nothing to answer, just clean up.
                        self._leave_realm()
                        self._close_transport()
                    else:
                        self.protocol_violation(f"unexpected {type(msg).__name__} after WELCOME")
                    return
                handler(self, msg)
            elif state == ESTABLISHING:
                if isinstance(msg, m.Hello):
                    self._on_hello(msg)
                elif isinstance(msg, m.Abort):
                    self._close_transport()
                else:
                    self.protocol_violation(f"unexpected {type(msg).__name__} before HELLO")
            elif state == AUTHENTICATING:
                if isinstance(msg, m.Authenticate):
                    self._on_authenticate(msg)
                elif isinstance(msg, m.Abort):
                    self._close_transport()
                else:
                    self.protocol_violation(f"unexpected {type(msg).__name__} while authenticating")
            elif state == CLOSING:
                if isinstance(msg, (m.Goodbye, m.Abort)):
                    self._close_transport()
        except Exception:
            # A bug of ours must not take the node down; this session cannot be trusted anymore.
            log.exception("session %s: error handling %s", self.id, type(msg).__name__)
            self.protocol_violation(f"internal error handling {type(msg).__name__}")

    def _abort(self, reason: str, message: str = "") -> None:
        log.info("session %s (%s): ABORT %s %s", self.pending_id,
                 self.transport_details.get("peer", "?"), reason, message)
        self.peer.send(m.Abort(reason, message or None))
        self._pending = None
        self.state = ESTABLISHING
        self._close_transport()

    def _abort_later(self, delay: float, reason: str, message: str) -> None:
        """A failed authentication: ABORT after ``delay`` (a hub timer; nothing waits). The
        session reads nothing meanwhile but the client's own ABORT/GOODBYE, which closes it."""
        if delay <= 0:
            self._abort(reason, message)
            return
        log.info("session %s (%s): ABORT %s %s (answered in %.2f s: failed authentication)",
                 self.pending_id, self.transport_details.get("peer", "?"), reason, message,
                 delay)
        self._pending = None
        self.state = CLOSING
        # The goodbye timer's slot: both end the connection on expiry, never both at once.
        self._goodbye_timer = gevent.get_hub().loop.timer(delay)
        self._goodbye_timer.start(self._late_abort, reason, message)

    def _late_abort(self, reason: str, message: str) -> None:
        self._stop_goodbye_timer()
        if self.state == CLOSED:
            return
        self.peer.send(m.Abort(reason, message or None))
        self._close_transport()

    def _on_hello(self, msg: m.Hello) -> None:
        if not self.pending_id:
            self.pending_id = new_id()
        realm_name = msg.realm
        if self.trusted_auth is not None:
            a = self.trusted_auth
            self._accept(Accept(a.get("realm", realm_name), a.get("authid") or f"router-{self.pending_id}",
                                a.get("authrole", "trusted"), "trusted", "geonode",
                                a.get("authextra")), msg)
            return
        authmethods = msg.authmethods or ["anonymous"]
        pending: PendingAuth | None = None
        if not self.auth_config:
            if "anonymous" not in authmethods:
                self._abort(NO_AUTH_METHOD, f"cannot authenticate using any of {authmethods}")
                return
            pending = pending_auth("anonymous", {"type": "static", "role": "anonymous"}, self)
        else:
            cookie_offered = False
            for method in authmethods:
                if method in METHODS and method in self.auth_config:
                    candidate = pending_auth(method, self.auth_config[method], self)
                    if candidate.usable(msg):
                        pending = candidate
                        break
                    cookie_offered = True   # only cookie can be unusable
            if pending is None:
                if cookie_offered:
                    self._cookie_refused(msg)
                    return
                self._abort(NO_AUTH_METHOD, f"cannot authenticate using any of {authmethods}")
                return
        # A dynamic authenticator may pick the realm; otherwise it must exist up front.
        if pending.provider == "static" and realm_name not in self.router.realms:
            self._abort(NO_SUCH_REALM, f'no realm "{realm_name}" exists on this router')
            return
        if pending.blocking and self.defer(msg):
            return
        if self._throttled(pending, msg):
            return
        self._pending = pending
        self._handle_auth_answer(pending.hello(realm_name, msg), msg, pending)

    def _cookie_refused(self, msg: m.Hello) -> None:
        """Only ``cookie`` was offered (of the configured methods) and the connection's cookie
        carries no login for this realm. A cookie value the node never issued is a guess: its
        refusal is counted like a wrong password (auth/throttle.py)."""
        ref = getattr(self.peer, "cookie", None)
        why = ("the connection carries no cookie" if ref is None else
               "the cookie presented is unknown or expired" if ref.presented_unknown else
               "the cookie carries no login for this realm")
        deny = Deny(AUTHENTICATION_FAILED, f"cookie authentication failed: {why}; "
                                           "authenticate with another method first",
                    counts=ref is not None and ref.presented_unknown)
        if deny.counts:
            self._abort_later(self.router.auth_throttle.failed(
                address_key(self.transport_details), msg.authid), deny.reason, deny.message)
        else:
            self._abort(deny.reason, deny.message)

    def _on_authenticate(self, msg: m.Authenticate) -> None:
        # the state machine hands AUTHENTICATE over only while a HELLO's authentication waits
        pending = cast(PendingAuth, self._pending)
        if pending.blocking and self.defer(msg):
            return
        # Checked again: other connections of this address may have failed since the HELLO.
        if self._throttled(pending, pending.hello_msg):
            return
        self._handle_auth_answer(pending.authenticate(msg.signature, msg.extra),
                                 pending.hello_msg, pending)

    def _throttled(self, pending: PendingAuth, hello: m.Hello) -> bool:
        """Refuse, unexamined, an attempt from an address (or for an authid) with too many
        failures in flight (auth/throttle.py)."""
        if not pending.checks_credentials:
            return False
        why = self.router.auth_throttle.check(address_key(self.transport_details), hello.authid)
        if why is None:
            return False
        self.router.auth_failed(hello.realm, pending.method)
        self._abort(AUTHENTICATION_FAILED, why)
        return True

    def _handle_auth_answer(self, answer: Any, hello: m.Hello, pending: PendingAuth) -> None:
        if self.state == CLOSED:
            return
        if isinstance(answer, Challenge):
            self.state = AUTHENTICATING
            self.peer.send(m.Challenge(answer.method, answer.extra))
        elif isinstance(answer, Accept):
            self._accept(answer, hello)
        else:
            assert isinstance(answer, Deny)
            self.router.auth_failed(hello.realm, pending.method)
            if answer.counts and pending.checks_credentials:
                delay = self.router.auth_throttle.failed(address_key(self.transport_details),
                                                         hello.authid)
                self._abort_later(delay, answer.reason, answer.message)
            else:
                self._abort(answer.reason, answer.message)

    def _accept(self, a: Accept, hello: m.Hello) -> None:
        self._pending = None
        realm = self.router.realms.get(a.realm) if a.realm else None
        if realm is None:
            self._abort(NO_SUCH_REALM, f'no realm "{a.realm}" exists on this router')
            return
        role = realm.roles.get(a.authrole)
        if role is None:
            self._abort(NO_SUCH_ROLE, f"no role {a.authrole!r} on realm {a.realm!r}")
            return
        self.id = self.pending_id or new_id()
        while realm.session_state.get(self.id) is not None:
            # taken in this realm (here, or on another node of a cluster: the state knows)
            self.id = new_id()
        self.pending_id = 0
        self.realm, self.role = realm, role
        self.authid, self.authrole = a.authid, a.authrole
        self.authmethod, self.authprovider, self.authextra = a.authmethod, a.authprovider, a.authextra
        self.client_roles = client_features(hello.roles)
        self._init_joined_state()
        self.state = JOINED
        realm.sent[m.Welcome.MESSAGE_TYPE] += 1
        details = dict(realm=realm.name, authid=a.authid, authrole=a.authrole,
                       authmethod=a.authmethod, authprovider=a.authprovider,
                       authextra=a.authextra or {})
        # In-process peers (components, MQTT sessions) dispatch on the exact message type.
        self.peer.send(Welcome(self.id, realm.welcome_roles, realm.welcome_roles_raw, **details)
                       if getattr(self.peer, "serializes_only", False) else
                       m.Welcome(self.id, realm.welcome_roles, **details))
        realm.join(self)
        ref = getattr(self.peer, "cookie", None)
        if ref is not None and a.authprovider != "cookie" and self.auth_config \
                and "cookie" in self.auth_config:
            # the cookie remembers this login for the connection's next HELLO (Crossbar)
            ref.remember(realm.name, a.authid, a.authrole, a.authmethod, a.authextra)

    def _on_goodbye(self, msg: m.Goodbye) -> None:
        ref = getattr(self.peer, "cookie", None)
        if msg.reason == CLOSE_LOGOUT and ref is not None:
            kicked = ref.logout(self.peer)
            log.info("session %s (%s): logged out: cookie login forgotten, %d other "
                     "connections closed", self.id, self.transport_details.get("peer", "?"),
                     kicked)
        self.peer.send(m.Goodbye(CLOSE_GOODBYE_AND_OUT))
        self._leave_realm()
        # The transport stays open: the client may send a new HELLO or close it.
        self.state = ESTABLISHING

    def _leave_realm(self) -> None:
        self._stop_goodbye_timer()
        realm = self.realm
        if realm is not None and self.state in (JOINED, CLOSING):
            self.realm = None
            self.state = CLOSING
            realm.leave(self)
            self._init_joined_state()


# A callee's answers: never held behind an authorizer (see receive).
_ANSWERS = (m.Yield, m.Error)
