"""The in-process WAMP session (geonode.wamp) against geonode's router, in this process.

The hub runs in the test's main thread; "worker threads" are real threads (the test process is
not monkey-patched), so the hand-over path is the one a WSGI app's pool thread takes.
End-to-end tests through a real node are in tests/test_bridge.py.
"""

from __future__ import annotations

import threading
import time

import pytest
from support import scaled
from support.router import green_wait_for

from geonode import wamp
from geonode.router import Router
from geonode.wamp import ApplicationError, CallResult, Session

pytestmark = pytest.mark.inprocess

ALLOW = {"call": True, "register": True, "publish": True, "subscribe": True}
# realm1: roles "backend" and "other" may do everything, "denied" nothing.
REALM1 = {"name": "realm1", "roles": [
    {"name": "backend", "permissions": [{"uri": "", "match": "prefix", "allow": ALLOW}]},
    {"name": "other", "permissions": [{"uri": "", "match": "prefix", "allow": ALLOW}]},
    {"name": "denied", "permissions": []},
]}


@pytest.fixture
def router():
    r = Router({"realms": [REALM1]}, ".")
    wamp.register_router(r)
    yield r
    r.close()
    wamp.unregister_router(r)


def in_thread(fn, *args):
    """Run fn in a real thread while the hub keeps running; return its result or raise."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    green_wait_for(lambda: not t.is_alive(), 10, "the worker thread to finish (hung?)",
                   interval=0.005)
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_publish_subscribe_from_threads(router):
    sub = Session("realm1", "backend", router=router)
    pub = Session("realm1", "backend", router=router)
    got = []
    in_thread(sub.subscribe, "com.example.topic", lambda *a, **kw: got.append((a, kw)))
    assert in_thread(lambda: pub.publish("com.example.topic", 1, 2, x=3, acknowledge=True)) > 0
    in_thread(pub.publish, "com.example.topic", "fire-and-forget")
    green_wait_for(lambda: len(got) >= 2, 5, "both events")
    assert got == [((1, 2), {"x": 3}), (("fire-and-forget",), {})]


def test_handlers_run_on_pool_unless_on_hub(router):
    s = Session("realm1", "backend", router=router)
    hub_thread = threading.get_ident()
    seen = {}

    def blocking(name):
        seen[name] = threading.get_ident()
        time.sleep(0.05)  # the scenario: a real blocking call, which must not stall the hub

    @wamp.on_hub
    def greenlet_handler(name):
        seen[name] = threading.get_ident()

    s.subscribe("t.pool", blocking)
    s.subscribe("t.hub", greenlet_handler)
    p = Session("realm1", "other", router=router)
    p.publish("t.pool", "pool")
    p.publish("t.hub", "hub")
    green_wait_for(lambda: len(seen) >= 2, 5, "both handlers")
    assert seen["hub"] == hub_thread
    assert seen["pool"] != hub_thread


def test_call_register_result_and_errors(router):
    callee = Session("realm1", "backend", router=router)
    caller = Session("realm1", "backend", router=router)

    def add(a, b):
        return a + b

    def fail():
        raise ApplicationError("com.example.bad", "nope", detail=1)

    def multi():
        return CallResult(1, 2, k="v")

    callee.register("com.example.add", add)
    callee.register("com.example.fail", fail)
    callee.register("com.example.multi", multi)
    callee.register("com.example.crash", lambda: 1 / 0)
    assert in_thread(caller.call, "com.example.add", 2, 3) == 5
    # also from a greenlet on the hub
    assert caller.call("com.example.add", 20, 22) == 42
    with pytest.raises(ApplicationError) as ei:
        in_thread(caller.call, "com.example.fail")
    assert ei.value.error == "com.example.bad"
    assert ei.value.args == ("nope",) and ei.value.kwargs == {"detail": 1}
    res = in_thread(caller.call, "com.example.multi")
    assert res.results == (1, 2) or list(res.results) == [1, 2]
    assert res.kwresults == {"k": "v"}
    with pytest.raises(ApplicationError) as ei:
        in_thread(caller.call, "com.example.crash")
    assert ei.value.error == "wamp.error.runtime_error"
    with pytest.raises(ApplicationError) as ei:
        in_thread(caller.call, "com.example.missing")
    assert ei.value.error == "wamp.error.no_such_procedure"


def test_call_timeout(router):
    callee = Session("realm1", "backend", router=router)
    caller = Session("realm1", "backend", router=router)
    answer = threading.Event()  # the callee answers only once the test is done
    callee.register("com.example.slow", lambda: answer.wait(scaled(10)))
    t0 = time.monotonic()
    try:
        with pytest.raises(ApplicationError) as ei:
            in_thread(lambda: caller.call("com.example.slow", timeout=0.2))
        assert ei.value.error == "wamp.error.timeout"
        assert time.monotonic() - t0 < scaled(1.5)
    finally:
        answer.set()


def test_permission_error_and_shared_session(router):
    denied = Session("realm1", "denied", router=router)
    with pytest.raises(ApplicationError) as ei:
        in_thread(lambda: denied.publish("com.example.x", acknowledge=True))
    assert ei.value.error == "wamp.error.not_authorized"
    assert wamp.session("realm1", "backend") is wamp.session("realm1", "backend")
    assert wamp.session("realm1", "backend") is not wamp.session("realm1", "other")


def test_environ_hook_sets_shared_session(router):
    class Ctx:
        pass

    ctx = Ctx()
    ctx.router = router
    hook = wamp.environ_hook({"realm": "realm1", "role": "backend"}, ctx)
    e1, e2 = {}, {}
    hook(e1)
    hook(e2)
    assert e1["geonode.wamp"] is e2["geonode.wamp"] is wamp.session("realm1", "backend")
    assert in_thread(lambda: e1["geonode.wamp"].publish("x.y", acknowledge=True)) > 0


def test_leave_detaches(router):
    s = Session("realm1", "backend", router=router)
    s.publish("a.b", acknowledge=True)
    assert s.joined
    s.leave()
    green_wait_for(lambda: not s.joined, 5, "the session to leave")
    assert router.session_count() == 0 and not router.sessions


def test_many_threads_at_once(router):
    """8 threads × 100 calls and acknowledged publishes on one shared session, first use racing."""
    callee = Session("realm1", "backend", router=router)
    callee.register("com.example.echo", lambda x: x)
    shared = Session("realm1", "backend", router=router)
    results: list = []
    errors: list = []

    def worker(n):
        try:
            for i in range(100):
                results.append(shared.call("com.example.echo", n * 1000 + i))
                shared.publish("com.example.t", i, acknowledge=True)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    green_wait_for(lambda: not any(t.is_alive() for t in threads), 20, "the 8 threads",
                   interval=0.005)
    assert not errors
    assert sorted(results) == sorted(n * 1000 + i for n in range(8) for i in range(100))


def test_unsubscribe_unregister_and_realm_errors():
    allow = {"call": True, "register": True, "publish": True, "subscribe": True}
    real = Router({"realms": [{"name": "realm9", "roles": [
        {"name": "backend", "permissions": [{"uri": "com.", "match": "prefix", "allow": allow}]},
    ]}]}, ".")
    wamp.register_router(real)
    try:
        s = Session("realm9", "backend", router=real)
        got = []
        sub = in_thread(s.subscribe, "com.t", lambda v: got.append(v))
        # a second topic: its event, published last, is the barrier (handlers start in order)
        in_thread(s.subscribe, "com.barrier", lambda v: got.append(v))
        reg = in_thread(s.register, "com.p", lambda: "p")
        assert in_thread(s.call, "com.p") == "p"
        s.publish("com.t", 1, acknowledge=True)
        green_wait_for(lambda: got, 5, "the event")
        assert got == [1]
        in_thread(sub.unsubscribe)
        in_thread(reg.unregister)
        assert not sub.active and not reg.active
        s.publish("com.t", 2, acknowledge=True)
        s.publish("com.barrier", "barrier", acknowledge=True)
        green_wait_for(lambda: "barrier" in got, 5, "the barrier event")
        assert got == [1, "barrier"]
        with pytest.raises(ApplicationError) as ei:
            in_thread(s.call, "com.p")
        assert ei.value.error == "wamp.error.no_such_procedure"
        with pytest.raises(ApplicationError) as ei:  # outside the role's permissions
            in_thread(s.register, "org.x", lambda: None)
        assert ei.value.error == "wamp.error.not_authorized"
        with pytest.raises(ApplicationError) as ei:
            in_thread(lambda: Session("nosuchrealm", "backend", router=real).call("com.p"))
        assert ei.value.error == "wamp.error.no_such_realm"
    finally:
        real.close()
        wamp._routers.remove(real)


def test_details_for_pattern_subscriptions_and_registrations():
    allow = {"call": True, "register": True, "publish": True, "subscribe": True}
    real = Router({"realms": [{"name": "realm8", "roles": [
        {"name": "backend", "permissions": [{"uri": "com.", "match": "prefix", "allow": allow,
                                             "disclose": {"caller": True,
                                                          "publisher": True}}]},
    ]}]}, ".")
    wamp.register_router(real)
    try:
        sub = Session("realm8", "backend", "subscriber", router=real)
        pub = Session("realm8", "backend", "publisher", router=real)
        got = []
        in_thread(lambda: sub.subscribe("com.news.", lambda *a, details: got.append((a, details)),
                                        match="prefix", details=True))
        in_thread(lambda: sub.register("com.proc.", lambda x, details: [x, details.procedure,
                                                                          details.caller_authid],
                                       match="prefix", details=True))
        pub.publish("com.news.sport", 1, acknowledge=True)
        green_wait_for(lambda: got, 5, "the event")
        (args, details), = got
        assert args == (1,) and details.topic == "com.news.sport"
        assert details.publisher_authid == "publisher"
        assert in_thread(pub.call, "com.proc.one", 5) == [5, "com.proc.one", "publisher"]
    finally:
        real.close()
        wamp._routers.remove(real)


def test_autobahn_argument_order_and_call_options(router):
    from autobahn.wamp.types import CallOptions, PublishOptions

    s = Session("realm1", "backend", router=router)
    got = []
    answer = threading.Event()  # the callee answers only once the test is done
    s.subscribe(lambda v: got.append(v), "com.example.ab")  # autobahn: (handler, topic)
    # autobahn: (endpoint, procedure)
    s.register(lambda: answer.wait(scaled(10)), "com.example.ab.slow")
    assert s.publish("com.example.ab", 1, options=PublishOptions(acknowledge=True)) > 0
    green_wait_for(lambda: got, 5, "the event")
    assert got == [1]
    try:
        with pytest.raises(ApplicationError) as ei:
            in_thread(lambda: s.call("com.example.ab.slow", options=CallOptions(timeout=0.2)))
        assert ei.value.error == "wamp.error.timeout"
    finally:
        answer.set()


def test_closed_router_is_forgotten():
    """A node that closed its router unregisters it: a later session() call never joins it."""
    old = Router({"realms": [REALM1]}, ".")
    wamp.register_router(old)
    old.close()
    wamp.unregister_router(old)
    new = Router({"realms": [REALM1]}, ".")
    wamp.register_router(new)
    try:
        s = Session("realm1", "backend")
        in_thread(lambda: s.publish("com.example.t", acknowledge=True))
        assert new.session_count() >= 1 and old.session_count() == 0
    finally:
        new.close()
        wamp.unregister_router(new)
