"""The realm state behind one interface: sessions, subscriptions, registrations.

Broker, dealer and meta API read and change the state only through ``SessionState``,
``BrokerState`` and ``DealerState`` (the seam of docs/ARCHITECTURE.md). This module holds the
in-memory implementation (one process); ``geonode.cluster.state`` is the backplane's, which
adds the other nodes' sessions, subscribers and callees (as ``RemoteSession`` stand-ins) to
the same tables, so broker, dealer and meta API serve a cluster with the same code.

Local sessions are stored as objects. A subscription's or registration's members are
``subscribers``/``callees`` (this process) plus ``remote`` (other nodes, None without a
backplane): ``BrokerState.subscribers`` and ``DealerState.callees`` give both.
"""

from __future__ import annotations

import os
import random
from collections import deque
from datetime import UTC, datetime
from typing import Any

from geonode.router.matching import UriTable, wildcard_matches

# IDs need to be random (WAMP spec), not secret: a fast PRNG seeded from the OS is enough,
# and SystemRandom's one urandom() call per ID was the top cost of a publication.
_rand = random.Random(os.urandom(32))

# Most topics with a retained event per realm.
RETAINED_LIMIT = 10_000


def new_id() -> int:
    """A random WAMP ID in [1, 2**53] (global scope: sessions, publications, subscriptions)."""
    return _rand.getrandbits(53) or 1


def utcnow() -> str:
    # Crossbar's "created" format, e.g. 2026-11-25T15:35:15.123Z
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Subscription:
    __slots__ = ("id", "uri", "match", "created", "subscribers", "history", "remote")

    def __init__(self, uri: str, match: str, sub_id: int | None = None) -> None:
        self.id = sub_id or new_id()
        self.uri = uri
        self.match = match
        self.created = utcnow()
        # session -> None; a dict keeps insertion order and O(1) removal
        self.subscribers: dict[Any, None] = {}
        # Event history (realm "store"), newest last; such a subscription outlives its
        # subscribers, as in Crossbar.
        self.history: deque | None = None
        # Subscribers on other nodes (RemoteSession -> None); None without a backplane.
        self.remote: dict[Any, None] | None = None

    def details(self) -> dict:
        return {"id": self.id, "created": self.created, "uri": self.uri, "match": self.match}


class Registration:
    __slots__ = ("id", "uri", "match", "invoke", "created", "callees", "rr_index", "limits",
                 "busy", "remote", "born")

    def __init__(self, uri: str, match: str, invoke: str, reg_id: int | None = None) -> None:
        self.id = reg_id or new_id()
        self.uri = uri
        self.match = match
        self.invoke = invoke
        self.created = utcnow()
        self.callees: list[Any] = []
        self.rr_index = 0
        # REGISTER.Options.concurrency (Crossbar): callee -> max invocations in flight, and
        # callee -> invocations in flight; only callees that set a limit appear.
        self.limits: dict[Any, int] = {}
        self.busy: dict[Any, int] = {}
        # Callees on other nodes, and when this registration was made (the cluster's tie
        # break between two `single` registrations of one URI); unused without a backplane.
        self.remote: list[Any] | None = None
        self.born = 0.0

    def details(self) -> dict:
        return {"id": self.id, "created": self.created, "uri": self.uri, "match": self.match,
                "invoke": self.invoke}


class SessionState:
    """The realm's joined sessions: ``local`` (this process, by ID; ``Realm.sessions``)."""

    def __init__(self) -> None:
        self.local: dict[int, Any] = {}

    def add(self, session: Any) -> None:
        self.local[session.id] = session

    def remove(self, session: Any) -> None:
        self.local.pop(session.id, None)

    def get(self, session_id: int) -> Any:
        """A session (local, or a remote stand-in) by ID, or None."""
        return self.local.get(session_id)

    def all(self) -> list:
        return list(self.local.values())


class BrokerState:
    """In-memory subscriptions and retained events of one realm."""

    def __init__(self) -> None:
        self.table: UriTable[Subscription] = UriTable()
        self.by_id: dict[int, Subscription] = {}
        # topic -> the last retained publication (a dict the broker turns into an EVENT)
        self.retained: dict[str, dict] = {}

    def _new(self, uri: str, match: str) -> Subscription:
        sub = Subscription(uri, match)
        self.table.add(uri, match, sub)
        self.by_id[sub.id] = sub
        return sub

    def subscribe(self, session: Any, uri: str, match: str) -> tuple[Subscription, bool, bool]:
        """Add ``session``; returns (subscription, created, newly_subscribed)."""
        sub = self.table.get(uri, match)
        created = sub is None
        if sub is None:
            sub = self._new(uri, match)
        is_new = session not in sub.subscribers
        sub.subscribers[session] = None
        return sub, created, is_new

    def keep_history(self, uri: str, match: str, limit: int) -> Subscription:
        """A permanent subscription that records the last ``limit`` events."""
        sub = self.table.get(uri, match) or self._new(uri, match)
        sub.history = deque(maxlen=max(0, int(limit)))
        return sub

    def unsubscribe(self, session: Any, sub: Subscription) -> bool:
        """Remove ``session``; returns True when the subscription is now gone."""
        sub.subscribers.pop(session, None)
        return self._drop_if_empty(sub)

    def _drop_if_empty(self, sub: Subscription) -> bool:
        if sub.subscribers or sub.history is not None or sub.remote:
            return False
        self.table.remove(sub.uri, sub.match)
        self.by_id.pop(sub.id, None)
        return True

    def get(self, sub_id: int) -> Subscription | None:
        return self.by_id.get(sub_id)

    def lookup(self, uri: str, match: str) -> Subscription | None:
        return self.table.get(uri, match)

    def all(self) -> list[Subscription]:
        return list(self.by_id.values())

    def subscribers(self, sub: Subscription) -> list:
        """Every subscriber of ``sub``: local sessions, then other nodes' (stand-ins)."""
        if sub.remote:
            return [*sub.subscribers, *sub.remote]
        return list(sub.subscribers)

    def matching(self, topic: str) -> list[Subscription]:
        return self.table.match_all(topic)

    def retain(self, topic: str, event: dict) -> None:
        self.retained.pop(topic, None)
        self.retained[topic] = event
        # Bounded: publishers retaining on ever new topics must not grow memory forever;
        # the least recently retained topic goes first.
        while len(self.retained) > RETAINED_LIMIT:
            del self.retained[next(iter(self.retained))]

    def forget_retained(self, topic: str) -> None:
        """No retained event on ``topic`` any more (MQTT: a retained empty message)."""
        self.retained.pop(topic, None)

    def retained_for(self, sub: Subscription) -> list[tuple[str, dict]]:
        if sub.match == "exact":
            ev = self.retained.get(sub.uri)
            return [(sub.uri, ev)] if ev is not None else []
        # O(retained topics x URI length): at most RETAINED_LIMIT topics
        if sub.match == "prefix":
            return [(t, ev) for t, ev in self.retained.items() if t.startswith(sub.uri)]
        parts = tuple(sub.uri.split("."))
        n = len(parts)
        return [(t, ev) for t, ev in self.retained.items()
                if t.count(".") + 1 == n and wildcard_matches(parts, t.split("."))]


