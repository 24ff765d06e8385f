"""Router core, in process: the WAMP meta API and testaments."""

from __future__ import annotations

import pytest
from autobahn.wamp import message as m
from support.router import ALL, Client, make_router, realm

pytestmark = pytest.mark.inprocess


def test_session_procedures_and_events():
    router = make_router()
    watcher = Client(router).joined()
    watcher.subscribe("wamp.session.on_join")
    watcher.subscribe("wamp.session.on_leave")
    Client(router, auth={"authid": "svc", "authrole": "trusted"}).joined()  # not listed
    a = Client(router).joined()
    ev = watcher.take(m.Event)
    assert ev.args[0]["session"] == a.id and ev.args[0]["authrole"] == "anonymous"
    assert ev.args[0]["transport"]["type"] == "test"
    assert watcher.meta("wamp.session.count") == 2
    assert sorted(watcher.meta("wamp.session.list")) == sorted([a.id, watcher.id])
    assert watcher.meta("wamp.session.count", filter_authroles=["nobody"]) == 0
    d = watcher.meta("wamp.session.get", a.id)
    assert (d["session"], d["authid"], d["realm"]) == (a.id, a.session.authid, "realm1")
    err = watcher.meta("wamp.session.get", 12345)
    assert err.error == "wamp.error.no_such_session"
    a.send(m.Goodbye())
    assert watcher.take(m.Event).args == [a.id]


def test_kill_by_authid_and_authrole_reply_before_events():
    roles = [{"name": r, "permissions": [{"uri": "", "match": "prefix", "allow": ALL}]}
             for r in ("anonymous", "user")]
    router = make_router(realm(roles=roles))
    admin = Client(router).joined()
    admin.subscribe("wamp.session.on_leave")
    u1 = Client(router, auth={"authid": "joe", "authrole": "user"}).joined()
    u2 = Client(router, auth={"authid": "joe", "authrole": "user"}).joined()
    u3 = Client(router, auth={"authid": "ann", "authrole": "user"}).joined()
    r = admin.call("wamp.session.kill_by_authid", "joe")
    res = admin.take(m.Result)  # the reply comes before the on_leave events
    assert res.request == r and sorted(res.args[0]) == sorted([u1.id, u2.id])
    assert {admin.take(m.Event).args[0] for _ in range(2)} == {u1.id, u2.id}
    assert u1.take(m.Goodbye).reason == "wamp.close.killed"
    assert admin.meta("wamp.session.kill_by_authrole", "user", reason="com.x") == [u3.id]
    assert u3.take(m.Goodbye).reason == "com.x"
    assert admin.take(m.Event).args == [u3.id]
    assert admin.meta("wamp.session.kill", admin.id).error == "wamp.error.no_such_session"


def test_registration_meta():
    router = make_router()
    admin, c1, c2 = (Client(router).joined() for _ in range(3))
    admin.subscribe("wamp.registration.", match="prefix")
    rid = c1.register("com.p", invoke="roundrobin")
    create = admin.take(m.Event)
    assert create.topic == "wamp.registration.on_create"
    assert create.args[0] == c1.id and create.args[1]["uri"] == "com.p"
    assert create.args[1]["invoke"] == "roundrobin"
    reg = admin.take(m.Event)
    assert (reg.topic, reg.args) == ("wamp.registration.on_register", [c1.id, rid])
    c2.register("com.p", invoke="roundrobin")
    assert admin.take(m.Event).topic == "wamp.registration.on_register"
    c1.register("com.", match="prefix")
    admin.take(m.Event), admin.take(m.Event)
    lst = admin.meta("wamp.registration.list")
    assert lst["exact"] == [rid] and len(lst["prefix"]) == 1 and lst["wildcard"] == []
    assert admin.meta("wamp.registration.lookup", "com.p") == rid
    assert admin.meta("wamp.registration.lookup", "com.", {"match": "prefix"}) == lst["prefix"][0]
    assert admin.meta("wamp.registration.match", "com.q") == lst["prefix"][0]
    assert admin.meta("wamp.registration.match", "org.q") is None
    assert admin.meta("wamp.registration.get", rid)["match"] == "exact"
    assert admin.meta("wamp.registration.list_callees", rid) == [c1.id, c2.id]
    assert admin.meta("wamp.registration.count_callees", rid) == 2
    assert admin.meta("wamp.registration.get", 1).error == "wamp.error.no_such_registration"
    assert admin.meta("wamp.registration.list", c2.id)["exact"] == [rid]
    c2.session.detach()
    ev = admin.take(m.Event)
    assert (ev.topic, ev.args) == ("wamp.registration.on_unregister", [c2.id, rid])
    c1.send(m.Unregister(99, rid))
    c1.take(m.Unregistered)
    assert admin.take(m.Event).topic == "wamp.registration.on_unregister"
    ev = admin.take(m.Event)
    assert (ev.topic, ev.args) == ("wamp.registration.on_delete", [c1.id, rid])


