"""Router core, in process: HELLO/WELCOME/ABORT/GOODBYE, authentication, roles, robustness."""

from __future__ import annotations

import binascii

import pytest
from autobahn.wamp import message as m
from autobahn.wamp import role
from autobahn.wamp.auth import compute_wcs, derive_key
from nacl.signing import SigningKey
from support.router import ALL, Client, make_router, realm, settle

pytestmark = pytest.mark.inprocess

ROLES = dict(role.DEFAULT_CLIENT_ROLES)


def test_anonymous_welcome_announces_features():
    router = make_router()
    w = Client(router).join()
    assert isinstance(w, m.Welcome)
    assert w.authrole == "anonymous" and w.authmethod == "anonymous"
    assert w.authprovider == "static" and w.authid
    broker = w.roles["broker"]
    dealer = w.roles["dealer"]
    for f in ("publisher_identification", "pattern_based_subscription", "session_meta_api",
              "subscription_meta_api", "subscriber_blackwhite_listing", "publisher_exclusion",
              "subscription_revocation", "event_retention", "payload_transparency"):
        assert getattr(broker, f) is True, f
    for f in ("caller_identification", "pattern_based_registration", "session_meta_api",
              "registration_meta_api", "shared_registration", "progressive_call_results",
              "registration_revocation", "testament_meta_api", "call_canceling", "call_timeout",
              "payload_transparency"):
        assert getattr(dealer, f) is True, f
    assert router.session_count() == 1


@pytest.mark.parametrize("meta", [True, False])
def test_welcome_marshals_as_autobahn_does(meta):
    """The WELCOME's roles are marshalled once per realm (issue 16): the wire form is still
    autobahn's, key for key, meta API on or off, with and without authextra."""
    from geonode.router.session import Welcome
    router = make_router(realm(enable_meta_api=meta))
    r = router.realms["realm1"]
    w = Client(router).join()
    assert type(w) is m.Welcome   # in-process peers dispatch on the exact type
    for extra in ({}, {"x": 1}):
        kw = dict(realm="realm1", authid=w.authid, authrole="anonymous",
                  authmethod="anonymous", authprovider="static", authextra=extra)
        ours = Welcome(w.session, r.welcome_roles, r.welcome_roles_raw, **kw).marshal()
        theirs = m.Welcome(w.session, r.welcome_roles, **kw).marshal()
        assert ours == theirs and list(ours[2]) == list(theirs[2])


def test_client_features_of_a_shared_hello_are_looked_up_not_rebuilt():
    from geonode.router import session as rs
    roles = dict(role.DEFAULT_CLIENT_ROLES)
    first = rs.client_features(roles)
    assert rs._BY_ROLES[id(roles)] == (roles, first)   # fails without the lookup
    assert rs.client_features(roles) is first
    copy = dict(roles)   # equal, another object (another payload): built, the same set
    assert rs.client_features(copy) == first
    assert rs.client_features(None) == frozenset()
    for _ in range(600):   # bounded
        rs.client_features({"caller": role.RoleCallerFeatures()})
    assert len(rs._BY_ROLES) <= 256


def test_anonymous_authids_are_autobahn_serial_numbers():
    import re
    router = make_router()
    ids = {Client(router).join().authid for _ in range(50)}
    assert len(ids) == 50
    for authid in ids:   # autobahn's generate_serial_number format and alphabet
        assert re.fullmatch(r"[345679ACEFGHJKLMNPQRSTUVWXY]{4}(-[345679ACEFGHJKLMNPQRSTUVWXY]{4}){5}",
                            authid), authid


def test_meta_features_not_announced_when_disabled():
    router = make_router(realm(enable_meta_api=False))
    w = Client(router).join()
    assert w.roles["broker"].session_meta_api is None
    assert w.roles["dealer"].testament_meta_api is None
    c = Client(router).joined()
    r = c.call("wamp.session.count")
    assert c.take(m.Error).error == "wamp.error.no_such_procedure"
    assert r


def test_abort_reasons():
    router = make_router()
    c = Client(router)
    a = c.join(realm="nope")
    assert isinstance(a, m.Abort) and a.reason == "wamp.error.no_such_realm"
    assert c.peer.closed
    a = Client(router).join(authmethods=["ticket"])
    assert a.reason == "wamp.error.no_auth_method"
    # anonymous allowed by the transport, but the realm has no "anonymous" role
    router2 = make_router(realm(roles=[{"name": "user", "permissions": []}]))
    a = Client(router2).join()
    assert a.reason == "wamp.error.no_such_role"


