"""The backplane's implementation of the realm state (``geonode.router.state``'s interface).

The other nodes' sessions live here as ``RemoteSession`` stand-ins, in the same tables as this
node's: a subscription's ``remote`` holds the other nodes' subscribers, a registration's
``remote`` their callees. Broker, dealer and meta API use the tables as they do in a single
process; a stand-in's ``send`` carries what the dealer sends a callee (INVOCATION, INTERRUPT)
to that callee's node, and ``kill``/``revoke`` ask its node to do it.

Changes made by this node's own sessions are announced to the others (``announce``); changes
received from the others (``add_remote_*``/``drop_remote_*``) are never announced back.

Subscription and registration IDs are derived from (prefix, realm, match, URI) with a keyed
hash, so every node gives one topic's subscription the same ID without asking anyone (the meta
API's lookups agree across nodes, a shared registration has one ID).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from autobahn.wamp import message as m

from geonode.router.authorization import TrustedRole
from geonode.router.state import (
    BrokerState,
    DealerState,
    Registration,
    SessionState,
    Subscription,
)


class _OtherNodeRole(TrustedRole):
    """A remote callee's role as this node sees it: the check whether a pattern callee's
    role may register the called procedure itself is made by the callee's own node
    (``Dealer.invoke_remote``), which knows the role (and its dynamic authorizer)."""

    name = "remote"


REMOTE_ROLE = _OtherNodeRole()


class RemoteSession:
    """Another node's session: meta API answers, subscriber and callee of this node's tables."""

    __slots__ = ("node", "id", "authid", "authrole", "info", "restricted", "subscriptions",
                 "registrations", "invocations", "calls", "testaments", "realm", "link",
                 "__weakref__")

    internal = False
    role = REMOTE_ROLE
    peer = None

    def __init__(self, link: Any, realm: Any, node: str, sid: int, info: dict,
                 restricted: bool = False) -> None:
        self.link = link          # the Backplane
        self.realm = realm
        self.node = node
        self.id = sid
        self.info = info          # its details() as its node announced them
        self.authid = info.get("authid")
        self.authrole = info.get("authrole")
        self.restricted = restricted
        self.subscriptions: dict[Any, None] = {}
        self.registrations: dict[Any, None] = {}
        self.invocations: dict[int, Any] = {}   # this node's calls to it, by invocation ID
        self.calls: dict[int, Any] = {}         # unused: its calls arrive as its node's
        self.testaments: dict[str, list] = {}

    def details(self) -> dict:
        return self.info

    def feature(self, role: str, name: str) -> bool:
        # Its own node checks the client's features (progressive results, cancel).
        return True

    def next_request_id(self) -> int:
        # Invocation IDs unique per node, so its node's answers find their call.
        return self.link.next_invocation_id()

    def send(self, msg: Any) -> None:
        self.link.to_callee(self, msg)

    def kill(self, reason: str | None = None, message: str | None = None) -> None:
        self.link.send_node(self.node, ("K", self.realm.name, self.id, reason, message))

    def revoke(self, kind: str, item: Any, reason: str | None) -> None:
        self.link.send_node(self.node, ("V" if kind == "registration" else "Q",
                                        self.realm.name, self.id, item.uri, item.match,
                                        reason))

    def __repr__(self) -> str:
        return f"<RemoteSession {self.id}@{self.node} {self.authid}/{self.authrole}>"


class NodeCaller:
    """Another node as the caller of this node's callees: each invocation it sent is in
    ``calls`` under the ID that node gave it; answers go back to it."""

    __slots__ = ("link", "realm", "node", "calls")

    id = 0
    authid = authrole = None
    internal = False
    restricted = True

    def __init__(self, link: Any, realm: Any, node: str) -> None:
        self.link, self.realm, self.node = link, realm, node
        self.calls: dict[int, Any] = {}

    def send(self, msg: Any) -> None:
        # RESULT / ERROR of an invocation; the dealer wrote CALL-type errors with our ID
        if isinstance(msg, m.Result):
            # What the caller's dealer needs of it, not the marshalled RESULT: that node
            # answers its caller with its own RESULT (its callee disclosure is this node's
            # stand-in), so parsing a RESULT there only to rebuild a YIELD is wasted.
            self.link.send_node(self.node, (
                "Y", self.realm.name, msg.request, msg.args, msg.kwargs, msg.progress,
                msg.payload, msg.enc_algo, msg.enc_key, msg.enc_serializer))
        elif isinstance(msg, m.Error):
            msg.request_type = m.Invocation.MESSAGE_TYPE
            self.link.send_node(self.node, ("Z", self.realm.name, msg.marshal()))

    def feature(self, role: str, name: str) -> bool:
        return True


def item_id(prefix: str, realm: str, kind: str, uri: str, match: str) -> int:
    """The cluster-wide ID of a subscription (kind "s") or registration ("r")."""
    h = hashlib.blake2b(f"{kind}\0{match}\0{uri}".encode(), digest_size=8,
                        key=f"{prefix}\0{realm}".encode()[:64])
    return (int.from_bytes(h.digest(), "big") >> 11) or 1   # [1, 2**53]


class ClusterSessionState(SessionState):
    def __init__(self, announce: Callable[[tuple], None], realm_name: str) -> None:
        super().__init__()
        self.remote: dict[int, RemoteSession] = {}
        self._announce = announce
        self._realm = realm_name

    def add(self, session: Any) -> None:
        super().add(session)
        self._announce(("J", self._realm, session.id, announced_details(session),
                        bool(session.restricted)))

    def remove(self, session: Any) -> None:
        super().remove(session)
        self._announce(("L", self._realm, session.id))

    def get(self, session_id: int) -> Any:
        return self.local.get(session_id) or self.remote.get(session_id)

    def all(self) -> list:
        return [*self.local.values(), *self.remote.values()]


def announced_details(session: Any) -> dict:
    d = session.details()
    # transport details may hold objects a wire cannot carry (and are big): the basics only
    t = d.get("transport") or {}
    d["transport"] = {k: v for k, v in t.items()
                      if isinstance(v, str | int | float | bool) or v is None}
    return d


class ClusterBrokerState(BrokerState):
    def __init__(self, announce: Callable[[tuple], None], prefix: str, realm_name: str) -> None:
        super().__init__()
        self._announce = announce
        self._prefix, self._realm = prefix, realm_name

    def _new(self, uri: str, match: str) -> Subscription:
        sub = Subscription(uri, match, item_id(self._prefix, self._realm, "s", uri, match))
        self.table.add(uri, match, sub)
        self.by_id[sub.id] = sub
        return sub

    def subscribe(self, session: Any, uri: str, match: str) -> tuple[Subscription, bool, bool]:
        sub, created, is_new = super().subscribe(session, uri, match)
        if is_new:
            self._announce(("S", self._realm, session.id, uri, match))
        return sub, created, is_new

    def unsubscribe(self, session: Any, sub: Subscription) -> bool:
        if session in sub.subscribers:
            self._announce(("U", self._realm, session.id, sub.uri, sub.match))
        return super().unsubscribe(session, sub)

    # -- the other nodes' subscribers ------------------------------------------------------
    def add_remote(self, rs: RemoteSession, uri: str, match: str) -> None:
        sub = self.table.get(uri, match) or self._new(uri, match)
        if sub.remote is None:
            sub.remote = {}
        sub.remote[rs] = None
        rs.subscriptions[sub] = None

    def drop_remote(self, rs: RemoteSession, uri: str, match: str) -> None:
        sub = self.table.get(uri, match)
        if sub is None or not sub.remote or rs not in sub.remote:
            return
        del sub.remote[rs]
        rs.subscriptions.pop(sub, None)
        self._drop_if_empty(sub)


class ClusterDealerState(DealerState):
    def __init__(self, announce: Callable[[tuple], None], prefix: str, realm_name: str) -> None:
        super().__init__()
        self._announce = announce
        self._prefix, self._realm = prefix, realm_name

    def _new(self, uri: str, match: str, invoke: str) -> Registration:
        reg = Registration(uri, match, invoke,
                           item_id(self._prefix, self._realm, "r", uri, match))
        reg.born = time.time()
        self.table.add(uri, match, reg)
        self.by_id[reg.id] = reg
        return reg

    def register(self, session: Any, uri: str, match: str, invoke: str,
                 concurrency: int | None = None) -> tuple[Registration, bool]:
        reg, created = super().register(session, uri, match, invoke, concurrency)
        self._announce(("R", self._realm, session.id, uri, match, reg.invoke,
                        concurrency or 0, reg.born))
        return reg, created

    def unregister(self, session: Any, reg: Registration) -> bool:
        if session in reg.callees:
            self._announce(("X", self._realm, session.id, reg.uri, reg.match))
        return super().unregister(session, reg)

    # -- the other nodes' callees ----------------------------------------------------------
    def add_remote(self, rs: RemoteSession, uri: str, match: str, invoke: str,
                   born: float) -> Registration:
        reg = self.table.get(uri, match)
        if reg is None:
            reg = self._new(uri, match, invoke)
            reg.born = born
        elif not reg.callees:
            reg.invoke = invoke
            reg.born = min(reg.born, born) if reg.remote else born
        if reg.remote is None:
            reg.remote = []
        if rs not in reg.remote:
            reg.remote.append(rs)
        rs.registrations[reg] = None
        return reg

    def drop_remote(self, rs: RemoteSession, uri: str, match: str) -> None:
        reg = self.table.get(uri, match)
        if reg is None or not reg.remote or rs not in reg.remote:
            return
        reg.remote.remove(rs)
        rs.registrations.pop(reg, None)
        self._drop_if_empty(reg)
