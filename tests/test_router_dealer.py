"""Router core, in process: the dealer (RPC, shared registrations, progress, cancel, timeouts)."""

from __future__ import annotations

import gevent
import pytest
from autobahn.wamp import message as m
from autobahn.wamp import role
from support import scaled
from support.router import ALL, Client, green_wait_for, make_router, realm

pytestmark = pytest.mark.inprocess


def _clients(n, router=None):
    router = router or make_router()
    return router, [Client(router).joined() for _ in range(n)]


def _answer(callee, *result, progress=None):
    inv = callee.take(m.Invocation)
    callee.send(m.Yield(inv.request, args=list(result) or None, progress=progress))
    return inv


def test_call_result_and_error():
    router, (caller, callee) = _clients(2)
    rid = callee.register("com.add")
    r = caller.call("com.add", 2, 3)
    inv = callee.take(m.Invocation)
    assert (inv.registration, inv.args, inv.procedure, inv.caller) == (rid, [2, 3], None, None)
    callee.send(m.Yield(inv.request, args=[5], kwargs={"k": 1}))
    res = caller.take(m.Result)
    assert (res.request, res.args, res.kwargs) == (r, [5], {"k": 1})
    r = caller.call("com.add")
    inv = callee.take(m.Invocation)
    callee.send(m.Error(m.Invocation.MESSAGE_TYPE, inv.request, "com.err", args=["bad"]))
    e = caller.take(m.Error)
    assert (e.request, e.error, e.args) == (r, "com.err", ["bad"])
    caller.call("com.nothing")
    assert caller.take(m.Error).error == "wamp.error.no_such_procedure"


def test_register_conflicts_and_unregister():
    router, (a, b) = _clients(2)
    rid = a.register("com.p")
    b.send(m.Register(5, "com.p"))
    e = b.take(m.Error)
    assert (e.request, e.error) == (5, "wamp.error.procedure_already_exists")
    a.register("com.s", invoke="roundrobin")
    b.send(m.Register(6, "com.s", invoke="random"))
    assert b.take(m.Error).error == "wamp.error.procedure_exists_with_different_invocation_policy"
    b.send(m.Unregister(7, rid))
    assert b.take(m.Error).error == "wamp.error.no_such_registration"
    a.send(m.Unregister(8, rid))
    assert a.take(m.Unregistered).request == 8
    b.register("com.p")


def test_pattern_registrations_most_specific():
    router, (caller, exact, prefix, wild) = _clients(4)
    exact.register("com.a.b")
    prefix.register("com.a.", match="prefix")
    wild.register("com..b", match="wildcard")
    caller.call("com.a.b")
    assert exact.take(m.Invocation).procedure is None
    caller.call("com.a.c")
    assert prefix.take(m.Invocation).procedure == "com.a.c"
    caller.call("com.x.b")
    assert wild.take(m.Invocation).procedure == "com.x.b"


def test_shared_registration_policies():
    router = make_router()
    caller = Client(router).joined()
    for policy, expect in (("roundrobin", [0, 1, 2, 0]), ("first", [0, 0, 0, 0]),
                           ("last", [2, 2, 2, 2])):
        callees = [Client(router).joined() for _ in range(3)]
        for c in callees:
            c.register(f"com.{policy}", invoke=policy)
        seen = []
        for _ in range(4):
            caller.call(f"com.{policy}")
            for i, c in enumerate(callees):
                if c.messages:
                    _answer(c)
                    seen.append(i)
            caller.take(m.Result)
        assert seen == expect, policy
    callees = [Client(router).joined() for _ in range(2)]
    for c in callees:
        c.register("com.rand", invoke="random")
    for _ in range(10):
        caller.call("com.rand")
        for c in callees:
            if c.messages:
                _answer(c)
        caller.take(m.Result)


