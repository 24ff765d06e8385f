"""The Redis backplane: N geonode processes (one machine or many) as one router per realm.

Every node keeps a replica of the other nodes' sessions, subscriptions and registrations (the
"view", in ``geonode.cluster.state``'s tables) and sends over Redis pub/sub only what another
node must see: changes of its own state (to every node), publications some other node has
subscribers for (or retains / records in history), and the messages of calls between a caller
on one node and a callee on another (to that node only). Redis stores nothing: a restarted,
empty Redis loses nothing the nodes cannot re-announce. docs/scaling.md is the user's guide.

Messages (msgpack tuples; ``link.py`` batches them), to all nodes:
  H                                   heartbeat (a node silent for ``timeout`` is gone)
  W                                   "send me your state" (a node that (re)connected)
  B ... E                             a node's whole state follows / ends (replaces its view)
  G                                   a node stops (its sessions already left)
  J realm sid details restricted      a session joined;     L realm sid: it left
  S/U realm sid uri match             subscribed / unsubscribed
  R realm sid uri match invoke concurrency born / X realm sid uri match: (un)registered
  T realm sid testaments              a session's testaments (published by a survivor)
  A realm topic publication publish disclose: a retained event (in a state dump)
  P realm publication publish disclose publisher: a publication
to one node (its inbox):
  I realm callee request registration args kwargs payload timeout receive_progress caller
    caller_authid caller_authrole procedure enc_algo enc_key enc_serializer
                                                      a call to its callee
  N realm interrupt                                   a cancel for its callee
  Y realm request args kwargs progress payload enc_algo enc_key enc_serializer
                                                      its callee's result to our call
  Z realm error                                       its callee's error
  K realm sid reason message                          kill one of its sessions (meta API)
  V/Q realm sid uri match reason                      revoke a registration / subscription
"""

from __future__ import annotations

import functools
import logging
import os
import time
import uuid
from typing import Any

import gevent
from autobahn.wamp import message as m

from geonode.cluster.link import RedisLink
from geonode.cluster.state import (
    ClusterBrokerState,
    ClusterDealerState,
    ClusterSessionState,
    NodeCaller,
    RemoteSession,
)
from geonode.config.backplane import BackplaneConfig
from geonode.router.errors import CANCELED, PROCEDURE_ALREADY_EXISTS, UNAVAILABLE
from geonode.transport.queue import QUANTUM

log = logging.getLogger("geonode.cluster")

_INVOCATION = m.Invocation.MESSAGE_TYPE
# view changes from a node we have no state of yet: ask it for its state instead
_VIEW = frozenset("JLSURXTAE")


class NodeView:
    __slots__ = ("id", "last_seen", "sessions", "stale", "asked")

    def __init__(self, node_id: str) -> None:
        self.id = node_id
        self.last_seen = time.monotonic()
        self.sessions: dict[tuple[str, int], RemoteSession] = {}
        self.stale: set | None = None   # during a state dump: sessions not re-announced yet
        self.asked = 0.0


class _Publisher:
    """Another node's publisher, for history records and the publisher filters."""

    __slots__ = ("id", "authid", "authrole")

    def __init__(self, sid: int, authid: Any, authrole: Any) -> None:
        self.id, self.authid, self.authrole = sid, authid, authrole


