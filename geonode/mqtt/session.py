"""An MQTT session as a WAMP session: the router's Peer, possibly outliving its connections.

Each MQTT session is one ``RouterSession`` joined to the transport's realm in its role: an
MQTT PUBLISH is a WAMP PUBLISH of that session, an MQTT SUBSCRIBE one or two WAMP SUBSCRIBEs
(``topics.plan``), an EVENT for it becomes an MQTT PUBLISH. So permissions, dynamic
authorizers, retained events, the meta API and publisher filters apply to MQTT clients as to
any WAMP client (pattern subscriptions see only the topics their role may subscribe to).

Clean sessions end with their connection. A persistent session (CONNECT with clean session
0) stays joined after its connection went, for the life of the node: its subscriptions keep
collecting QoS 1 messages (bounded: ``max_queued_messages``; QoS 0 ones are dropped while it
is away, as mosquitto does), delivered when the client comes back with the same client id and
the same principal. ``SessionStore`` bounds how many are kept offline.

Outgoing QoS 1: at most ``max_inflight_messages`` unacknowledged per session, the rest queued;
after a reconnect the unacknowledged ones are sent again with DUP (MQTT-4.4.0-1). Incoming
QoS 2 is accepted exactly once (PUBREC/PUBREL/PUBCOMP); subscriptions are granted QoS 1 at most
(SUBACK says so), as the router's events carry no QoS 2 guarantee.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import gevent
from autobahn.wamp import message as m
from autobahn.wamp import role as wamp_role
from gevent.event import AsyncResult

from geonode.mqtt import codec
from geonode.mqtt.codec import Malformed
from geonode.mqtt.payload import Codec, PayloadError
from geonode.mqtt.topics import FilterPlan, check_filter, check_topic_name, plan, uri_to_name

log = logging.getLogger("geonode.mqtt")

#: seconds an MQTT CONNECT may wait for the router's WELCOME (dynamic authenticators, the
#: failed-authentication throttle)
AUTH_TIMEOUT = 60.0
#: seconds a SUBSCRIBE may wait for the router's answers (dynamic authorizers)
SUBSCRIBE_TIMEOUT = 60.0
#: a session's dropped-message warnings: at most one line per this many seconds
QUIET_SECONDS = 10.0

# The QoS of the MQTT PUBLISH the router is dispatching right now (None: a WAMP publisher's).
# A WAMP EVENT carries no QoS, yet MQTT delivers min(publisher's QoS, subscription's)
# (MQTT-3.3.5-1); dispatch is synchronous, so the publisher's session states it for the length
# of its receive() call. Events dispatched later (a dynamic authorizer deciding the publish)
# and retained events go at the subscription's QoS.
_publishing_qos: int | None = None

_ROLES = {
    "subscriber": wamp_role.RoleSubscriberFeatures(payload_transparency=True,
                                                   pattern_based_subscription=True),
    "publisher": wamp_role.RolePublisherFeatures(payload_transparency=True),
}

# ABORT reasons -> CONNACK return codes
_REFUSALS = {
    "wamp.error.authentication_failed": codec.REFUSED_BAD_CREDENTIALS,
    "wamp.error.not_authorized": codec.REFUSED_NOT_AUTHORIZED,
    "wamp.error.no_auth_method": codec.REFUSED_NOT_AUTHORIZED,
}


class Quiet:
    """A warning that may repeat per message: one line, then one per QUIET_SECONDS with the
    count of the ones not shown."""

    __slots__ = ("last", "hidden")

    def __init__(self) -> None:
        self.last = 0.0
        self.hidden = 0

    def warn(self, fmt: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last < QUIET_SECONDS:
            self.hidden += 1
            return
        if self.hidden:
            fmt += " (and %d more like it)"
            args = (*args, self.hidden)
        self.last, self.hidden = now, 0
        log.warning(fmt, *args)


class WampSub:
    """One WAMP subscription of the session and the MQTT filters it serves."""

    __slots__ = ("key", "id", "refs", "qos", "checked")

    def __init__(self, key: tuple[str, str], sub_id: int) -> None:
        self.key = key
        self.id = sub_id
        self.refs: dict[str, tuple[int, Callable[[str], bool] | None]] = {}
        self.qos = -1          # QoS for every event: max over the filters it serves exactly
        self.checked: list[tuple[int, Callable[[str], bool]]] = []   # filters to match here

    def update(self) -> None:
        self.qos = max((q for q, c in self.refs.values() if c is None), default=-1)
        self.checked = [(q, c) for q, c in self.refs.values() if c is not None]

    def qos_for(self, uri: str) -> int:
        qos = self.qos
        for q, check in self.checked:
            if q > qos and check(uri):
                qos = q
        return qos


class MqttSession:
    """The router's Peer for one MQTT client id (see the module doc)."""

    # The PUBLISH being handed to the router is large (the broker then checks it against its
    # subscribers' queue bounds: MessageQueuePeer.inbound_large). Set per PUBLISH.
    inbound_large = False

    def __init__(self, service: Any, client_id: str, clean: bool, details: dict) -> None:
        self.service = service
        self.client_id = client_id
        self.clean = clean
        self.transport_details = details
        self.wamp: Any = None            # the RouterSession
        self.conn: Any = None            # the MqttConnection while one is attached
        self.ended = False
        self.authid: str | None = None
        self.authrole: str | None = None
        self.authmethod: str | None = None
        self.will: codec.Will | None = None
        self.filters: dict[str, list[tuple[str, str]]] = {}   # filter -> its WAMP keys
        self.subs: dict[tuple[str, str], WampSub] = {}
        self.by_id: dict[int, WampSub] = {}
        self.inflight: OrderedDict[int, bytes] = OrderedDict()   # QoS 1 sent, not acked
        self.pending: deque[tuple[bytes, bytes, bool]] = deque()  # QoS 1 waiting for a slot
        self.pending_bytes = 0
        self.qos2: set[int] = set()      # incoming QoS 2 ids between PUBREC and PUBREL
        self._next_pid = 0
        self._request = 0
        # request -> (qos, pid, topic whose retained message goes, waiter for a will)
        self._acks: dict[int, tuple[int, int, str | None, AsyncResult | None]] = {}
        self._waits: dict[int, AsyncResult] = {}
        self._sub_info: dict[int, tuple[tuple[str, str], str, int, Any]] = {}
        self._auth: AsyncResult | None = None
        self._holding: list[tuple[bytes, bool]] | None = None
        self._encoding: deque | None = None      # events waiting for a dynamic encoder
        self.offline_since = 0.0
        self.quiet = Quiet()

    def __repr__(self) -> str:
        return f"<MqttSession {self.client_id!r}>"

    def who(self) -> str:
        return (f"mqtt client {self.client_id!r} ({self.transport_details.get('peer')}"
                f"{', session ' + str(self.wamp.id) if self.wamp is not None and self.wamp.id else ''})")

    # -- joining ------------------------------------------------------------------------------
    def authenticate(self, pkt: codec.Connect) -> int:
        """HELLO (and AUTHENTICATE) for this CONNECT on a new WAMP session; the CONNACK code.
        Blocks the calling (connection) greenlet until the router answers."""
        service = self.service
        self._auth = AsyncResult()
        self.wamp = service.router.attach(self, auth_config=service.auth_config)
        password: str | None = None
        authid: str | None
        if pkt.username is not None and pkt.password is not None:
            try:
                password = pkt.password.decode("utf-8")
            except UnicodeDecodeError:
                return codec.REFUSED_BAD_CREDENTIALS
            methods, authid = ["ticket"], pkt.username
        else:
            methods, authid = ["anonymous"], pkt.client_id or None
        # Crossbar's authextra: a dynamic authenticator sees who is connecting
        extra = {"mqtt": {"client_id": pkt.client_id, "will": pkt.will is not None,
                          "will_topic": pkt.will.topic if pkt.will else None}}
        self.wamp.receive(m.Hello(service.realm_name, _ROLES, authmethods=methods, authid=authid,
                                  authextra=extra))
        while True:
            try:
                answer = self._auth.get(timeout=AUTH_TIMEOUT)
            except gevent.Timeout:
                log.warning("%s: no answer from the router's authentication in %.0f s",
                            self.who(), AUTH_TIMEOUT)
                return codec.REFUSED_SERVER_UNAVAILABLE
            if isinstance(answer, m.Welcome) and self.wamp is not None:
                w = self.wamp
                self.authid, self.authrole, self.authmethod = w.authid, w.authrole, w.authmethod
                return codec.ACCEPTED
            if isinstance(answer, m.Challenge):
                if answer.method != "ticket" or password is None:
                    return codec.REFUSED_NOT_AUTHORIZED
                self._auth = AsyncResult()
                self.wamp.receive(m.Authenticate(password))
                continue
            # the router logged its ABORT already (one line per refusal)
            return _REFUSALS.get(getattr(answer, "reason", ""),
                                 codec.REFUSED_SERVER_UNAVAILABLE)

    def same_principal(self, other: MqttSession) -> bool:
        """Whether ``other`` (a newly authenticated CONNECT) may take this session over."""
        if (self.authrole, self.authmethod) != (other.authrole, other.authmethod):
            return False
        # anonymous sessions get a fresh authid each time: the role is all they have
        return self.authmethod == "anonymous" or self.authid == other.authid

    # -- connections --------------------------------------------------------------------------
    def attach(self, conn: Any, will: codec.Will | None) -> None:
        self.conn = conn
        self.will = will
        self.transport_details.update(conn.details)

    def resume(self) -> None:
        """After CONNACK on a resumed session: unacknowledged QoS 1 again (DUP), then queued."""
        conn = self.conn
        for pkt in self.inflight.values():
            conn.write(bytes((pkt[0] | 0x08,)) + pkt[1:])
        self._fill()

    def connection_lost(self, conn: Any, abnormal: bool) -> None:
        """The connection ended; ``abnormal``: not by DISCONNECT, not taken over."""
        if self.conn is not conn:
            return
        self.conn = None
        will, self.will = self.will, None
        if abnormal and will is not None and not self.ended:
            # Before a clean session leaves: a dynamic authorizer may still be deciding.
            done = AsyncResult()
            self._publish(will.topic, will.payload, will.qos, will.retain, 0, will_done=done)
            done.wait(SUBSCRIBE_TIMEOUT)
        if self.clean or self.ended:
            self.end()
        else:
            self.offline_since = time.monotonic()
            self.service.sessions.went_offline(self)

    def end(self) -> None:
        """The session is over: its WAMP session leaves the realm, it leaves the store."""
        if self.ended:
            self.service.sessions.remove(self)
            return
        self.ended = True
        self.service.sessions.remove(self)
        self.inflight.clear()
        self.pending.clear()
        self._encoding = None
        wamp, self.wamp = self.wamp, None
        if wamp is not None:
            wamp.detach()
        conn = self.conn
        if conn is not None:
            conn.close()

    # -- Peer contract (the router calls these) -------------------------------------------------
    def send(self, msg: Any) -> None:
        t = type(msg)
        if t is m.Event:
            self._event(msg)
        elif t is m.Published:
            ack = self._acks.pop(msg.request, None)
            if ack is not None:
                self._acked(ack, None)
        elif t is m.Subscribed:
            self._subscribed(msg.request, msg.subscription)
        elif t is m.Error:
            if msg.request_type == m.Publish.MESSAGE_TYPE:
                ack = self._acks.pop(msg.request, None)
                if ack is not None:
                    self._acked(ack, msg)
            else:
                self._sub_info.pop(msg.request, None)
                waiter = self._waits.pop(msg.request, None)
                if waiter is not None:
                    waiter.set(msg)
        elif t is m.Unsubscribed:
            if msg.request == 0 and msg.subscription is not None:
                self._revoked(msg.subscription)
        elif t in (m.Welcome, m.Abort, m.Challenge):
            if self._auth is not None and not self._auth.ready():
                self._auth.set(msg)
        elif t is m.Goodbye:
            # The router ends the session (killed, node shutdown): answer as a client would,
            # after the router's own call stack; close() follows.
            gevent.get_hub().loop.run_callback(self._goodbye)

    def close(self) -> None:
        """The router dropped this session (killed, shut down, refused, protocol violation):
        its state is closed already; the MQTT session ends (no will: the client did nothing
        wrong) and its connection closes."""
        if self._auth is not None and not self._auth.ready():
            self._auth.set(m.Abort("wamp.error.canceled"))
        if not self.ended:
            self.end()

    def close_going_away(self) -> None:
        self.close()

    def _goodbye(self) -> None:
        wamp = self.wamp
        if wamp is not None:
            wamp.receive(m.Goodbye("wamp.close.goodbye_and_out"))

    # -- client -> router ---------------------------------------------------------------------
    def _next_request(self) -> int:
        self._request = self._request + 1 if self._request < 2 ** 53 else 1
        return self._request

    def on_publish(self, first: int, body: bytes) -> None:
        topic, qos, pid, payload = codec.parse_publish(first, body)
        check_topic_name(topic)
        if qos == 2:
            if pid in self.qos2:
                self.conn.write(codec.pubrec(pid))   # a resent duplicate: delivered once
                return
            self.qos2.add(pid)
        self._publish(topic, payload, qos, bool(first & 1), pid)

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool, pid: int,
                 will_done: AsyncResult | None = None) -> None:
        service = self.service
        route = service.inbound(topic)
        if type(route) is str:
            self.quiet.warn("%s: PUBLISH to %r dropped: %s", self.who(), topic[:200], route)
            self._ack_now(qos, pid)
            if will_done is not None:
                will_done.set()
            return
        uri, mapping = route
        clear = None
        if retain and not payload:
            # MQTT-3.3.1-10/11: delivered as usual, and the topic's retained message goes
            options: dict = {}
            clear, retain = uri, False
        else:
            try:
                options = mapping.to_wamp(uri, topic, payload)
            except PayloadError as e:
                self.quiet.warn("%s: PUBLISH to %r dropped: %s", self.who(), topic[:200], e)
                self._ack_now(qos, pid)
                if will_done is not None:
                    will_done.set()
                return
        wamp = self.wamp
        if wamp is None:
            if will_done is not None:
                will_done.set()
            return
        request = self._next_request()
        ack = bool(qos or clear or will_done)
        if ack:
            self._acks[request] = (qos, pid, clear, will_done)
        global _publishing_qos
        outer, _publishing_qos = _publishing_qos, qos
        try:
            # MQTT delivers a client's messages to its own subscriptions too: exclude_me false
            msg = m.Publish(request, uri, acknowledge=ack or None, exclude_me=False,
                            retain=retain or None, **options)
            conn = self.conn
            if conn is not None:
                conn.deliver(wamp, msg, len(payload))
            else:
                self.inbound_large = False   # a will: at most max_message_size
                wamp.receive(msg)   # its connection is gone
        finally:
            _publishing_qos = outer

    def _ack_now(self, qos: int, pid: int) -> None:
        conn = self.conn
        if conn is None or not qos:
            return
        conn.write(codec.puback(pid) if qos == 1 else codec.pubrec(pid))

    def _acked(self, ack: tuple, error: Any) -> None:
        qos, pid, clear, will_done = ack
        if will_done is not None:
            will_done.set()
        if error is not None:
            self.quiet.warn("%s: PUBLISH refused by the router: %s %s", self.who(), error.error,
                            (error.args or [""])[0])
        elif clear is not None and not self.ended:
            self.service.realm.broker.state.forget_retained(clear)
        self._ack_now(qos, pid)

    def on_pubrel(self, pid: int) -> None:
        self.qos2.discard(pid)
        self.conn.write(codec.pubcomp(pid))

    def on_subscribe(self, body: bytes) -> None:
        pid, items = codec.parse_subscribe(body)
        for topic_filter, _ in items:
            check_filter(topic_filter)
        codes = []
        self._holding = []   # events wait until the SUBACK is out (retained ones included)
        try:
            for topic_filter, qos in items:
                codes.append(self._subscribe_one(topic_filter, min(qos, 1)))
            conn = self.conn
            if conn is not None:
                conn.write(codec.suback(pid, codes))
        finally:
            held, self._holding = self._holding, None
            for data, droppable in held:
                self._out(data, droppable)

    def _subscribe_one(self, topic_filter: str, qos: int) -> int:
        p = plan(topic_filter)
        keys = []
        if not self._wamp_subscribe(p.required, topic_filter, qos, p):
            return codec.SUBACK_FAILURE
        keys.append(p.required)
        if p.optional is not None and self._wamp_subscribe(p.optional, topic_filter, qos, None):
            keys.append(p.optional)
        self.filters[topic_filter] = keys
        return qos

    def _wamp_subscribe(self, key: tuple[str, str], topic_filter: str, qos: int,
                        p: FilterPlan | None) -> bool:
        """Subscribe (again) and register the filter on SUBSCRIBED; False when refused."""
        wamp = self.wamp
        if wamp is None:
            return False
        request = self._next_request()
        waiter = AsyncResult()
        self._waits[request] = waiter
        self._sub_info[request] = (key, topic_filter, qos, p.check if p is not None else None)
        # get_retained: an MQTT subscription always gets the topic's retained messages
        wamp.receive(m.Subscribe(request, key[0], match=key[1], get_retained=True))
        try:
            answer = waiter.get(timeout=SUBSCRIBE_TIMEOUT)
        except gevent.Timeout:
            self._waits.pop(request, None)
            self._sub_info.pop(request, None)
            return False
        if isinstance(answer, m.Error):
            if p is not None:   # not for the best-effort parent level of 'a/#'
                log.info("%s: SUBSCRIBE %r refused: %s", self.who(), topic_filter[:200],
                         answer.error)
            return False
        return True

    def _subscribed(self, request: int, sub_id: int) -> None:
        info = self._sub_info.pop(request, None)
        waiter = self._waits.pop(request, None)
        if info is None:
            return
        key, topic_filter, qos, check = info
        sub = self.subs.get(key)
        if sub is None or sub.id != sub_id:
            sub = WampSub(key, sub_id)
            self.subs[key] = sub
            self.by_id[sub_id] = sub
        sub.refs[topic_filter] = (qos, check)
        sub.update()
        if waiter is not None:
            waiter.set(True)

    def on_unsubscribe(self, body: bytes) -> None:
        pid, filters = codec.parse_unsubscribe(body)
        for topic_filter in filters:
            check_filter(topic_filter)
        for topic_filter in filters:
            for key in self.filters.pop(topic_filter, ()):
                self._unref(key, topic_filter)
        self.conn.write(codec.unsuback(pid))

    def _unref(self, key: tuple[str, str], topic_filter: str) -> None:
        sub = self.subs.get(key)
        if sub is None:
            return
        sub.refs.pop(topic_filter, None)
        if sub.refs:
            sub.update()
            return
        del self.subs[key]
        self.by_id.pop(sub.id, None)
        if self.wamp is not None:
            self.wamp.receive(m.Unsubscribe(self._next_request(), sub.id))

    def _revoked(self, sub_id: int) -> None:
        sub = self.by_id.pop(sub_id, None)
        if sub is not None:
            self.subs.pop(sub.key, None)
            for topic_filter in sub.refs:
                keys = self.filters.get(topic_filter)
                if keys and sub.key in keys:
                    keys.remove(sub.key)

    def on_puback(self, pid: int) -> None:
        if self.inflight.pop(pid, None) is not None:
            self._fill()

    # -- router -> client ---------------------------------------------------------------------
    def _event(self, ev: m.Event) -> None:
        sub = self.by_id.get(ev.subscription)
        if sub is None:
            return
        uri = ev.topic or sub.key[0]
        qos = sub.qos_for(uri) if sub.checked else sub.qos
        if qos < 0:
            return
        if _publishing_qos is not None and _publishing_qos < qos and not ev.retained:
            qos = _publishing_qos
        if self._encoding is not None:
            # a dynamic encoder is busy: later events wait behind it (order is kept)
            self._queue_encode(ev, uri, qos)
            return
        cached = ev._serialized.get(self.service)
        if cached is None:
            route = self.service.outbound(uri)
            if type(route) is str:
                self.quiet.warn("%s: event on %r dropped: %s", self.who(), uri[:200], route)
                return
            mapping, topic_part = route
            if mapping.blocking:
                self._queue_encode(ev, uri, qos)
                return
            try:
                payload = mapping.to_mqtt(uri, uri_to_name(uri), ev)
            except PayloadError as e:
                self.quiet.warn("%s: event on %r dropped: %s", self.who(), uri[:200], e)
                return
            cached = self._cache(ev, topic_part, payload)
        self._deliver(cached, qos)

    def _cache(self, ev: m.Event, topic_part: bytes, payload: bytes) -> tuple:
        retain = bool(ev.retained)
        # (QoS 0 packet, topic field, payload, retain): one per EVENT, shared by its subscribers
        cached = (codec.publish(topic_part, payload, 0, retain), topic_part, payload, retain)
        ev._serialized[self.service] = cached
        return cached

    def _deliver(self, cached: tuple, qos: int) -> None:
        if len(cached[0]) > self.service.max_queue_bytes:
            # bigger than the whole outgoing queue: sent, it would close the connection
            self.quiet.warn("%s: message of %d bytes dropped: more than max_queue_bytes "
                            "(%d)", self.who(), len(cached[0]), self.service.max_queue_bytes)
            return
        if qos == 0:
            if self.conn is not None:
                self._out(cached[0], True)
            return
        if (self.conn is not None and not self.pending
                and len(self.inflight) < self.service.max_inflight):
            self._send_qos1(cached[1], cached[2], cached[3])
            return
        size = len(cached[2])
        if (len(self.pending) >= self.service.max_queued
                or self.pending_bytes + size > self.service.max_queued_bytes):
            self.quiet.warn("%s: QoS 1 message dropped: %d queued for the client (%d bytes), "
                            "the most its session keeps", self.who(), len(self.pending),
                            self.pending_bytes)
            return
        self.pending.append((cached[1], cached[2], cached[3]))
        self.pending_bytes += size

    def _send_qos1(self, topic_part: bytes, payload: bytes, retain: bool) -> None:
        pid = self._next_pid
        while True:
            pid = pid + 1 if pid < 65535 else 1
            if pid not in self.inflight:
                break
        self._next_pid = pid
        pkt = codec.publish(topic_part, payload, 1, retain, pid)
        self.inflight[pid] = pkt
        self._out(pkt, False)

    def _fill(self) -> None:
        limit = self.service.max_inflight
        while self.pending and self.conn is not None and len(self.inflight) < limit:
            topic_part, payload, retain = self.pending.popleft()
            self.pending_bytes -= len(payload)
            self._send_qos1(topic_part, payload, retain)

    def _out(self, data: bytes, droppable: bool) -> None:
        holding = self._holding
        if holding is not None:
            if droppable and len(holding) >= self.service.max_queued:
                self.quiet.warn("%s: QoS 0 message dropped: %d wait for a SUBACK",
                                self.who(), len(holding))
                return
            holding.append((data, droppable))
            return
        conn = self.conn
        if conn is None:
            return
        if droppable:
            if not conn.write_droppable(data):
                self.quiet.warn("%s: QoS 0 message dropped: the client reads too slowly "
                                "(its outgoing queue is full)", self.who())
        else:
            conn.write(data)

    # dynamic encoders: a call per event, in a greenlet, in order
    def _queue_encode(self, ev: m.Event, uri: str, qos: int) -> None:
        if self._encoding is None:
            self._encoding = deque()
            gevent.spawn(self._encode_loop)
        if len(self._encoding) >= self.service.max_queued:
            self.quiet.warn("%s: event on %r dropped: %d events wait for the dynamic encoder",
                            self.who(), uri[:200], len(self._encoding))
            return
        self._encoding.append((ev, uri, qos))

    def _encode_loop(self) -> None:
        queue = self._encoding
        while queue and self._encoding is queue:
            ev, uri, qos = queue.popleft()
            cached = ev._serialized.get(self.service)
            if cached is None:
                cached = self._encode(ev, uri)
            if cached is not None and self._encoding is queue:
                self._deliver(cached, qos)
        if self._encoding is queue:
            self._encoding = None

    def _encode(self, ev: m.Event, uri: str) -> tuple | None:
        # Subscribers of one event share its encoding: the first one calls, the others wait.
        key = (self.service, "pending")
        waiter = ev._serialized.get(key)
        if waiter is not None:
            return waiter.get()
        waiter = AsyncResult()
        ev._serialized[key] = waiter
        result = None
        try:
            route = self.service.outbound(uri)
            if type(route) is str:
                self.quiet.warn("%s: event on %r dropped: %s", self.who(), uri[:200], route)
                return None
            mapping, topic_part = route
            try:
                payload = mapping.to_mqtt(uri, uri_to_name(uri), ev)
            except PayloadError as e:
                self.quiet.warn("%s: event on %r dropped: %s", self.who(), uri[:200], e)
                return None
            result = self._cache(ev, topic_part, payload)
            return result
        finally:
            waiter.set(result)


