"""Holding a subscriber's messages while its dynamic authorizer decides about an event.

An event of a pattern subscription reaches a subscriber only if its role may subscribe to the
event's concrete topic. A static role answers at once. A dynamic role's authorizer may have to
be asked, which takes a round trip: the publisher and the hub must not wait for it, and the
subscriber must not get its messages out of order. So the subscriber's peer is swapped for a
``HeldPeer`` that queues everything sent to the session (the event in question, later events,
results, anything) while one greenlet asks the authorizer; then the queue is released in order
(the event only if allowed) and the real peer is put back.

While held, an answer the authorizer did not allow to be cached still serves the other events
of that topic already queued: they were published before the answer came. Bounded:
``HOLD_LIMIT`` messages, past it the connection is dropped like an overflowing outgoing queue.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import gevent

from geonode.router.authorization import CONCRETE
from geonode.router.session import JOINED

log = logging.getLogger("geonode.router")

#: Messages queued for one session while its authorizer is asked (the transports' default
#: outgoing queue bound, ``max_queue``).
HOLD_LIMIT = 10_000


class HeldPeer:
    """Stands in for ``session.peer`` until the queued messages are released."""

    __slots__ = ("session", "peer", "transport_details", "queue", "pushed", "closed")

    def __init__(self, session: Any) -> None:
        self.session = session
        self.peer = session.peer
        self.transport_details = getattr(self.peer, "transport_details", {})
        # (message, topic or None, session id): a topic means "only if allowed"
        self.queue: deque = deque()
        self.pushed = 0
        self.closed = False
        session.peer = self
        gevent.spawn(self._run)

    @classmethod
    def of(cls, session: Any) -> HeldPeer:
        peer = session.peer
        return peer if type(peer) is cls else cls(session)

    # -- the Peer protocol ----------------------------------------------------------------
    def send(self, msg: Any) -> None:
        self._push((msg, None, 0))

    def hold(self, event: Any, topic: str) -> None:
        """Queue ``event``, to be sent if the session may subscribe to ``topic``."""
        self._push((event, topic, self.session.id))

    def close(self) -> None:
        self._release_and("close")

    def close_going_away(self) -> None:
        self._release_and("close_going_away")

    # -- internals ------------------------------------------------------------------------
    def _push(self, item: tuple) -> None:
        if self.closed:   # a late reference: the real peer (closed) decides
            if item[1] is None:
                self.peer.send(item[0])
            return
        if len(self.queue) >= HOLD_LIMIT:
            log.warning("session %s: %d messages waiting for its authorizer: connection "
                        "dropped", self.session.id, len(self.queue))
            self.queue.clear()
            self._release_and("close")
            return
        self.pushed += 1
        self.queue.append(item)

    def _restore(self) -> None:
        if self.session.peer is self:
            self.session.peer = self.peer

    def _release_and(self, how: str) -> None:
        """The session ends: what needs no answer goes out in order, then the real peer
        closes (``how``); events still waiting for an answer are dropped."""
        if not self.closed:
            self.closed = True
            queue, self.queue = self.queue, deque()
            for msg, topic, _ in queue:
                if topic is None:
                    self.peer.send(msg)
            self._restore()
        getattr(self.peer, how, self.peer.close)()

    def _run(self) -> None:
        session = self.session
        answers: dict[str, tuple[bool, int]] = {}   # topic -> (allow, pushed when answered)
        try:
            while self.queue and not self.closed:
                msg, topic, sid = self.queue[0]
                if topic is not None and not self._allowed(session, topic, sid, answers):
                    if not self.closed and self.queue and self.queue[0][0] is msg:
                        self.queue.popleft()
                    continue
                if self.closed:
                    break
                self.queue.popleft()
                self.peer.send(msg)
        except Exception:
            log.exception("session %s: releasing held messages failed", session.id)
        finally:
            if not self.closed:
                self._restore()

    def _allowed(self, session: Any, topic: str, sid: int, answers: dict) -> bool:
        """May ``session`` (still the one the event was for) receive an event on ``topic``;
        asks the authorizer if need be (blocking this greenlet only)."""
        if session.state != JOINED or session.id != sid:
            return False   # the subscriber left (or left and joined again)
        ans = session.role.authorize_now(session, topic, "subscribe", CONCRETE)
        if ans is not None:
            return ans.allow
        # An answer not to be cached still serves this topic's events queued before it came.
        seen = answers.get(topic)
        if seen is not None and self._queued_before(seen[1]):
            return seen[0]
        ans = session.role.authorize(session, topic, "subscribe", CONCRETE)
        answers[topic] = (ans.allow, self.pushed)
        if len(answers) > len(self.queue) + 64:
            # Bounded while a stream keeps the queue from emptying: an answer serves nothing
            # once every event queued before it has gone.
            head = self.pushed - len(self.queue)
            for t in [t for t, (_, pushed) in answers.items() if pushed <= head]:
                del answers[t]
        return ans.allow and session.state == JOINED and session.id == sid

    def _queued_before(self, pushed: int) -> bool:
        # The head of the queue is item number pushed - len(queue) + 1.
        return self.pushed - len(self.queue) < pushed