class Backplane:
    def __init__(self, router: Any, cfg: BackplaneConfig, worker_path: str = "") -> None:
        self.router = router
        self.cfg = cfg
        self.node_id = uuid.uuid4().hex[:16]
        self.realms: dict[str, Any] = {}
        self.nodes: dict[str, NodeView] = {}
        self.callers: dict[tuple[str, str], NodeCaller] = {}
        self.out_calls: dict[int, RemoteSession] = {}
        self._next_inv = int.from_bytes(os.urandom(4), "big")
        self._own_seen = time.monotonic()
        self.link = RedisLink(cfg, self.node_id, self._on_batch, self._on_up, self._on_down,
                              worker_path, getattr(router, "config_dir", None))
        self._hb: Any = None
        self._closed = False
        self._asked: dict[str, float] = {}   # unknown node -> when we asked for its state

    # -- wiring (Realm.__init__) -----------------------------------------------------------
    def session_state(self, realm: Any) -> ClusterSessionState:
        return ClusterSessionState(self._announce, realm.name)

    def broker_state(self, realm: Any) -> ClusterBrokerState:
        return ClusterBrokerState(self._announce, self.cfg.prefix, realm.name)

    def dealer_state(self, realm: Any) -> ClusterDealerState:
        return ClusterDealerState(self._announce, self.cfg.prefix, realm.name)

    def attach(self, realm: Any) -> None:
        self.realms[realm.name] = realm
        realm.broker.forward = functools.partial(self._forward_publication, realm.name)

    def start(self) -> None:
        self.link.start()
        self._hb = gevent.spawn(self._heartbeats)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._hb is not None:
            self._hb.kill(block=False)
        if self.link.up:
            self.link.send(self.link.all_channel, ("G",))
        self.link.stop()

    @property
    def up(self) -> bool:
        return self.link.up and self.link.has_room()

    def next_invocation_id(self) -> int:
        self._next_inv = self._next_inv + 1 if self._next_inv < 2**53 else 1
        return self._next_inv

    # -- sending ---------------------------------------------------------------------------
    def _announce(self, msg: tuple) -> None:
        # Lost while the link is down: a (re)connect sends the whole state anyway.
        self.link.send(self.link.all_channel, msg)

    def send_node(self, node: str, msg: tuple, on_lost: Any = None) -> bool:
        return self.link.send(self.link.channel_of(node), msg, on_lost)

    def _forward_publication(self, name: str, session: Any, publication: int,
                             msg: m.Publish, disclose: tuple | None, subs: list,
                             recorded: bool) -> None:
        """Broker.forward: to the other nodes when one of them has a subscriber, or every
        node must keep it (retained, event history)."""
        if not (msg.retain or recorded or any(sub.remote for sub in subs)):
            return
        self.link.send(self.link.all_channel,
                       ("P", name, publication, msg.marshal(),
                        list(disclose) if disclose else None,
                        session.id, session.authid, session.authrole))

    def to_callee(self, rs: RemoteSession, msg: Any) -> None:
        """What the dealer sends another node's callee."""
        realm = rs.realm
        if isinstance(msg, m.Invocation):
            inv_id = msg.request
            self.out_calls[inv_id] = rs
            text = f"the backplane cannot reach node {rs.node} now"
            # its fields, not a marshalled INVOCATION the callee's node would parse
            if not self.send_node(rs.node, (
                    "I", realm.name, rs.id, inv_id, msg.registration, msg.args, msg.kwargs,
                    msg.payload, msg.timeout, msg.receive_progress, msg.caller,
                    msg.caller_authid, msg.caller_authrole, msg.procedure, msg.enc_algo,
                    msg.enc_key, msg.enc_serializer),
                    lambda: self._fail_call(rs, inv_id, UNAVAILABLE, text)):
                self._fail_call(rs, inv_id, UNAVAILABLE, text)
        elif isinstance(msg, m.Interrupt):
            self.send_node(rs.node, ("N", realm.name, msg.marshal()))

    def _caller(self, node: str, realm: Any) -> NodeCaller:
        key = (node, realm.name)
        caller = self.callers.get(key)
        if caller is None:
            caller = self.callers[key] = NodeCaller(self, realm, node)
        return caller

    # -- the link's events -----------------------------------------------------------------
    def _on_up(self) -> None:
        now = time.monotonic()
        self._own_seen = now
        for node in self.nodes.values():
            node.last_seen = now   # give every node a full timeout to be heard again
        self._send_state(self.link.all_channel, fresh=True)
        self._announce(("W",))

    def _on_down(self) -> None:
        # Calls between nodes cannot finish now: ERROR rather than a wait without end.
        for inv_id, rs in list(self.out_calls.items()):
            self._fail_call(rs, inv_id, UNAVAILABLE, "the backplane lost Redis")
        self.out_calls.clear()
        for caller in list(self.callers.values()):
            self._drop_caller(caller)
        self.callers.clear()

    def _heartbeats(self) -> None:
        cfg = self.cfg
        while True:
            gevent.sleep(cfg.heartbeat)
            if not self.link.up:
                continue   # nobody is heard while we are cut off: forget no one for it
            now = time.monotonic()
            self.link.send(self.link.all_channel, ("H",))
            if now - self._own_seen > cfg.timeout:
                self._own_seen = now
                self.link.reset("our own heartbeats stopped coming back")
                continue
            for node in list(self.nodes.values()):
                if now - node.last_seen > cfg.timeout:
                    log.warning("backplane: node %s silent for %.1f s: forgetting its %d "
                                "sessions", node.id, now - node.last_seen, len(node.sessions))
                    self._forget(node, lost=True)

    # -- receiving -------------------------------------------------------------------------
    def _on_batch(self, sender: str, msgs: list) -> None:
        if sender == self.node_id:
            self._own_seen = time.monotonic()
            return
        node = self.nodes.get(sender)
        # A batch can hold thousands of publications: yield to the hub after QUANTUM of
        # work in a row, as a transport's reader does (order is kept: this greenlet is the
        # only one applying the other nodes' messages).
        t_yield = time.perf_counter() + QUANTUM
        for i, msg in enumerate(msgs):
            if i & 63 == 63 and time.perf_counter() > t_yield:
                gevent.sleep(0)
                t_yield = time.perf_counter() + QUANTUM
                node = self.nodes.get(sender)
            kind = msg[0]
            if node is None:
                if kind == "B":
                    node = self.nodes[sender] = NodeView(sender)
                    log.info("backplane: node %s joined the cluster", sender)
                elif kind in _VIEW or kind == "H":
                    self._ask_state(sender)
                    continue
            if node is not None:
                node.last_seen = time.monotonic()
            handler = self._handlers.get(kind)
            if handler is None:
                continue
            try:
                handler(self, sender, node, msg)
            except Exception:   # noqa: BLE001 - one bad message must not stop the others
                log.exception("backplane: could not apply a %r message from node %s", kind,
                              sender)

    def _ask_state(self, sender: str) -> None:
        # Once per timeout per node: its state dump takes a moment to arrive.
        node = self.nodes.get(sender)
        now = time.monotonic()
        if node is None:
            last = self._asked.get(sender, 0.0)
            if now - last < self.cfg.timeout:
                return
            self._asked[sender] = now
            if len(self._asked) > 10_000:
                self._asked.clear()
        self.send_node(sender, ("W",))

    def _realm(self, name: str) -> Any:
        return self.realms.get(name)

    def _h_heartbeat(self, sender, node, msg) -> None:
        pass

    def _h_want(self, sender, node, msg) -> None:
        self._send_state(self.link.channel_of(sender))

    def _h_begin(self, sender, node, msg) -> None:
        node.stale = set(node.sessions)
        if len(msg) > 1 and msg[1]:
            # It (re)connected: what it was to answer before may be lost with its link.
            for inv_id, rs in list(self.out_calls.items()):
                if rs.node == sender:
                    self._fail_call(rs, inv_id, UNAVAILABLE,
                                    f"node {sender} lost its backplane connection")

    def _h_end(self, sender, node, msg) -> None:
        stale, node.stale = node.stale or set(), None
        for key in stale:
            rs = node.sessions.get(key)
            realm = self._realm(key[0])
            if rs is not None and realm is not None:
                # It left while we could not hear its node: its leave is news here.
                self._drop_session(realm, node, rs, lost=False, meta=True)

    def _h_goodbye(self, sender, node, msg) -> None:
        log.info("backplane: node %s left the cluster", sender)
        self._forget(node, lost=False)

    def _h_join(self, sender, node, msg) -> None:
        _, name, sid, info, restricted = msg
        realm = self._realm(name)
        if realm is None:
            return
        key = (name, sid)
        if node.stale is not None:
            node.stale.discard(key)
        rs = node.sessions.get(key)
        if rs is not None:
            # re-announced (a state dump): its subscriptions and registrations follow
            self._clear_session(realm, rs)
            rs.info = info
            return
        rs = RemoteSession(self, realm, sender, sid, info, bool(restricted))
        node.sessions[key] = rs
        realm.session_state.remote[sid] = rs

    def _session_of(self, node, name: str, sid: int) -> tuple[Any, RemoteSession | None]:
        realm = self._realm(name)
        if realm is None:
            return None, None
        return realm, node.sessions.get((name, sid))

    def _h_leave(self, sender, node, msg) -> None:
        realm, rs = self._session_of(node, msg[1], msg[2])
        if rs is not None:
            self._drop_session(realm, node, rs, lost=False, meta=False)

    def _h_subscribe(self, sender, node, msg) -> None:
        realm, rs = self._session_of(node, msg[1], msg[2])
        if rs is not None:
            realm.broker.state.add_remote(rs, msg[3], msg[4])

    def _h_unsubscribe(self, sender, node, msg) -> None:
        realm, rs = self._session_of(node, msg[1], msg[2])
        if rs is not None:
            realm.broker.state.drop_remote(rs, msg[3], msg[4])

    def _h_register(self, sender, node, msg) -> None:
        _, name, sid, uri, match, invoke, _concurrency, born = msg
        realm, rs = self._session_of(node, name, sid)
        if rs is None:
            return
        dealer = realm.dealer
        reg = dealer.state.lookup(uri, match)
        if reg is not None and reg.callees and (
                reg.invoke == "single" or invoke == "single" or reg.invoke != invoke):
            # Two nodes registered one URI in ways that cannot share (at once, or while
            # cut off from each other): the older registration wins, on every node alike
            # (ties: the smaller node ID); the loser's node revokes its own callees.
            if (born, sender) < (reg.born, self.node_id):
                log.warning("backplane: %r registered on node %s first: revoking this "
                            "node's registration", uri, sender)
                for callee in list(reg.callees):
                    dealer.remove_callee(reg, callee, PROCEDURE_ALREADY_EXISTS)
            else:
                return
        realm.dealer.state.add_remote(rs, uri, match, invoke, born)

    def _h_unregister(self, sender, node, msg) -> None:
        realm, rs = self._session_of(node, msg[1], msg[2])
        if rs is not None:
            realm.dealer.state.drop_remote(rs, msg[3], msg[4])

    def _h_testaments(self, sender, node, msg) -> None:
        realm, rs = self._session_of(node, msg[1], msg[2])
        if rs is not None:
            rs.testaments = {scope: list(pubs) for scope, pubs in (msg[3] or {}).items()}

    def _h_retained(self, sender, node, msg) -> None:
        _, name, topic, publication, publish, disclose = msg
        realm = self._realm(name)
        if realm is None or topic in realm.broker.state.retained:
            return
        realm.broker.state.retain(topic, {"publication": publication,
                                          "publish": m.Publish.parse(publish),
                                          "disclose": tuple(disclose) if disclose else None})

    def _h_publish(self, sender, node, msg) -> None:
        _, name, publication, publish, disclose, sid, authid, authrole = msg
        realm = self._realm(name)
        if realm is None:
            return
        pub = m.Publish.parse(publish)
        realm.broker.dispatch(_Publisher(sid, authid, authrole), publication, pub, pub.topic,
                              tuple(disclose) if disclose else None)

    def _h_invoke(self, sender, node, msg) -> None:
        (_, name, callee_sid, request, registration, args, kwargs, payload, timeout, progress,
         caller_sid, caller_authid, caller_authrole, procedure, enc_algo, enc_key,
         enc_ser) = msg
        realm = self._realm(name)
        if realm is None:
            return
        # What Invocation.parse would have refused (its constructor's asserts vanish
        # under -O): a bad one is dropped here, never sent on to the callee.
        if not (type(request) is int and type(registration) is int
                and (args is None or type(args) is list)
                and (kwargs is None or type(kwargs) is dict)
                and (payload is None or type(payload) is bytes)):
            raise ValueError("an INVOCATION with fields of the wrong types")
        inv = m.Invocation(request, registration, args=args, kwargs=kwargs, payload=payload,
                           timeout=timeout, receive_progress=progress, caller=caller_sid,
                           caller_authid=caller_authid, caller_authrole=caller_authrole,
                           procedure=procedure, enc_algo=enc_algo, enc_key=enc_key,
                           enc_serializer=enc_ser)
        caller = self._caller(sender, realm)
        callee = realm.sessions.get(callee_sid)
        reg = realm.dealer.state.get(inv.registration)
        if callee is None or reg is None or callee not in reg.callees:
            caller.send(m.Error(_INVOCATION, inv.request, CANCELED,
                                ["callee disconnected from in-flight request"]))
            return
        realm.dealer.invoke_remote(caller, callee, reg, inv)

    def _h_interrupt(self, sender, node, msg) -> None:
        realm = self._realm(msg[1])
        if realm is None:
            return
        intr = m.Interrupt.parse(msg[2])
        caller = self.callers.get((sender, realm.name))
        if caller is not None and intr.request in caller.calls:
            realm.dealer.cancel(caller, m.Cancel(intr.request, mode=intr.mode))

    def _h_result(self, sender, node, msg) -> None:
        realm = self._realm(msg[1])
        if realm is None:
            return
        _, _, request, args, kwargs, progress, payload, enc_algo, enc_key, enc_ser = msg
        rs = self.out_calls.get(request) if progress else self.out_calls.pop(request, None)
        if rs is not None:
            realm.dealer.yield_(rs, m.Yield(request, args=args, kwargs=kwargs, payload=payload,
                                            progress=progress, enc_algo=enc_algo,
                                            enc_key=enc_key, enc_serializer=enc_ser))

    def _h_error(self, sender, node, msg) -> None:
        realm = self._realm(msg[1])
        if realm is None:
            return
        err = m.Error.parse(msg[2])
        rs = self.out_calls.pop(err.request, None)
        if rs is not None:
            realm.dealer.error(rs, err)

    def _h_kill(self, sender, node, msg) -> None:
        realm = self._realm(msg[1])
        s = realm.sessions.get(msg[2]) if realm is not None else None
        if s is not None:
            s.kill(msg[3], msg[4])

    def _h_revoke_reg(self, sender, node, msg) -> None:
        _, name, sid, uri, match, reason = msg
        realm = self._realm(name)
        s = realm.sessions.get(sid) if realm is not None else None
        reg = realm.dealer.state.lookup(uri, match) if s is not None else None
        if reg is not None and s in reg.callees:
            realm.dealer.remove_callee(reg, s, reason)

    def _h_revoke_sub(self, sender, node, msg) -> None:
        _, name, sid, uri, match, reason = msg
        realm = self._realm(name)
        s = realm.sessions.get(sid) if realm is not None else None
        sub = realm.broker.state.lookup(uri, match) if s is not None else None
        if sub is not None and s in sub.subscribers:
            realm.broker.remove_subscriber(sub, s, reason)

    _handlers = {
        "H": _h_heartbeat, "W": _h_want, "B": _h_begin, "E": _h_end, "G": _h_goodbye,
        "J": _h_join, "L": _h_leave, "S": _h_subscribe, "U": _h_unsubscribe,
        "R": _h_register, "X": _h_unregister, "T": _h_testaments, "A": _h_retained,
        "P": _h_publish, "I": _h_invoke, "N": _h_interrupt, "Y": _h_result, "Z": _h_error,
        "K": _h_kill, "V": _h_revoke_reg, "Q": _h_revoke_sub,
    }

    # -- this node's state, whole ----------------------------------------------------------
    def _send_state(self, channel: str, fresh: bool = False) -> None:
        """This node's whole state to ``channel``; ``fresh``: after this node (re)connected."""
        send = self.link.send
        send(channel, ("B", fresh))
        for name, realm in self.realms.items():
            for s in list(realm.sessions.values()):
                send(channel, ("J", name, s.id, _details(s), bool(s.restricted)))
                for sub in s.subscriptions:
                    send(channel, ("S", name, s.id, sub.uri, sub.match))
                for reg in s.registrations:
                    send(channel, ("R", name, s.id, reg.uri, reg.match, reg.invoke,
                                   reg.limits.get(s, 0), reg.born))
                if s.testaments:
                    send(channel, ("T", name, s.id, _testaments(s)))
            for topic, ev in list(realm.broker.state.retained.items()):
                send(channel, ("A", name, topic, ev["publication"], ev["publish"].marshal(),
                               list(ev["disclose"]) if ev["disclose"] else None))
        send(channel, ("E",))

    def testaments_changed(self, realm: Any, session: Any) -> None:
        self._announce(("T", realm.name, session.id, _testaments(session)))

    # -- forgetting ------------------------------------------------------------------------
    def _forget(self, node: NodeView, lost: bool) -> None:
        self.nodes.pop(node.id, None)
        for (name, _sid), rs in list(node.sessions.items()):
            realm = self._realm(name)
            if realm is not None:
                self._drop_session(realm, node, rs, lost=lost, meta=lost)
        for key in [k for k in self.callers if k[0] == node.id]:
            self._drop_caller(self.callers.pop(key))
        for inv_id, rs in list(self.out_calls.items()):
            if rs.node == node.id:
                self._fail_call(rs, inv_id, CANCELED, f"node {node.id} of the callee is gone")

    def _drop_caller(self, caller: NodeCaller) -> None:
        dealer = caller.realm.dealer
        for inv in list(caller.calls.values()):
            dealer._finish(inv)
            dealer._interrupt(inv, "killnowait")

    def _fail_call(self, rs: RemoteSession, inv_id: int, error: str, text: str) -> None:
        self.out_calls.pop(inv_id, None)
        if inv_id in rs.invocations:
            rs.realm.dealer.error(rs, m.Error(_INVOCATION, inv_id, error, [text]))

    def _clear_session(self, realm: Any, rs: RemoteSession) -> None:
        for sub in list(rs.subscriptions):
            realm.broker.state.drop_remote(rs, sub.uri, sub.match)
        for reg in list(rs.registrations):
            realm.dealer.state.drop_remote(rs, reg.uri, reg.match)

    def _drop_session(self, realm: Any, node: NodeView, rs: RemoteSession, lost: bool,
                      meta: bool) -> None:
        """``rs`` is gone. ``lost``: its node died, so this node delivers its testaments to
        its own subscribers (every survivor does, so each subscriber gets them once);
        ``meta``: and the meta event of its leave (its node could not send it)."""
        node.sessions.pop((realm.name, rs.id), None)
        realm.session_state.remote.pop(rs.id, None)
        self._clear_session(realm, rs)
        for inv_id in list(rs.invocations):
            self._fail_call(rs, inv_id, CANCELED, "callee disconnected from in-flight request")
        broker = realm.broker
        if lost:
            for scope in ("detached", "destroyed"):
                for publish in rs.testaments.pop(scope, ()):
                    broker.publish(realm.service, m.Publish.parse(publish), local=True)
        if meta and not rs.restricted and realm.meta_enabled and \
                broker.has_subscribers("wamp.session.on_leave"):
            broker.publish(realm.service, m.Publish(0, "wamp.session.on_leave", args=[rs.id]),
                           local=True)


def _details(session: Any) -> dict:
    from geonode.cluster.state import announced_details

    return announced_details(session)


def _testaments(session: Any) -> dict:
    return {scope: [p.marshal() for p in pubs] for scope, pubs in session.testaments.items()}