class SessionStore:
    """The MQTT sessions of one transport by client id; offline persistent ones bounded."""

    def __init__(self, max_offline: int) -> None:
        self.max_offline = max_offline
        self.by_client: dict[str, MqttSession] = {}
        self.offline: OrderedDict[MqttSession, None] = OrderedDict()

    def get(self, client_id: str) -> MqttSession | None:
        return self.by_client.get(client_id)

    def put(self, session: MqttSession) -> None:
        self.by_client[session.client_id] = session
        self.offline.pop(session, None)

    def remove(self, session: MqttSession) -> None:
        if self.by_client.get(session.client_id) is session:
            del self.by_client[session.client_id]
        self.offline.pop(session, None)

    def went_offline(self, session: MqttSession) -> None:
        self.offline[session] = None
        while len(self.offline) > self.max_offline:
            oldest = next(iter(self.offline))
            log.warning("%s: persistent session discarded: more than %d sessions are offline "
                        "(max_offline_sessions)", oldest.who(), self.max_offline)
            oldest.end()

    def close_all(self) -> None:
        for session in list(self.by_client.values()):
            session.end()


def check_will(will: codec.Will | None) -> None:
    if will is not None:
        try:
            check_topic_name(will.topic)
        except Malformed as e:
            raise Malformed(f"will: {e}") from None


__all__ = ["MqttSession", "SessionStore", "Codec", "check_will"]