def test_goodbye_both_ways_and_rejoin():
    router = make_router()
    c = Client(router).joined()
    c.subscribe("a.b")
    c.send(m.Goodbye("wamp.close.normal"))
    g = c.take(m.Goodbye)
    assert g.reason == "wamp.close.goodbye_and_out"
    assert router.session_count() == 0
    assert not c.peer.closed
    first = c.id
    c.joined()  # a new session on the same transport
    assert c.id != first
    c.session.detach()
    assert router.session_count() == 0 and not router.sessions


@pytest.mark.parametrize("msg", [
    m.Publish(1, "a.b"),
    m.Welcome(1, {"broker": role.RoleBrokerFeatures()}),
    m.Authenticate("sig"),
])
def test_protocol_violation_before_welcome(msg, caplog):
    router = make_router()
    other = Client(router).joined()
    c = Client(router)
    c.send(msg)
    a = c.take(m.Abort)
    assert a.reason == "wamp.error.protocol_violation"
    assert c.peer.closed
    assert len([r for r in caplog.records if "protocol violation" in r.getMessage()]) == 1
    # the other session is untouched
    other.subscribe("x.y")


def test_protocol_violation_after_welcome_frees_state():
    router = make_router()
    other = Client(router).joined()
    c = Client(router).joined()
    c.subscribe("a.b")
    c.register("p.q")
    r = other.call("p.q")
    c.take(m.Invocation)
    c.send(m.Hello("realm1", ROLES))
    assert c.take(m.Abort).reason == "wamp.error.protocol_violation"
    assert c.peer.closed
    err = other.take(m.Error)
    assert err.request == r and err.error == "wamp.error.canceled"
    realm_ = router.realms["realm1"]
    assert not realm_.broker.state.by_id and not realm_.dealer.state.by_id
    assert list(realm_.sessions) == [other.id]


def test_client_error_for_non_invocation_is_violation():
    router = make_router()
    c = Client(router).joined()
    c.send(m.Error(m.Call.MESSAGE_TYPE, 1, "x.y"))
    assert c.take(m.Abort).reason == "wamp.error.protocol_violation"


def test_trusted_in_process_session():
    router = make_router()
    c = Client(router, auth={"authid": "flask-app", "authrole": "trusted"})
    w = c.join()
    assert (w.authid, w.authrole, w.authmethod, w.authprovider) == (
        "flask-app", "trusted", "trusted", "geonode")
    # trusted may publish to wamp.* and register wamp.*
    c.register("wamp.my.thing")
    r = c.publish("wamp.my.topic", acknowledge=True)
    assert c.take(m.Published).request == r
    # in-process sessions with a configured role get that role's permissions
    c2 = Client(router, auth={"authid": "x", "authrole": "anonymous"})
    assert c2.join().authrole == "anonymous"
    c3 = Client(router, auth={"authid": "x", "authrole": "ghost"})
    assert c3.join().reason == "wamp.error.no_such_role"


TICKET = {"ticket": {"type": "static", "principals": {
    "joe": {"ticket": "secret!", "role": "anonymous"}}}}


def test_ticket_static():
    router = make_router()
    c = Client(router, auth_config=TICKET)
    ch = c.join(authmethods=["ticket"], authid="joe")
    assert isinstance(ch, m.Challenge) and ch.method == "ticket"
    c.send(m.Authenticate("secret!"))
    w = c.take(m.Welcome)
    assert (w.authid, w.authrole, w.authmethod, w.authprovider) == (
        "joe", "anonymous", "ticket", "static")

    c = Client(router, auth_config=TICKET)
    c.join(authmethods=["ticket"], authid="joe")
    c.send(m.Authenticate("wrong"))
    assert c.take(m.Abort).reason == "wamp.error.authentication_failed"
    assert c.peer.closed

    # an unknown authid is challenged too and fails like a wrong ticket (docs/router.md)
    c = Client(router, auth_config=TICKET)
    assert isinstance(c.join(authmethods=["ticket"], authid="nobody"), m.Challenge)
    c.send(m.Authenticate("secret!"))
    assert c.take(m.Abort).reason == "wamp.error.authentication_failed"
    # anonymous is not configured on this transport
    assert Client(router, auth_config=TICKET).join().reason == "wamp.error.no_auth_method"