def test_progressive_results():
    router, (caller, callee) = _clients(2)
    callee.register("com.prog")
    r = caller.call("com.prog", receive_progress=True)
    inv = callee.take(m.Invocation)
    assert inv.receive_progress is True
    callee.send(m.Yield(inv.request, args=[1], progress=True))
    callee.send(m.Yield(inv.request, args=[2], progress=True))
    callee.send(m.Yield(inv.request, args=[3]))
    got = [caller.take(m.Result) for _ in range(3)]
    assert [(x.request, x.args, bool(x.progress)) for x in got] == [
        (r, [1], True), (r, [2], True), (r, [3], False)]
    # a caller that did not ask for progress only gets the final result
    caller.call("com.prog")
    inv = callee.take(m.Invocation)
    callee.send(m.Yield(inv.request, args=[1], progress=True))
    callee.send(m.Yield(inv.request, args=[9]))
    assert caller.take(m.Result).args == [9]
    caller.none()


def test_cancel_modes():
    router, (caller, callee) = _clients(2)
    callee.register("com.slow")
    # killnowait (default): INTERRUPT to the callee, ERROR to the caller at once
    r = caller.call("com.slow")
    inv = callee.take(m.Invocation)
    caller.send(m.Cancel(r))
    i = callee.take(m.Interrupt)
    assert (i.request, i.mode) == (inv.request, "killnowait")
    assert caller.take(m.Error).error == "wamp.error.canceled"
    callee.send(m.Yield(inv.request, args=["late"]))
    caller.none()
    # skip: no INTERRUPT
    r = caller.call("com.slow")
    inv = callee.take(m.Invocation)
    caller.send(m.Cancel(r, mode="skip"))
    assert caller.take(m.Error).error == "wamp.error.canceled"
    callee.none()
    # kill: INTERRUPT, the callee's ERROR finishes the call
    r = caller.call("com.slow")
    inv = callee.take(m.Invocation)
    caller.send(m.Cancel(r, mode="kill"))
    assert callee.take(m.Interrupt).mode == "kill"
    caller.none()
    callee.send(m.Error(m.Invocation.MESSAGE_TYPE, inv.request, "wamp.error.canceled"))
    e = caller.take(m.Error)
    assert (e.request, e.error) == (r, "wamp.error.canceled")
    assert not caller.session.calls and not callee.session.invocations
    # a callee without call_canceling gets no INTERRUPT (treated as skip)
    roles = dict(role.DEFAULT_CLIENT_ROLES)
    roles["callee"] = role.RoleCalleeFeatures()
    old = Client(router).joined(roles=roles)
    old.register("com.old")
    r = caller.call("com.old")
    old.take(m.Invocation)
    caller.send(m.Cancel(r, mode="kill"))
    assert caller.take(m.Error).error == "wamp.error.canceled"
    old.none()


def test_call_timeout_enforced_by_router():
    router, (caller, callee, other) = _clients(3)
    callee.register("com.sleep")
    r = caller.call("com.sleep", timeout=50)
    inv = callee.take(m.Invocation)
    t0 = gevent.get_hub().loop.now()
    green_wait_for(lambda: caller.messages, 1, "the router's timeout ERROR", interval=0.01)
    e = caller.take(m.Error)
    assert (e.request, e.error) == (r, "wamp.error.timeout")
    assert 0.04 <= gevent.get_hub().loop.now() - t0 < scaled(0.5)
    i = callee.take(m.Interrupt)
    assert (i.request, i.mode, i.reason) == (inv.request, "killnowait", "wamp.error.timeout")
    # an answered call's timer is cancelled
    caller.call("com.sleep", timeout=30)
    _answer(callee, 1)
    caller.take(m.Result)
    gevent.sleep(0.06)  # the scenario: past the cancelled timer's due time (30 ms)
    caller.none()
    callee.none()


def test_callee_leaves_mid_call_and_caller_leaves():
    router, (caller, callee, callee2) = _clients(3)
    callee.register("com.p")
    r = caller.call("com.p")
    callee.take(m.Invocation)
    callee.session.detach()
    e = caller.take(m.Error)
    assert (e.request, e.error) == (r, "wamp.error.canceled")
    callee2.register("com.p")
    caller.call("com.p")
    inv = callee2.take(m.Invocation)
    caller.session.detach()
    i = callee2.take(m.Interrupt)
    assert i.request == inv.request
    assert (i.mode, i.reason) == ("killnowait", None)   # as Crossbar: no reason
    assert not callee2.session.invocations
    callee2.send(m.Yield(inv.request))  # late answer is dropped
    assert not router.realms["realm1"].dealer.state.best("com.q")


