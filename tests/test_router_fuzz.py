"""Router core, in process: random (well-formed) message sequences from several sessions.

Whatever the order, the router must not raise, must answer or end the session, and once every
session is gone no per-session state may remain (subscriptions, registrations, calls, timers).
"""

from __future__ import annotations

import random

import gevent
import pytest
from autobahn.wamp import message as m
from support.router import ROLES_ALL, Client, green_wait_for, make_router

pytestmark = pytest.mark.inprocess

TOPICS = ["a.b", "a.c", "a.", "a..c", "x"]


def _random_message(rnd: random.Random, c: Client, ids: list[int]):
    req = rnd.randint(1, 30)
    uri = rnd.choice(TOPICS)
    match = "exact"
    if uri.endswith("."):
        match = "prefix"
    elif ".." in uri:
        match = "wildcard"
    exact = uri if match == "exact" else "a.b"
    some_id = rnd.choice(ids) if ids and rnd.random() < 0.8 else rnd.randint(1, 10)
    choices = [
        lambda: m.Subscribe(req, uri, match=match, get_retained=rnd.random() < 0.3),
        lambda: m.Unsubscribe(req, some_id),
        lambda: m.Publish(req, exact, args=[req], acknowledge=rnd.random() < 0.5,
                          exclude_me=rnd.random() < 0.5, retain=rnd.random() < 0.2),
        lambda: m.Register(req, uri, match=match,
                           invoke=rnd.choice(["single", "roundrobin", "random"])),
        lambda: m.Unregister(req, some_id),
        lambda: m.Call(req, exact, args=[1], timeout=rnd.choice([0, 5, 50]),
                       receive_progress=rnd.random() < 0.5),
        lambda: m.Cancel(req, mode=rnd.choice([None, "skip", "kill", "killnowait"])),
        lambda: m.Yield(req, args=[2], progress=rnd.random() < 0.3),
        lambda: m.Error(m.Invocation.MESSAGE_TYPE, req, "com.err"),
        lambda: m.Call(req, rnd.choice(["wamp.session.count", "wamp.subscription.list",
                                        "wamp.registration.match"]),
                       args=["a.b"] if rnd.random() < 0.5 else None),
        lambda: m.Goodbye(),
        lambda: m.Hello("realm1", ROLES_ALL),
    ]
    weights = [8, 4, 10, 6, 4, 10, 3, 6, 3, 3, 1, 1]
    return rnd.choices(choices, weights)[0]()


def test_random_sequences_leave_no_state():
    rnd = random.Random(1234)
    router = make_router()
    realm = router.realms["realm1"]
    clients = [Client(router).joined() for _ in range(6)]
    retired: list[Client] = []
    for step in range(3000):
        i = rnd.randrange(len(clients))
        c = clients[i]
        if c.peer.closed:   # ended by a protocol violation: its transport goes away
            c.session.detach()
            retired.append(c)
            c = clients[i] = Client(router).joined()
        if c.session.state != 2:   # not joined (after GOODBYE): join again
            c.peer.messages.clear()
            c.joined()
        ids = [x.subscription for x in c.messages if isinstance(x, m.Subscribed)]
        ids += [x.registration for x in c.messages if isinstance(x, m.Registered)]
        ids += [x.request for x in c.messages if isinstance(x, m.Invocation)]
        c.peer.messages.clear()
        c.send(_random_message(rnd, c, ids))
        if step % 500 == 0:
            gevent.sleep(0.01)   # the scenario: time passes, some call timeouts fire
    for c in clients:
        c.session.detach()
    green_wait_for(lambda: not router.sessions and not realm.sessions
                   and not realm.broker.state.by_id and not realm.dealer.state.by_id,
                   5, "the router to forget every detached session")
    assert not router.sessions and not realm.sessions
    assert not realm.broker.state.by_id and not len(realm.broker.state.table)
    assert not realm.dealer.state.by_id and not len(realm.dealer.state.table)
    assert len(retired) > 0   # the sequence did exercise protocol violations
    for c in clients + retired:
        s = c.session
        assert not (s.subscriptions or s.registrations or s.calls or s.invocations)