def test_authmethods_in_client_order():
    router = make_router()
    cfg = dict(TICKET, anonymous={"type": "static", "role": "anonymous"})
    c = Client(router, auth_config=cfg)
    assert isinstance(c.join(authmethods=["ticket", "anonymous"], authid="joe"), m.Challenge)
    c = Client(router, auth_config=cfg)
    assert c.join(authmethods=["wampcra", "anonymous"], authid="joe").authmethod == "anonymous"


@pytest.mark.parametrize("salted", [False, True])
def test_wampcra_static(salted):
    user = {"secret": "s3cr3t", "role": "anonymous"}
    if salted:
        user.update(salt="salt123", iterations=100, keylen=32)
    cfg = {"wampcra": {"type": "static", "users": {"peter": user}}}
    router = make_router()
    c = Client(router, auth_config=cfg)
    ch = c.join(authmethods=["wampcra"], authid="peter")
    assert ch.method == "wampcra"
    key = b"s3cr3t"
    if salted:
        assert (ch.extra["salt"], ch.extra["iterations"], ch.extra["keylen"]) == ("salt123", 100, 32)
        key = derive_key(key, "salt123", 100, 32)
    else:
        assert "salt" not in ch.extra
    sig = compute_wcs(key, ch.extra["challenge"].encode()).decode()
    c.send(m.Authenticate(sig))
    w = c.take(m.Welcome)
    assert w.authmethod == "wampcra" and w.authid == "peter"

    c = Client(router, auth_config=cfg)
    c.join(authmethods=["wampcra"], authid="peter")
    c.send(m.Authenticate("AAAA"))
    assert c.take(m.Abort).reason == "wamp.error.authentication_failed"


def _cryptosign(c, key: SigningKey, authid="alice", tamper=False):
    pub = key.verify_key.encode().hex()
    ch = c.join(authmethods=["cryptosign"], authid=authid, authextra={"pubkey": pub})
    if not isinstance(ch, m.Challenge):
        return ch
    challenge = binascii.a2b_hex(ch.extra["challenge"])
    sig = key.sign(challenge).signature
    if tamper:
        sig = bytes([sig[0] ^ 1]) + sig[1:]
    c.send(m.Authenticate((sig + challenge).hex()))
    return c.take()


def test_cryptosign_static():
    key = SigningKey.generate()
    cfg = {"cryptosign": {"type": "static", "principals": {
        "alice": {"authorized_keys": [key.verify_key.encode().hex()], "role": "anonymous"}}}}
    router = make_router()
    w = _cryptosign(Client(router, auth_config=cfg), key)
    assert isinstance(w, m.Welcome) and w.authid == "alice" and w.authmethod == "cryptosign"
    # no authid: found by public key
    assert _cryptosign(Client(router, auth_config=cfg), key, authid=None).authid == "alice"
    a = _cryptosign(Client(router, auth_config=cfg), key, tamper=True)
    assert a.reason == "wamp.error.authentication_failed"
    a = _cryptosign(Client(router, auth_config=cfg), SigningKey.generate())
    assert a.reason == "wamp.error.not_authorized"


def test_cryptosign_channel_binding_is_refused_clearly():
    """tls-unique on a transport without a TLS channel id: ABORT naming it, before any
    principal lookup or authenticator call (the dynamic authenticator is never invoked).
    Bound logins over TLS: tests/test_cryptosign_binding.py."""
    key = SigningKey.generate()
    pub = key.verify_key.encode().hex()
    router = make_router()
    backend = Client(router, auth={"authid": "auth", "authrole": "trusted"}).joined()
    backend.register("com.auth")
    for kind in ("static", "dynamic"):
        cfg = {"cryptosign": {"type": kind, "authenticator": "com.auth", "principals": {
            "alice": {"authorized_keys": [pub], "role": "anonymous"}}}}
        c = Client(router, auth_config=cfg)
        a = c.join(authmethods=["cryptosign"], authid="alice",
                   authextra={"pubkey": pub, "channel_binding": "tls-unique"})
        assert isinstance(a, m.Abort), a
        assert a.reason == "wamp.error.not_authorized"
        assert "channel binding" in a.message and "tls-unique" in a.message
        assert c.peer.closed
    backend.none()
    # without channel binding the CHALLENGE says so explicitly
    cfg = {"cryptosign": {"type": "static", "principals": {
        "alice": {"authorized_keys": [pub], "role": "anonymous"}}}}
    ch = Client(router, auth_config=cfg).join(authmethods=["cryptosign"], authid="alice",
                                                authextra={"pubkey": pub})
    assert isinstance(ch, m.Challenge) and ch.extra["channel_binding"] is None