def test_caller_disclosure_by_role():
    roles = [{"name": "anonymous", "permissions": [
        {"uri": "open.", "match": "prefix", "allow": ALL, "disclose": {"caller": True}},
        {"uri": "closed.", "match": "prefix", "allow": ALL}]}]
    router = make_router(realm(roles=roles))
    caller, callee = Client(router).joined(), Client(router).joined()
    callee.register("open.p")
    callee.register("closed.p")
    caller.call("open.p")
    inv = callee.take(m.Invocation)
    assert (inv.caller, inv.caller_authrole) == (caller.id, "anonymous")
    caller.call("closed.p")
    assert callee.take(m.Invocation).caller is None


def test_registration_revocation_and_force_reregister():
    router, (admin, callee, newcomer) = _clients(3)
    rid = callee.register("com.rev")
    admin.meta("wamp.registration.remove_callee", rid, callee.id, reason="com.out")
    u = callee.take(m.Unregistered)
    assert (u.request, u.registration, u.reason) == (0, rid, "com.out")
    admin.call("com.rev")
    assert admin.take(m.Error).error == "wamp.error.no_such_procedure"
    rid = callee.register("com.rev2")
    newcomer.register("com.rev2", force_reregister=True)
    assert callee.take(m.Unregistered).registration == rid
    admin.call("com.rev2")
    newcomer.take(m.Invocation)


def test_duplicate_call_request_id_is_violation():
    router, (caller, callee) = _clients(2)
    callee.register("com.p")
    caller.send(m.Call(1, "com.p"))
    caller.send(m.Call(1, "com.p"))
    assert caller.take(m.Abort).reason == "wamp.error.protocol_violation"


def test_calls_in_flight_are_bounded(monkeypatch):
    from geonode.router import dealer
    monkeypatch.setattr(dealer, "MAX_CALLS_IN_FLIGHT", 2)
    router, (caller, callee) = _clients(2)
    callee.register("com.p")
    caller.call("com.p")
    caller.call("com.p")
    r = caller.call("com.p")
    e = caller.take(m.Error)
    assert (e.request, e.error) == (r, "wamp.error.limit_exceeded")
    assert len(caller.session.calls) == 2


def test_register_concurrency_limits():
    router, (caller, c1, c2) = _clients(3)
    c1.register("com.conc", invoke="roundrobin", concurrency=1)
    c2.register("com.conc", invoke="roundrobin", concurrency=1)
    caller.call("com.conc")
    caller.call("com.conc")
    i1, i2 = c1.take(m.Invocation), c2.take(m.Invocation)
    r = caller.call("com.conc")
    e = caller.take(m.Error)
    assert (e.request, e.error) == (r, "crossbar.error.max_concurrency_reached")
    c2.send(m.Yield(i2.request))
    caller.take(m.Result)
    caller.call("com.conc")   # c2 is free again
    c2.take(m.Invocation)
    c1.send(m.Yield(i1.request))
    caller.take(m.Result)
    # single registration
    c1.register("com.one", concurrency=1)
    caller.call("com.one")
    c1.take(m.Invocation)
    caller.call("com.one")
    assert caller.take(m.Error).error == "crossbar.error.max_concurrency_reached"


def test_router_close_frees_calls_timers_and_killed_sessions():
    router, (caller, callee, admin) = _clients(3)
    callee.register("com.p")
    caller.call("com.p", timeout=50)
    callee.take(m.Invocation)
    inv = next(iter(caller.session.calls.values()))
    killed = Client(router).joined()
    admin.meta("wamp.session.kill", killed.id)      # CLOSING: waits for the client's GOODBYE
    assert killed.take(m.Goodbye).reason == "wamp.close.killed"
    router.close()
    realm1 = router.realms["realm1"]
    assert not realm1.sessions and not realm1.dealer.state.by_id and not router.sessions
    assert not caller.session.calls and not callee.session.invocations
    assert inv.timer is None                         # the call timeout will not fire
    assert killed.session._goodbye_timer is None     # nor the killed session's GOODBYE wait
    assert all(c.peer.closed for c in (caller, callee, admin, killed))
