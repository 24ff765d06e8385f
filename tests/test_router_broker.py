"""Router core, in process: the broker (pub/sub, matching, filters, retention, revocation)."""

from __future__ import annotations

import pytest
from autobahn.wamp import message as m
from autobahn.wamp import role
from support.router import ALL, Client, make_router, realm

pytestmark = pytest.mark.inprocess


def _clients(n, router=None, **kw):
    router = router or make_router()
    return router, [Client(router, **kw).joined() for _ in range(n)]


def test_exact_prefix_wildcard_and_one_event_per_subscription():
    router, (pub, a, b, c) = _clients(4)
    sa = a.subscribe("com.x.y")
    sb = b.subscribe("com.x.", match="prefix")
    sc = c.subscribe("com..y", match="wildcard")
    b2 = Client(router).joined()
    assert b2.subscribe("com.x.", match="prefix") == sb  # same subscription, second subscriber
    pub.publish("com.x.y", 1, 2)
    ea, eb, ec, eb2 = a.take(m.Event), b.take(m.Event), c.take(m.Event), b2.take(m.Event)
    assert (ea.subscription, ea.args, ea.topic) == (sa, [1, 2], None)
    assert (eb.subscription, eb.topic) == (eb2.subscription, "com.x.y") == (sb, "com.x.y")
    assert (ec.subscription, ec.topic) == (sc, "com.x.y")
    assert ea.publication == eb.publication == ec.publication
    pub.publish("com.x.z.w")
    assert b.take(m.Event).topic == "com.x.z.w"
    a.none(), c.none()
    # the router builds one EVENT object per subscription and hands it to every subscriber
    sent = []
    for cl in (b, b2):
        cl.peer.send = sent.append
    pub.publish("com.x.q")
    assert len(sent) == 2 and sent[0] is sent[1]


def test_publisher_exclusion_and_ack():
    router, (p, s) = _clients(2)
    p.subscribe("t.a")
    s.subscribe("t.a")
    r = p.publish("t.a", acknowledge=True)
    assert p.take(m.Published).request == r
    s.take(m.Event)
    p.publish("t.a", exclude_me=False)
    p.take(m.Event), s.take(m.Event)


def test_black_and_white_listing():
    roles = [{"name": "anonymous", "permissions": [{"uri": "", "match": "prefix", "allow": ALL}]},
             {"name": "admin", "permissions": [{"uri": "", "match": "prefix", "allow": ALL}]}]
    router = make_router(realm(roles=roles))
    p = Client(router).joined()
    a = Client(router, auth={"authid": "alice", "authrole": "anonymous"}).joined()
    b = Client(router, auth={"authid": "bob", "authrole": "admin"}).joined()
    c = Client(router, auth={"authid": "carol", "authrole": "anonymous"}).joined()
    for cl in (a, b, c):
        cl.subscribe("t")

    def got():
        out = set()
        for cl, name in ((a, "a"), (b, "b"), (c, "c")):
            if cl.messages:
                cl.take(m.Event)
                out.add(name)
        return out

    p.publish("t", exclude=[a.id])
    assert got() == {"b", "c"}
    p.publish("t", eligible=[a.id, b.id], exclude=[b.id])
    assert got() == {"a"}
    p.publish("t", exclude_authid=["bob"])
    assert got() == {"a", "c"}
    p.publish("t", eligible_authid=["bob", "carol"])
    assert got() == {"b", "c"}
    p.publish("t", exclude_authrole=["anonymous"])
    assert got() == {"b"}
    p.publish("t", eligible_authrole=["anonymous"], exclude_authid=["carol"])
    assert got() == {"a"}


def test_publisher_disclosure_by_role():
    roles = [{"name": "anonymous", "permissions": [
        {"uri": "open.", "match": "prefix", "allow": ALL, "disclose": {"publisher": True}},
        {"uri": "closed.", "match": "prefix", "allow": ALL}]}]
    router = make_router(realm(roles=roles))
    p, s = Client(router).joined(), Client(router).joined()
    s.subscribe("open.t")
    s.subscribe("closed.t")
    p.publish("open.t")
    e = s.take(m.Event)
    assert (e.publisher, e.publisher_authrole) == (p.id, "anonymous")
    assert e.publisher_authid == p.session.authid
    p.publish("closed.t")
    assert s.take(m.Event).publisher is None