def test_welcome_announces_exactly_the_implemented_features():
    def announced(w):
        return {name: {k for k, v in vars(obj).items() if v is True}
                for name, obj in w.roles.items()}

    common = {"session_meta_api", "payload_transparency", "payload_encryption_cryptobox"}
    broker = common | {"publisher_identification", "pattern_based_subscription",
                       "subscriber_blackwhite_listing", "publisher_exclusion",
                       "subscription_revocation", "event_retention", "subscription_meta_api"}
    dealer = common | {"caller_identification", "pattern_based_registration",
                       "shared_registration", "progressive_call_results",
                       "registration_revocation", "call_canceling", "call_timeout",
                       "registration_meta_api", "testament_meta_api"}
    w = Client(make_router()).join()
    assert announced(w) == {"broker": broker, "dealer": dealer}
    store = {"type": "memory", "event-history": [{"uri": "com.h", "limit": 5}]}
    w = Client(make_router(dict(realm(), store=store))).join()
    assert announced(w) == {"broker": broker | {"event_history"}, "dealer": dealer}


def _serve_authenticator(backend: Client, answer):
    """Answer one INVOCATION on ``backend`` with ``answer(args)``."""
    inv = backend.take(m.Invocation)
    result = answer(inv.args)
    if isinstance(result, m.Error):
        backend.send(m.Error(m.Invocation.MESSAGE_TYPE, inv.request, result.error))
    else:
        backend.send(m.Yield(inv.request, args=[result]))
    return inv.args


def test_dynamic_authenticators():
    router = make_router()
    backend = Client(router, auth={"authid": "auth", "authrole": "trusted"}).joined()
    backend.register("com.auth")
    cfg = {"ticket": {"type": "dynamic", "authenticator": "com.auth"},
           "anonymous": {"type": "dynamic", "authenticator": "com.auth"}}
    # ticket: the authenticator sees the ticket and may rename the principal
    c = Client(router, auth_config=cfg)
    assert isinstance(c.join(authmethods=["ticket"], authid="joe"), m.Challenge)
    c.send(m.Authenticate("t1"))
    args = _serve_authenticator(backend, lambda a: {"role": "anonymous", "authid": "joseph",
                                                    "extra": {"x": 1}})
    assert args[0] == "realm1" and args[1] == "joe" and args[2]["ticket"] == "t1"
    w = c.take(m.Welcome)
    assert (w.authid, w.authprovider, w.authextra) == ("joseph", "dynamic", {"x": 1})
    # an error from the authenticator aborts with that error
    c = Client(router, auth_config=cfg)
    c.join(authmethods=["ticket"], authid="joe")
    c.send(m.Authenticate("bad"))
    _serve_authenticator(backend, lambda a: m.Error(0, 0, "wamp.error.not_authorized"))
    assert c.take(m.Abort).reason == "wamp.error.not_authorized"
    # anonymous: a role string
    c = Client(router, auth_config=cfg)
    c.send(m.Hello("realm1", ROLES,
                   authmethods=["anonymous"]))
    _serve_authenticator(backend, lambda a: "anonymous")
    assert c.take(m.Welcome).authrole == "anonymous"
    # while an authenticator runs, other sessions are served
    c = Client(router, auth_config=cfg)
    c.send(m.Hello("realm1", ROLES, authmethods=["anonymous"]))
    other = Client(router).joined()
    other.subscribe("still.working")
    _serve_authenticator(backend, lambda a: "nosuchrole")
    assert c.take(m.Abort).reason == "wamp.error.no_such_role"


