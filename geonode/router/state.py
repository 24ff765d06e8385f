"""Broker and dealer state: the subscription and registration tables.

Kept behind two small classes so a backplane (e.g. Redis, to share a realm between processes)
can replace the in-memory tables later without touching the broker/dealer logic. Sessions are
stored as objects; a backplane would keep ids and map them back to local sessions.
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
    __slots__ = ("id", "uri", "match", "created", "subscribers", "history")

    def __init__(self, uri: str, match: str) -> None:
        self.id = new_id()
        self.uri = uri
        self.match = match
        self.created = utcnow()
        # session -> None; a dict keeps insertion order and O(1) removal
        self.subscribers: dict[Any, None] = {}
        # Event history (realm "store"), newest last; such a subscription outlives its
        # subscribers, as in Crossbar.
        self.history: deque | None = None

    def details(self) -> dict:
        return {"id": self.id, "created": self.created, "uri": self.uri, "match": self.match}


class Registration:
    __slots__ = ("id", "uri", "match", "invoke", "created", "callees", "rr_index", "limits",
                 "busy")

    def __init__(self, uri: str, match: str, invoke: str) -> None:
        self.id = new_id()
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

    def available(self, callee: Any) -> bool:
        limit = self.limits.get(callee)
        return limit is None or self.busy.get(callee, 0) < limit

    def details(self) -> dict:
        return {"id": self.id, "created": self.created, "uri": self.uri, "match": self.match,
                "invoke": self.invoke}


class BrokerState:
    """In-memory subscriptions and retained events of one realm."""

    def __init__(self) -> None:
        self.table: UriTable[Subscription] = UriTable()
        self.by_id: dict[int, Subscription] = {}
        # topic -> the last retained publication (a dict the broker turns into an EVENT)
        self.retained: dict[str, dict] = {}

    def subscribe(self, session: Any, uri: str, match: str) -> tuple[Subscription, bool, bool]:
        """Add ``session``; returns (subscription, created, newly_subscribed)."""
        sub = self.table.get(uri, match)
        created = sub is None
        if sub is None:
            sub = Subscription(uri, match)
            self.table.add(uri, match, sub)
            self.by_id[sub.id] = sub
        is_new = session not in sub.subscribers
        sub.subscribers[session] = None
        return sub, created, is_new

    def keep_history(self, uri: str, match: str, limit: int) -> Subscription:
        """A permanent subscription that records the last ``limit`` events."""
        sub = self.table.get(uri, match)
        if sub is None:
            sub = Subscription(uri, match)
            self.table.add(uri, match, sub)
            self.by_id[sub.id] = sub
        sub.history = deque(maxlen=max(0, int(limit)))
        return sub

    def unsubscribe(self, session: Any, sub: Subscription) -> bool:
        """Remove ``session``; returns True when the subscription is now gone."""
        sub.subscribers.pop(session, None)
        if sub.subscribers or sub.history is not None:
            return False
        self.table.remove(sub.uri, sub.match)
        self.by_id.pop(sub.id, None)
        return True

    def get(self, sub_id: int) -> Subscription | None:
        return self.by_id.get(sub_id)

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
    """In-memory registrations of one realm."""

    def __init__(self) -> None:
        self.table: UriTable[Registration] = UriTable()
        self.by_id: dict[int, Registration] = {}

    def lookup(self, uri: str, match: str) -> Registration | None:
        return self.table.get(uri, match)

    def register(self, session: Any, uri: str, match: str, invoke: str,
                 concurrency: int | None = None) -> tuple[Registration, bool]:
        """Add ``session`` as a callee (the caller checked invoke policy conflicts)."""
        reg = self.table.get(uri, match)
        created = reg is None
        if reg is None:
            reg = Registration(uri, match, invoke)
            self.table.add(uri, match, reg)
            self.by_id[reg.id] = reg
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
        if reg.callees:
            return False
        self.table.remove(reg.uri, reg.match)
        self.by_id.pop(reg.id, None)
        return True

    def get(self, reg_id: int) -> Registration | None:
        return self.by_id.get(reg_id)

    def exact(self, procedure: str) -> Registration | None:
        """The exact registration of ``procedure`` (the hot path of CALL)."""
        return self.table.exact.get(procedure)

    def best(self, procedure: str) -> Registration | None:
        return self.table.best(procedure)

    def ranked(self, procedure: str) -> list[Registration]:
        """Every registration matching ``procedure``, most specific first."""
        return self.table.ranked(procedure)
