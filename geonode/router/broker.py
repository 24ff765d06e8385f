"""Broker: subscribe/unsubscribe/publish/event for one realm."""

from __future__ import annotations

import logging
import time
from typing import Any

from autobahn.wamp import message as m

from geonode.router import publishfilter
from geonode.router.authorization import CONCRETE
from geonode.router.errors import (
    INVALID_URI,
    NO_SUCH_SUBSCRIPTION,
    NOT_AUTHORIZED,
    PAYLOAD_SIZE_EXCEEDED,
    UNAVAILABLE,
)
from geonode.router.holding import HeldPeer
from geonode.router.state import BrokerState, Subscription, new_id
from geonode.uri import uri_text

_PER_SESSION = object()   # a dynamic role: its answers depend on the session

log = logging.getLogger("geonode.router")


_EVENT = m.Event.MESSAGE_TYPE   # realm.sent's index for EVENT

def strict_note(realm: Any) -> str:
    # Crossbar's suffix on invalid-URI errors
    return f"(URI strict checking {realm.uri_check == 'strict'})"


def denied_text(session: Any, action: str, uri: str) -> str:
    """The not_authorized message for subscribe/call/register, worded as Crossbar's."""
    realm = session.realm.name if session.realm is not None else None
    return (f'session (session_id={session.id}, authid="{session.authid}", '
            f'authrole="{session.authrole}") is not authorized to {action} "{uri}" '
            f'on realm "{realm}"')