def test_dynamic_wampcra_and_cryptosign():
    router = make_router()
    backend = Client(router, auth={"authid": "auth", "authrole": "trusted"}).joined()
    backend.register("com.auth")
    key = SigningKey.generate()
    cfg = {"wampcra": {"type": "dynamic", "authenticator": "com.auth"},
           "cryptosign": {"type": "dynamic", "authenticator": "com.auth"}}
    c = Client(router, auth_config=cfg)
    c.send(m.Hello("realm1", ROLES, authmethods=["wampcra"], authid="peter"))
    _serve_authenticator(backend, lambda a: {"secret": "pw", "role": "anonymous"})
    ch = c.take(m.Challenge)
    c.send(m.Authenticate(compute_wcs(b"pw", ch.extra["challenge"].encode()).decode()))
    assert c.take(m.Welcome).authid == "peter"

    c = Client(router, auth_config=cfg)
    pub = key.verify_key.encode().hex()
    c.send(m.Hello("realm1", ROLES, authmethods=["cryptosign"], authid="alice",
                   authextra={"pubkey": pub}))
    args = _serve_authenticator(backend, lambda a: {"pubkey": pub, "role": "anonymous"})
    assert args[2]["authextra"]["pubkey"] == pub
    ch = c.take(m.Challenge)
    raw = binascii.a2b_hex(ch.extra["challenge"])
    c.send(m.Authenticate((key.sign(raw).signature + raw).hex()))
    assert c.take(m.Welcome).authid == "alice"


def test_static_permissions_most_specific_wins():
    roles = [{"name": "anonymous", "permissions": [
        {"uri": "com.", "match": "prefix", "allow": ALL},
        {"uri": "com.secret.*", "allow": {"subscribe": True}},           # inferred prefix
        {"uri": "com.secret.open", "allow": ALL},                          # exact beats prefix
        {"uri": "com..deny", "allow": {}},                                 # inferred wildcard
    ]}]
    router = make_router(realm(roles=roles))
    c = Client(router).joined()
    r = c.publish("com.secret.x", acknowledge=True)
    e = c.take(m.Error)
    assert (e.request, e.error) == (r, "wamp.error.not_authorized")
    c.publish("com.secret.open", acknowledge=True)
    c.take(m.Published)
    c.subscribe("com.secret.x")
    c.publish("com.public.y", acknowledge=True)
    c.take(m.Published)
    # wildcard loses against the prefix "com." (prefix is more specific)
    c.publish("com.x.deny", acknowledge=True)
    c.take(m.Published)
    c.call("org.other")
    assert c.take(m.Error).error == "wamp.error.not_authorized"


def test_dynamic_authorizer_and_cache():
    roles = [{"name": "anonymous", "authorizer": "com.authorize"},
             {"name": "backend", "permissions": [{"uri": "", "match": "prefix", "allow": ALL}]}]
    router = make_router(realm(roles=roles))
    backend = Client(router, auth={"authid": "b", "authrole": "trusted"}).joined()
    backend.register("com.authorize")
    c = Client(router).joined()
    # publish, then subscribe: order is kept even though the first waits on the authorizer
    c.send(m.Subscribe(1, "com.a"))
    c.send(m.Publish(2, "com.a", acknowledge=True, exclude_me=False))
    args = _serve_authenticator(backend, lambda a: {"allow": True, "cache": True})
    assert args[0]["session"] == c.id and args[1:3] == ["com.a", "subscribe"]
    _serve_authenticator(backend, lambda a: {"allow": True, "disclose": True})
    assert isinstance(c.take(), m.Subscribed)
    assert isinstance(c.take(), m.Published)   # before the event, as Crossbar
    ev = c.take(m.Event)
    assert ev.publisher == c.id
    # cached: no second authorizer call for subscribe
    c.send(m.Subscribe(3, "com.a"))
    assert isinstance(c.take(), m.Subscribed)
    backend.none()
    c.send(m.Call(4, "com.b"))
    _serve_authenticator(backend, lambda a: False)
    assert c.take(m.Error).error == "wamp.error.not_authorized"