def test_event_retention():
    router, (p, s, s2) = _clients(3)
    p.publish("r.t", "old", retain=True)
    p.publish("r.t", "last", retain=True)
    p.publish("r.u", "other", retain=True)
    p.publish("r.t", "not retained")
    sid = s.subscribe("r.t", get_retained=True)
    e = s.take(m.Event)
    assert (e.subscription, e.args, e.retained) == (sid, ["last"], True)
    s.subscribe("r.z", get_retained=True)
    s.none()
    s2.subscribe("r.", match="prefix", get_retained=True)
    got = sorted((e.topic, e.args[0]) for e in (s2.take(m.Event), s2.take(m.Event)))
    assert got == [("r.t", "last"), ("r.u", "other")]
    # without get_retained nothing is replayed
    Client(router).joined().subscribe("r.t")
    # retained events obey the original publication's filters
    p.publish("r.v", "x", retain=True, exclude_authrole=["anonymous"])
    s.subscribe("r.v", get_retained=True)
    s.none()


def test_unsubscribe_and_errors():
    router, (a, b) = _clients(2)
    sid = a.subscribe("t.t")
    b.send(m.Unsubscribe(9, sid))  # b is not subscribed
    e = b.take(m.Error)
    assert (e.request, e.error) == (9, "wamp.error.no_such_subscription")
    a.send(m.Unsubscribe(7, sid))
    assert a.take(m.Unsubscribed).request == 7
    assert not router.realms["realm1"].broker.state.by_id
    a.send(m.Unsubscribe(8, sid))
    assert a.take(m.Error).error == "wamp.error.no_such_subscription"


def test_subscription_revocation():
    router, (admin, s) = _clients(2)
    sid = s.subscribe("rev.t")
    assert admin.meta("wamp.subscription.remove_subscriber", sid, s.id, reason="com.kicked") is None
    u = s.take(m.Unsubscribed)
    assert (u.request, u.subscription, u.reason) == (0, sid, "com.kicked")
    admin.publish("rev.t")
    s.none()
    # a subscriber that does not announce revocation is removed silently
    roles = dict(role.DEFAULT_CLIENT_ROLES)
    roles["subscriber"] = role.RoleSubscriberFeatures()
    s2 = Client(router).joined(roles=roles)
    sid = s2.subscribe("rev.t")
    admin.meta("wamp.subscription.remove_subscriber", sid, s2.id)
    s2.none()


def test_detach_frees_subscriptions():
    router, (a, b) = _clients(2)
    a.subscribe("d.t")
    a.subscribe("d.", match="prefix")
    b.subscribe("d.t")
    a.session.detach()
    st = router.realms["realm1"].broker.state
    assert len(st.by_id) == 1 and len(st.table) == 1
    b.session.detach()
    assert not st.by_id and not len(st.table)


def test_retained_events_are_bounded(monkeypatch):
    from geonode.router import state
    monkeypatch.setattr(state, "RETAINED_LIMIT", 3)
    router, (p,) = _clients(1)
    for i in range(5):
        p.publish(f"ret.t{i}", i, retain=True)
    p.publish("ret.t2", "again", retain=True)
    retained = router.realms["realm1"].broker.state.retained
    assert list(retained) == ["ret.t3", "ret.t4", "ret.t2"]


def test_payload_passthru_and_abort_from_joined_client():
    router, (p, s) = _clients(2)
    sid = s.subscribe("e2e.t")
    p.send(m.Publish(1, "e2e.t", payload=b"\x01opaque", enc_algo="cryptobox",
                     enc_serializer="json", enc_key="k1"))
    e = s.take(m.Event)
    assert (e.subscription, e.payload, e.enc_algo, e.enc_key, e.args) == (
        sid, b"\x01opaque", "cryptobox", "k1", None)
    s.send(m.Abort("wamp.close.normal"))
    assert s.peer.closed and s.messages == []
    assert s.id not in router.realms["realm1"].sessions