def test_subscription_meta_hides_protected_uris():
    router = make_router()
    admin, s = Client(router).joined(), Client(router).joined()
    admin.subscribe("wamp.subscription.on_create")
    admin.subscribe("wamp.subscription.on_subscribe")
    admin.subscribe("wamp.subscription.on_unsubscribe")
    admin.subscribe("wamp.subscription.on_delete")
    sid = s.subscribe("com.t")
    assert s.messages == []
    create, subscribe = admin.take(m.Event), admin.take(m.Event)
    assert create.args == [s.id, {"id": sid, "created": admin.meta(
        "wamp.subscription.get", sid)["created"], "uri": "com.t", "match": "exact"}]
    assert subscribe.args == [s.id, sid]
    lst = admin.meta("wamp.subscription.list")
    assert lst == {"exact": [sid], "prefix": [], "wildcard": []}  # wamp.* ones hidden
    assert admin.meta("wamp.subscription.lookup", "com.t") == sid
    assert admin.meta("wamp.subscription.match", "com.t") == [sid]
    assert admin.meta("wamp.subscription.list_subscribers", sid) == [s.id]
    assert admin.meta("wamp.subscription.count_subscribers", sid) == 1
    assert admin.meta("wamp.subscription.get_events", sid).error == "wamp.error.history_unavailable"
    wid = admin.meta("wamp.subscription.lookup", "wamp.subscription.on_create")
    assert wid is None
    s.session.detach()
    assert admin.take(m.Event).args == [s.id, sid]
    assert admin.take(m.Event).args == [s.id, sid]
    assert admin.meta("wamp.subscription.count_subscribers", sid).error == \
        "wamp.error.no_such_subscription"


def test_meta_invalid_arguments():
    router = make_router()
    c = Client(router).joined()
    assert c.meta("wamp.session.get").error == "wamp.error.invalid_argument"
    assert c.meta("wamp.session.count", "x").error == "wamp.error.invalid_argument"


@pytest.mark.parametrize("proc,args", [
    ("wamp.registration.lookup", ["com.x", "not a dict"]),
    ("wamp.registration.lookup", [["com.x"]]),
    ("wamp.registration.match", [5]),
    ("wamp.subscription.lookup", ["com.x", 5]),
    ("wamp.subscription.match", [{"a": 1}]),
    ("wamp.session.add_testament", ["com.t", [], {}, "not a dict"]),
    ("wamp.session.kill", ["SESSION", "com.reason", 5]),
    ("wamp.subscription.remove_subscriber", ["SUB", "SESSION", 5]),
    ("wamp.registration.remove_callee", ["REG", "SESSION", ["x"]]),
])
def test_meta_bad_argument_types_are_errors_not_violations(proc, args):
    """A wrongly typed argument answers ERROR invalid_argument; the caller's session stays."""
    router = make_router()
    c = Client(router).joined()
    other = Client(router).joined()
    sub = other.subscribe("com.t")
    reg = other.register("com.p")
    ids = {"SESSION": other.id, "SUB": sub, "REG": reg}
    args = [ids.get(a, a) if isinstance(a, str) else a for a in args]
    assert c.meta(proc, *args).error == "wamp.error.invalid_argument"
    assert c.meta("wamp.session.count") == 2            # still joined, nobody killed
    assert other.messages == []


def test_meta_needs_permission():
    roles = [{"name": "anonymous", "permissions": [
        {"uri": "com.", "match": "prefix", "allow": ALL}]}]
    router = make_router(realm(roles=roles))
    c = Client(router).joined()
    c.call("wamp.session.count")
    assert c.take(m.Error).error == "wamp.error.not_authorized"


def test_testaments():
    router = make_router()
    w = Client(router).joined()
    w.subscribe("com.gone")
    a = Client(router).joined()
    tid = a.meta("wamp.session.add_testament", "com.gone", [1], {"k": "v"})
    assert isinstance(tid, int)
    a.meta("wamp.session.add_testament", "com.gone", ["detached"], None, None, "detached")
    a.meta("wamp.session.add_testament", "com.gone", ["x"], None, {"exclude_authrole": ["anonymous"]})
    assert a.meta("wamp.session.add_testament", "wamp.x", []).error == "wamp.error.invalid_uri"
    assert a.meta("wamp.session.add_testament", "com.gone", [], None, None, "bad").error == \
        "wamp.error.testament_error"
    a.session.detach()
    got = sorted(str(e.args) for e in (w.take(m.Event), w.take(m.Event)))
    assert got == ["['detached']", "[1]"]
    w.none()
    # flushed testaments are not published
    b = Client(router).joined()
    b.meta("wamp.session.add_testament", "com.gone", [2])
    assert b.meta("wamp.session.flush_testaments") == 1
    b.send(m.Goodbye())
    w.none()


def test_event_history_from_realm_store():
    cfg = realm()
    cfg["store"] = {"type": "memory", "event-history": [
        {"uri": "hist.", "match": "prefix", "limit": 3}, {"uri": "hist.one"}]}
    router = make_router(cfg)
    assert Client(router).join().roles["broker"].event_history is True
    assert Client(make_router()).join().roles["broker"].event_history is None
    p, admin = Client(router).joined(), Client(router).joined()
    for i in range(5):
        p.publish(f"hist.t{i}", i, acknowledge=True)
        p.take(m.Published)
    p.publish("hist.one", "x")
    sid = admin.meta("wamp.subscription.lookup", "hist.", {"match": "prefix"})
    events = admin.meta("wamp.subscription.get_events", sid, 10)
    assert [e["args"] for e in events] == [["x"], [4], [3]]   # newest first, limit 3 kept
    assert events[1]["topic"] == "hist.t4" and events[1]["session_id"] == p.id
    assert len(admin.meta("wamp.subscription.get_events", sid, 1)) == 1
    one = admin.meta("wamp.subscription.lookup", "hist.one")
    assert [e["args"] for e in admin.meta("wamp.subscription.get_events", one)] == [["x"]]
    # a normal subscription has no history; history subscriptions outlive their subscribers
    s = Client(router).joined()
    other = s.subscribe("nohist.t")
    assert admin.meta("wamp.subscription.get_events", other).error == \
        "wamp.error.history_unavailable"
    s.subscribe("hist.one")
    s.session.detach()
    assert admin.meta("wamp.subscription.lookup", "hist.one") == one