def test_uri_check_strict_and_loose():
    router = make_router(realm(uri_check="strict"), realm("loose1"))
    c = Client(router).joined()
    c.send(m.Subscribe(1, "com.Example.onHello"))
    assert c.take(m.Error).error == "wamp.error.invalid_uri"
    c.publish("wamp.session.on_join", acknowledge=True)
    assert c.take(m.Error).error == "wamp.error.invalid_uri"
    c.send(m.Register(2, "wamp.my.proc"))
    assert c.take(m.Error).error == "wamp.error.invalid_uri"
    c2 = Client(router).joined(realm="loose1")  # loose is the default
    c2.subscribe("com.Example.onHello")
    # (URIs invalid even in loose mode never get here: autobahn's parser rejects them)
    assert not router.realms["loose1"].valid_uri("com..x", "exact")
    assert not router.realms["loose1"].valid_uri("com.a b", "exact")
    c2.subscribe("com..x", match="wildcard")


def test_router_close_sends_goodbye():
    router = make_router()
    a = Client(router).joined()
    b = Client(router)
    router.close()
    assert a.take(m.Goodbye).reason == "wamp.close.system_shutdown"
    assert a.peer.closed and b.peer.closed


def test_kill_goodbye_then_close_on_reply():
    router = make_router()
    a = Client(router).joined()
    b = Client(router).joined()
    assert a.meta("wamp.session.kill", b.id, reason="com.bye") is None
    g = b.take(m.Goodbye)
    assert g.reason == "com.bye"
    assert b.id not in router.realms["realm1"].sessions
    b.send(m.Goodbye("wamp.close.goodbye_and_out"))
    assert b.peer.closed
    settle()


def test_session_leaving_while_authorizer_thinks_is_dropped():
    roles = [{"name": "anonymous", "authorizer": "com.authorize"}]
    router = make_router(realm(roles=roles))
    backend = Client(router, auth={"authid": "b", "authrole": "trusted"}).joined()
    backend.register("com.authorize")
    c = Client(router).joined()
    c.send(m.Subscribe(1, "com.a"))
    c.session.detach()
    _serve_authenticator(backend, lambda a: True)
    settle()
    assert not router.realms["realm1"].broker.state.by_id
    assert c.messages == []


def test_every_ended_session_is_forgotten_on_detach():
    router = make_router()
    aborted = Client(router)
    aborted.join(realm="nope")                      # ABORT, transport closed
    violator = Client(router).joined()
    violator.send(m.Hello("realm1", ROLES))         # protocol violation
    killed = Client(router).joined()
    admin = Client(router).joined()
    admin.meta("wamp.session.kill", killed.id)
    killed.send(m.Goodbye())
    for c in (aborted, violator, killed, admin):
        c.session.detach()
        c.session.detach()  # idempotent
    assert not router.sessions and router.session_count() == 0


def test_callee_answers_overtake_a_message_waiting_for_the_authorizer():
    roles = [{"name": "anonymous", "authorizer": "com.authorize"}]
    router = make_router(realm(roles=roles))
    backend = Client(router, auth={"authid": "b", "authrole": "trusted"}).joined()
    backend.register("com.authorize")
    caller = Client(router, auth={"authid": "c", "authrole": "trusted"}).joined()
    worker = Client(router).joined()
    worker.send(m.Register(1, "com.work"))
    _serve_authenticator(backend, lambda a: True)
    worker.take(m.Registered)
    r = caller.call("com.work")
    inv = worker.take(m.Invocation)
    worker.send(m.Publish(2, "com.x", acknowledge=True))   # waits for the authorizer
    worker.send(m.Yield(inv.request, args=["done"]))        # must not wait behind it
    res = caller.take(m.Result)  # before the authorizer answered the PUBLISH
    assert (res.request, res.args) == (r, ["done"])
    _serve_authenticator(backend, lambda a: True)
    assert isinstance(worker.take(), m.Published)


def test_starred_permission_uris():
    from geonode.router.matching import infer_match
    assert infer_match("com.example.*") == ("com.example.", "prefix")
    assert infer_match("*") == ("", "prefix")
    assert infer_match("com.*.topic.*") == ("com..topic.", "wildcard")
    assert infer_match("com..topic") == ("com..topic", "wildcard")
    assert infer_match("com.example.topic") == ("com.example.topic", "exact")
    roles = [{"name": "anonymous", "permissions": [
        {"uri": "com.*.open", "allow": {"publish": True}}]}]
    router = make_router(realm(roles=roles))
    c = Client(router).joined()
    c.publish("com.any.open", acknowledge=True)
    c.take(m.Published)
    c.publish("com.any.closed", acknowledge=True)
    assert c.take(m.Error).error == "wamp.error.not_authorized"