class DealerState:
    """In-memory registrations of one realm, and the callee choice of each invoke policy
    (the dealer never changes a registration's fields itself)."""

    def __init__(self) -> None:
        self.table: UriTable[Registration] = UriTable()
        self.by_id: dict[int, Registration] = {}

    def _new(self, uri: str, match: str, invoke: str) -> Registration:
        reg = Registration(uri, match, invoke)
        self.table.add(uri, match, reg)
        self.by_id[reg.id] = reg
        return reg

    def lookup(self, uri: str, match: str) -> Registration | None:
        return self.table.get(uri, match)

    def register(self, session: Any, uri: str, match: str, invoke: str,
                 concurrency: int | None = None) -> tuple[Registration, bool]:
        """Add ``session`` as a callee (the caller checked invoke policy conflicts)."""
        reg = self.table.get(uri, match)
        created = reg is None
        if reg is None:
            reg = self._new(uri, match, invoke)
        if session not in reg.callees:
            reg.callees.append(session)
        if concurrency:
            reg.limits[session] = concurrency
        return reg, created

    def unregister(self, session: Any, reg: Registration) -> bool:
        """Remove ``session``; returns True when the registration is now gone."""
        if session in reg.callees:
            reg.callees.remove(session)
        reg.limits.pop(session, None)
        reg.busy.pop(session, None)
        return self._drop_if_empty(reg)

    def _drop_if_empty(self, reg: Registration) -> bool:
        if reg.callees or reg.remote:
            return False
        self.table.remove(reg.uri, reg.match)
        self.by_id.pop(reg.id, None)
        return True

    def get(self, reg_id: int) -> Registration | None:
        return self.by_id.get(reg_id)

    def all(self) -> list[Registration]:
        return list(self.by_id.values())

    def exact(self, procedure: str) -> Registration | None:
        """The exact registration of ``procedure`` (the hot path of CALL)."""
        return self.table.exact.get(procedure)

    def best(self, procedure: str) -> Registration | None:
        return self.table.best(procedure)

    def ranked(self, procedure: str) -> list[Registration]:
        """Every registration matching ``procedure``, most specific first."""
        return self.table.ranked(procedure)

    # -- callees and the invoke policies ---------------------------------------------------
    def callees(self, reg: Registration) -> list:
        """The callees in the policy's order (first = oldest): local, then other nodes'."""
        if reg.remote:
            return [*reg.callees, *reg.remote]
        return reg.callees

    @staticmethod
    def available(reg: Registration, callee: Any) -> bool:
        limit = reg.limits.get(callee)
        return limit is None or reg.busy.get(callee, 0) < limit

    @staticmethod
    def advance(reg: Registration, index: int) -> None:
        """Round-robin: the next pick starts at ``index``."""
        reg.rr_index = index

    def pick(self, reg: Registration) -> Any:
        """The callee for the next invocation, or None when all are at their concurrency."""
        callees = reg.callees if not reg.remote else [*reg.callees, *reg.remote]
        policy = reg.invoke
        if not reg.limits:   # the common case: nobody set a concurrency limit
            if policy == "single" or policy == "first":
                return callees[0]
            if policy == "last":
                return callees[-1]
            if policy == "random":
                return random.choice(callees)
            i = reg.rr_index % len(callees)
            reg.rr_index = i + 1
            return callees[i]
        available = self.available
        if policy == "roundrobin":
            n = len(callees)
            for _ in range(n):
                i = reg.rr_index % n
                reg.rr_index = i + 1
                if available(reg, callees[i]):
                    return callees[i]
            return None
        if policy == "random":
            callees = [c for c in callees if available(reg, c)]
            return random.choice(callees) if callees else None
        callee = callees[-1] if policy == "last" else callees[0]
        return callee if available(reg, callee) else None

    @staticmethod
    def acquire(reg: Registration, callee: Any) -> None:
        """An invocation goes to ``callee`` (counted when it set a concurrency limit)."""
        if reg.limits:
            reg.busy[callee] = reg.busy.get(callee, 0) + 1

    @staticmethod
    def release(reg: Registration, callee: Any) -> None:
        busy = reg.busy
        if callee in busy:
            busy[callee] -= 1