class Broker:
    def __init__(self, realm: Any, state: BrokerState | None = None) -> None:
        self.realm = realm
        self.state = state if state is not None else BrokerState()
        # The backplane's hand-off of a publication to the other nodes:
        # forward(session, publication, msg, disclose, subscriptions, recorded) -> bool
        # (False: it could not be sent). None in a single process.
        self.forward: Any = None

    # -- SUBSCRIBE ------------------------------------------------------------------------
    def subscribe(self, session: Any, msg: m.Subscribe) -> None:
        realm = self.realm
        match = msg.match or "exact"
        uri = msg.topic
        if not realm.valid_uri(uri, match):
            session.send(m.Error(m.Subscribe.MESSAGE_TYPE, msg.request, INVALID_URI,
                                 [f"subscribe for invalid topic URI {uri_text(uri)}"]))
            return
        authz = realm.authorize(session, msg, uri, "subscribe", {"match": match})
        if authz is None:
            return
        if not authz.allow:
            session.send(m.Error(m.Subscribe.MESSAGE_TYPE, msg.request, NOT_AUTHORIZED,
                                 [denied_text(session, "subscribe to topic", uri)]))
            return
        sub, created, is_new = self.state.subscribe(session, uri, match)
        session.subscriptions[sub] = None
        session.send(m.Subscribed(msg.request, sub.id))
        if not uri.startswith("wamp."):   # no meta events about the meta API's own topics
            if created:
                realm.meta_event("wamp.subscription.on_create", [session.id, sub.details()])
            if is_new:
                realm.meta_event("wamp.subscription.on_subscribe", [session.id, sub.id])
        if msg.get_retained:
            for topic, retained in self.state.retained_for(sub):
                pub = retained["publish"]
                if publishfilter.receivers((session,), None, pub):
                    event = self._event(sub, retained["publication"], pub, topic,
                                        retained["disclose"], retained=True)
                    if match == "exact":
                        session.send(event)
                    else:
                        self.realm.sent[_EVENT] += self._deliver_checked((session,), event,
                                                                          topic)

    # -- UNSUBSCRIBE ----------------------------------------------------------------------
    def unsubscribe(self, session: Any, msg: m.Unsubscribe) -> None:
        sub = self.state.get(msg.subscription)
        if sub is None or session not in sub.subscribers:
            session.send(m.Error(m.Unsubscribe.MESSAGE_TYPE, msg.request, NO_SUCH_SUBSCRIPTION))
            return
        deleted = self._remove(session, sub)
        session.send(m.Unsubscribed(msg.request))
        self._meta_removed(session, sub, deleted)

    def _remove(self, session: Any, sub: Subscription) -> bool:
        session.subscriptions.pop(sub, None)
        return self.state.unsubscribe(session, sub)

    def _meta_removed(self, session: Any, sub: Subscription, deleted: bool) -> None:
        if sub.uri.startswith("wamp."):
            return
        self.realm.meta_event("wamp.subscription.on_unsubscribe", [session.id, sub.id])
        if deleted:
            self.realm.meta_event("wamp.subscription.on_delete", [session.id, sub.id])

    def remove_subscriber(self, sub: Subscription, session: Any, reason: str | None) -> None:
        """Subscription revocation (meta API): the router unsubscribes ``session``."""
        if getattr(session, "node", None) is not None:
            session.revoke("subscription", sub, reason)   # another node's subscriber
            return
        deleted = self._remove(session, sub)
        if session.feature("subscriber", "subscription_revocation"):
            session.send(m.Unsubscribed(0, subscription=sub.id, reason=reason))
        self._meta_removed(session, sub, deleted)

    def detach(self, session: Any) -> None:
        for sub in list(session.subscriptions):
            deleted = self._remove(session, sub)
            self._meta_removed(session, sub, deleted)

    # -- PUBLISH --------------------------------------------------------------------------
    def publish(self, session: Any, msg: m.Publish, local: bool = False) -> None:  # noqa: C901 - per publication: checks and fan-out inlined on the hot path
        """A PUBLISH of ``session``; ``local``: for this node's subscribers only (the
        backplane's meta events and testaments about a lost node, which every node
        delivers to its own)."""
        realm = self.realm
        topic = msg.topic
        ack = msg.acknowledge
        if not realm.valid_uri(topic, "exact"):
            if ack:
                session.send(m.Error(m.Publish.MESSAGE_TYPE, msg.request, INVALID_URI,
                                     [f"publish with invalid topic URI {uri_text(topic)} "
                                      f"{strict_note(realm)}"]))
            return
        if realm.reserved(topic, session):
            if ack:
                session.send(m.Error(m.Publish.MESSAGE_TYPE, msg.request, INVALID_URI,
                                     [f"publish with restricted topic URI {topic!r}"]))
            return
        authz = realm.authorize(session, msg, topic, "publish", {})
        if authz is None:
            return
        if not authz.allow:
            if ack:
                # Crossbar's wording (shorter than for the other actions, as there)
                session.send(m.Error(m.Publish.MESSAGE_TYPE, msg.request, NOT_AUTHORIZED,
                                     [f"session not authorized to publish to topic {topic!r}"]))
            return
        publication = new_id()
        # The router's own session is disclosed in meta events (not in testaments), as in
        # Crossbar.
        disclose = ((session.id, session.authid, session.authrole)
                    if authz.disclose or (session.internal and topic.startswith("wamp."))
                    else None)
        if getattr(session.peer, "inbound_large", False) and \
                self._oversized(session, msg, topic, publication, disclose):
            return
        forward = None if local else self.forward
        if ack:
            if forward is not None and not self.realm.backplane_up():
                # Another node's subscribers cannot be reached: no false success (the local
                # ones still get the event: at most once; docs/scaling.md).
                session.send(m.Error(m.Publish.MESSAGE_TYPE, msg.request, UNAVAILABLE,
                                     ["the backplane is down: other nodes not reached"]))
            else:
                # Crossbar answers PUBLISHED before dispatching: a publisher that receives
                # its own event (exclude_me: false) sees the acknowledgement first.
                session.send(m.Published(msg.request, publication))
        self.dispatch(session, publication, msg, topic, disclose, forward)

    def dispatch(self, session: Any, publication: int, msg: m.Publish, topic: str,
                 disclose: tuple | None, forward: Any = None) -> None:
        """Deliver a publication to this node's subscribers (``session``: the publisher, a
        stand-in for another node's), record history, retain; then ``forward`` it."""
        record = None
        sent = self.realm.sent
        flt = publishfilter.compile_filter(msg)
        subs = self.state.matching(topic)
        for sub in subs:
            if sub.history is not None:
                if record is None:
                    record = self._history_record(session, publication, msg)
                sub.history.append(record)
            targets = publishfilter.receivers(sub.subscribers, session, msg, flt)
            if targets:
                # One EVENT per subscription: every transport serializes it once per serializer.
                event = self._event(sub, publication, msg, topic, disclose)
                if sub.match == "exact":
                    # Subscribers are joined sessions (leaving removes them): straight to the
                    # peer. Their role allowed this very topic when they subscribed.
                    for target in targets:
                        target.peer.send(event)
                    sent[_EVENT] += len(targets)
                else:
                    sent[_EVENT] += self._deliver_checked(targets, event, topic)
        if msg.retain:
            self.state.retain(topic, {"publication": publication, "publish": msg,
                                      "disclose": disclose})
        if forward is not None:
            forward(session, publication, msg, disclose, subs, record is not None)

    @staticmethod
    def _deliver_checked(targets, event: m.Event, topic: str) -> int:
        """A pattern subscription's event: only to the subscribers whose role may subscribe to
        ``topic`` itself. Static roles answer from their cache (asked once per role here);
        a dynamic authorizer not yet asked holds that subscriber's messages (HeldPeer) while
        it answers, so neither the publisher nor the hub waits and order is kept."""
        allowed: dict = {}   # role -> True / False, or _PER_SESSION
        n = 0   # sent now (held ones are not counted: their authorizer may still refuse)
        for target in targets:
            role = target.role
            allow = allowed.get(role)
            if allow is None:
                allow = allowed[role] = (_PER_SESSION if role.per_session else
                                         role.authorize_now(target, topic, "subscribe",
                                                            CONCRETE).allow)
            if allow is True:
                target.peer.send(event)
                n += 1
            elif allow is _PER_SESSION:
                ans = role.authorize_now(target, topic, "subscribe", CONCRETE)
                if ans is None:
                    HeldPeer.of(target).hold(event, topic)
                elif ans.allow:
                    target.peer.send(event)
                    n += 1
        return n

    def _oversized(self, session: Any, msg: m.Publish, topic: str, publication: int,
                   disclose: tuple | None) -> bool:
        """Refuse an event bigger than some subscriber's whole outgoing queue (True: refused).

        Sent, it would overflow that queue and cost the subscriber its session (all of them,
        for a topic's big event), and nobody would get it. Refused, only the publisher hears
        of it: ERROR ``wamp.error.payload_size_exceeded`` (autobahn's URI) when it asked for
        an acknowledgement; the spec has the broker answer an unacknowledged PUBLISH with
        nothing at all, so then it is one warning line. The check encodes the event for each
        subscriber's serializer (cached for the delivery), so it runs only for publications
        that could be that big: the publisher's transport says so (``peer.inbound_large``;
        in-process publishers do not, they are trusted)."""
        for sub in self.state.matching(topic):
            event = None
            for target in publishfilter.receivers(sub.subscribers, session, msg):
                oversized = getattr(target.peer, "oversized", None)
                if oversized is None:
                    continue
                if sub.match != "exact":
                    # A subscriber whose role may not have this very topic would not get the
                    # event: its small queue must not veto the publication.
                    ans = target.role.authorize_now(target, topic, "subscribe", CONCRETE)
                    if ans is not None and not ans.allow:
                        continue
                if event is None:
                    event = self._event(sub, publication, msg, topic, disclose)
                size = oversized(event)
                if size:
                    text = (f"event of {size} bytes is bigger than the outgoing queue of a "
                            f"subscriber ({target.peer.max_queue_bytes} bytes)")
                    log.warning("session %s: publication to %r refused: %s", session.id,
                                topic, text)
                    if msg.acknowledge:
                        session.send(m.Error(m.Publish.MESSAGE_TYPE, msg.request,
                                             PAYLOAD_SIZE_EXCEEDED, [text]))
                    return True
        return False

    def _history_record(self, session: Any, publication: int, msg: m.Publish) -> dict:
        # Crossbar's event store format (wamp.subscription.get_events).
        return {"time_ns": time.time_ns(), "realm": self.realm.name, "session_id": session.id,
                "authid": session.authid, "authrole": session.authrole,
                "publication": publication, "topic": msg.topic, "args": msg.args,
                "kwargs": msg.kwargs}

    @staticmethod
    def _event(sub: Subscription, publication: int, msg: m.Publish, topic: str,
               disclose: tuple | None, retained: bool | None = None) -> m.Event:
        ev = m.Event(sub.id, publication, args=msg.args, kwargs=msg.kwargs, payload=msg.payload,
                     topic=topic if sub.match != "exact" else None, retained=retained,
                     enc_algo=msg.enc_algo, enc_key=msg.enc_key,
                     enc_serializer=msg.enc_serializer)
        if disclose is not None:
            ev.publisher, ev.publisher_authid, ev.publisher_authrole = disclose
        return ev

    def has_subscribers(self, topic: str) -> bool:
        return bool(self.state.matching(topic))
