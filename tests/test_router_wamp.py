"""The router over real sockets: autobahn-python (asyncio) clients against a geonode node.

One node for the module; each test runs its own asyncio loop. Covers every serializer, the
broker and dealer features, authentication methods, meta API and robustness end to end.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import time

import pytest
import txaio

txaio.use_asyncio()

import websocket  # noqa: E402  (websocket-client, for raw protocol-violation frames)
from autobahn.wamp.auth import compute_wcs, derive_key  # noqa: E402
from autobahn.wamp.exception import ApplicationError  # noqa: E402
from autobahn.wamp.types import (  # noqa: E402
    CallOptions,
    PublishOptions,
    RegisterOptions,
    SubscribeOptions,
)
from nacl.signing import SigningKey  # noqa: E402
from support import async_wait_for, scaled, web_node  # noqa: E402
from support.wamp import rawsocket_session, ws_session  # noqa: E402

SERIALIZERS = ["json", "msgpack", "cbor", "ubjson"]
ALL = {"call": True, "register": True, "publish": True, "subscribe": True}
KEY = SigningKey.generate()

REALMS = [{"name": "realm1", "roles": [
    {"name": "anonymous", "permissions": [
        {"uri": "", "match": "prefix", "allow": ALL,
         "disclose": {"caller": True, "publisher": True}},
        {"uri": "secret.", "match": "prefix", "allow": {"subscribe": True}}]},
    {"name": "user", "permissions": [{"uri": "", "match": "prefix", "allow": ALL}]},
    {"name": "dyn", "authorizer": "com.example.authorize"},
]}]
AUTH = {
    "ticket": {"type": "static", "principals": {"joe": {"ticket": "joe-secret", "role": "user"}}},
    "wampcra": {"type": "static", "users": {"peter": {"secret": "pw", "role": "user",
                                                      "salt": "salt1", "iterations": 100,
                                                      "keylen": 32}}},
    "cryptosign": {"type": "static", "principals": {"alice": {
        "authorized_keys": [KEY.verify_key.encode().hex()], "role": "user"}}},
}
DYNAUTH = {"ticket": {"type": "dynamic", "authenticator": "com.example.authenticate"}}


@pytest.fixture(scope="module")
def node(start_module_node):
    ws = {"type": "websocket", "serializers": SERIALIZERS}
    cfg = web_node(paths={
        "ws": ws,
        "auth": dict(ws, auth=AUTH),
        "dynauth": dict(ws, auth=DYNAUTH),
    }, realms=REALMS)
    # the same router behind a RawSocket transport too: the core is transport-independent
    cfg["workers"][0]["transports"].append({
        "type": "rawsocket", "serializers": ["json", "msgpack", "cbor"],
        "endpoint": {"type": "tcp", "port": "$PORT2", "interface": "127.0.0.1"}})
    return start_module_node(cfg, nports=2)


async def connect(node, path="ws", serializer="json", realm="realm1", rawsocket=False,
                  **auth):
    if rawsocket:
        return await rawsocket_session(serializer, port=node.ports[1], realm=realm, **auth)
    return await ws_session(node.port, serializer, path=path, realm=realm, **auth)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, scaled(30)))


async def _next(q: asyncio.Queue, timeout=5):
    return await asyncio.wait_for(q.get(), scaled(timeout))


def slow_callee(entered: asyncio.Queue, interrupted: asyncio.Future):
    """A callee that never answers (the scenario): says when a call reached it, and when
    the router interrupted it."""
    async def slow():
        entered.put_nowait(True)
        try:
            await asyncio.sleep(scaled(10))  # the scenario: a callee that never answers
        except asyncio.CancelledError:
            if not interrupted.done():
                interrupted.set_result(True)
            raise

    return slow


# -- pub/sub and RPC, every serializer ------------------------------------------------------
@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_pubsub_and_rpc_every_serializer(node, serializer):
    async def main():
        a = await connect(node, serializer=serializer)
        b = await connect(node, serializer=serializer)
        events: asyncio.Queue = asyncio.Queue()

        def on_event(*args, details=None, **kwargs):
            events.put_nowait((args, kwargs, details))

        await a.subscribe(on_event, f"com.{serializer}.", SubscribeOptions(
            match="prefix", details_arg="details"))
        await a.register(lambda x, y: x * y, f"com.{serializer}.mul")
        assert await b.call(f"com.{serializer}.mul", 6, 7) == 42
        pub = await b.publish(f"com.{serializer}.t1", 1, b"\x00bin", k="ü",
                              options=PublishOptions(acknowledge=True))
        args, kwargs, details = await _next(events)
        assert args == (1, b"\x00bin") and kwargs == {"k": "ü"}
        assert details.topic == f"com.{serializer}.t1"
        assert details.publication == pub.id and details.publisher == b._session_id
        # publisher exclusion (default) and exclude_me=False: the router delivers in order,
        # so an event for t2 would come before t3's
        await a.publish(f"com.{serializer}.t2", options=PublishOptions(acknowledge=True))
        await a.publish(f"com.{serializer}.t3", options=PublishOptions(
            acknowledge=True, exclude_me=False))
        assert (await _next(events))[2].topic == f"com.{serializer}.t3"
        assert events.empty()
        await a.leave()
        await b.leave()
    run(main())


def test_black_white_listing_and_retention(node):
    async def main():
        p = await connect(node)
        s1, s2 = await connect(node), await connect(node)
        q1, q2 = asyncio.Queue(), asyncio.Queue()
        await s1.subscribe(lambda x: q1.put_nowait(x), "com.bw.t")
        await s2.subscribe(lambda x: q2.put_nowait(x), "com.bw.t")
        ack = PublishOptions(acknowledge=True)
        await p.publish("com.bw.t", 1, options=PublishOptions(acknowledge=True,
                                                              exclude=[s1._session_id]))
        assert await _next(q2) == 1
        await p.publish("com.bw.t", 2, options=PublishOptions(acknowledge=True,
                                                              eligible=[s1._session_id]))
        assert await _next(q1) == 2
        await p.publish("com.bw.t", 3, options=PublishOptions(
            acknowledge=True, exclude_authrole=["anonymous"]))
        await p.publish("com.bw.t", 4, options=ack)
        assert await _next(q1) == 4 and await _next(q2) == 4
        # retention
        await p.publish("com.bw.retained", "kept", options=PublishOptions(acknowledge=True,
                                                                          retain=True))
        q3: asyncio.Queue = asyncio.Queue()
        await s1.subscribe(lambda x, details=None: q3.put_nowait((x, details.retained)),
                           "com.bw.retained",
                           SubscribeOptions(get_retained=True, details_arg="details"))
        assert await _next(q3) == ("kept", True)
        for s in (p, s1, s2):
            await s.leave()
    run(main())


def test_rpc_features(node):
    async def main():
        caller = await connect(node)
        c1, c2 = await connect(node), await connect(node, serializer="msgpack")
        # pattern registration: INVOCATION details carry the procedure
        await c1.register(lambda details=None: details.procedure, "com.rpc.wild..x",
                          RegisterOptions(match="wildcard", details_arg="details"))
        assert await caller.call("com.rpc.wild.any.x") == "com.rpc.wild.any.x"
        # caller disclosure via the role
        await c1.register(lambda details=None: details.caller, "com.rpc.who",
                          RegisterOptions(details_arg="details"))
        assert await caller.call("com.rpc.who") == caller._session_id
        # shared registration, round robin
        await c1.register(lambda: 1, "com.rpc.rr", RegisterOptions(invoke="roundrobin"))
        await c2.register(lambda: 2, "com.rpc.rr", RegisterOptions(invoke="roundrobin"))
        got = [await caller.call("com.rpc.rr") for _ in range(4)]
        assert got == [1, 2, 1, 2]
        # progressive results

        async def countdown(n, details=None):
            for i in range(n, 0, -1):
                details.progress(i)
                await asyncio.sleep(0.01)  # the scenario: progress spread over time
            return "done"

        await c2.register(countdown, "com.rpc.progress", RegisterOptions(details_arg="details"))
        progress: list = []
        res = await caller.call("com.rpc.progress", 3,
                                options=CallOptions(on_progress=progress.append))
        assert res == "done" and progress == [3, 2, 1]
        # errors
        with pytest.raises(ApplicationError) as e:
            await caller.call("com.rpc.none")
        assert e.value.error == "wamp.error.no_such_procedure"
        # uri_check is loose by default (as in Crossbar): camelCase is fine
        await c1.register(lambda: "camel", "com.rpc.camelCase")
        assert await caller.call("com.rpc.camelCase") == "camel"
        with pytest.raises(ApplicationError) as e:
            await caller.register(lambda: 0, "wamp.mine")
        assert e.value.error == "wamp.error.invalid_uri"
        with pytest.raises(ApplicationError) as e:
            await caller.call("secret.x")
        assert e.value.error == "wamp.error.not_authorized"
        for s in (caller, c1, c2):
            await s.leave()
    run(main())


def test_call_timeout_and_callee_leaving(node):
    async def main():
        caller, callee = await connect(node), await connect(node)
        interrupted = asyncio.get_running_loop().create_future()
        entered: asyncio.Queue = asyncio.Queue()
        await callee.register(slow_callee(entered, interrupted), "com.to.slow")
        t0 = time.monotonic()
        with pytest.raises(ApplicationError) as e:
            await caller.call("com.to.slow", options=CallOptions(timeout=500))  # ms (WAMP spec)
        took = time.monotonic() - t0
        assert e.value.error == "wamp.error.timeout"
        assert 0.4 < took < scaled(2.0), took
        assert await asyncio.wait_for(interrupted, scaled(5))   # the callee got INTERRUPT
        await _next(entered)
        # callee goes away mid-call: the caller gets wamp.error.canceled
        fut = asyncio.ensure_future(caller.call("com.to.slow"))
        await _next(entered)  # the call reached the callee
        callee.disconnect()
        with pytest.raises(ApplicationError) as e:
            await asyncio.wait_for(fut, scaled(5))
        assert e.value.error == "wamp.error.canceled"
        await caller.leave()
    run(main())


# -- authentication ------------------------------------------------------------------------
def test_ticket_wampcra_cryptosign(node):
    async def main():
        s = await connect(node, "auth", authmethods=["ticket"], authid="joe",
                          on_challenge=lambda ch: "joe-secret")
        assert (s.details.authid, s.details.authrole, s.details.authmethod) == (
            "joe", "user", "ticket")
        await s.leave()
        with pytest.raises(ApplicationError) as e:
            await connect(node, "auth", authmethods=["ticket"], authid="joe",
                          on_challenge=lambda ch: "wrong")
        assert e.value.error == "wamp.error.authentication_failed"

        def cra(ch):
            key = derive_key(b"pw", ch.extra["salt"], ch.extra["iterations"], ch.extra["keylen"])
            return compute_wcs(key, ch.extra["challenge"].encode()).decode()

        s = await connect(node, "auth", authmethods=["wampcra"], authid="peter", on_challenge=cra)
        assert s.details.authmethod == "wampcra"
        await s.leave()

        def sign(ch):
            raw = binascii.a2b_hex(ch.extra["challenge"])
            return (KEY.sign(raw).signature + raw).hex()

        s = await connect(node, "auth", authmethods=["cryptosign"], authid="alice",
                          authextra={"pubkey": KEY.verify_key.encode().hex()}, on_challenge=sign)
        assert (s.details.authid, s.details.authmethod) == ("alice", "cryptosign")
        await s.leave()
        with pytest.raises(ApplicationError) as e:
            await connect(node, "auth")  # anonymous is not configured there
        assert e.value.error == "wamp.error.no_auth_method"
        with pytest.raises(ApplicationError) as e:
            await connect(node, realm="nosuchrealm")
        assert e.value.error == "wamp.error.no_such_realm"
    run(main())


def test_dynamic_authenticator_and_authorizer(node):
    async def main():
        backend = await connect(node)
        seen = []

        def authenticate(realm, authid, details):
            seen.append((realm, authid, details["ticket"]))
            if details["ticket"] != "let-me-in":
                raise ApplicationError("wamp.error.not_authorized", "no")
            return {"role": "dyn", "extra": {"hello": authid}}

        def authorize(session, uri, action, options):
            return {"allow": uri.startswith("com.dyn.ok"), "cache": True}

        await backend.register(authenticate, "com.example.authenticate")
        await backend.register(authorize, "com.example.authorize")
        s = await connect(node, "dynauth", authmethods=["ticket"], authid="dyna",
                          on_challenge=lambda ch: "let-me-in")
        assert (s.details.authrole, s.details.authextra) == ("dyn", {"hello": "dyna"})
        assert seen == [("realm1", "dyna", "let-me-in")]
        await s.register(lambda: "ok", "com.dyn.ok.proc")
        assert await s.call("com.dyn.ok.proc") == "ok"
        with pytest.raises(ApplicationError) as e:
            await s.call("com.dyn.other")
        assert e.value.error == "wamp.error.not_authorized"
        await s.leave()
        with pytest.raises(ApplicationError) as e:
            await connect(node, "dynauth", authmethods=["ticket"], authid="x",
                          on_challenge=lambda ch: "nope")
        assert e.value.error == "wamp.error.not_authorized"
        await backend.leave()
    run(main())


# -- meta API ------------------------------------------------------------------------------
def test_meta_api_and_testament(node):
    async def main():
        admin = await connect(node)
        joins: asyncio.Queue = asyncio.Queue()
        leaves: asyncio.Queue = asyncio.Queue()
        gone: asyncio.Queue = asyncio.Queue()
        await admin.subscribe(lambda d: joins.put_nowait(d), "wamp.session.on_join")
        await admin.subscribe(lambda sid: leaves.put_nowait(sid), "wamp.session.on_leave")
        await admin.subscribe(lambda *a: gone.put_nowait(a), "com.meta.gone")
        s = await connect(node, serializer="cbor")
        d = await _next(joins)
        assert d["session"] == s._session_id and d["authrole"] == "anonymous"
        assert s._session_id in await admin.call("wamp.session.list")
        assert await admin.call("wamp.session.count") >= 2
        info = await admin.call("wamp.session.get", s._session_id)
        assert info["transport"]["channel_serializer"] == "cbor"
        reg = await s.register(lambda: 1, "com.meta.p")
        assert await admin.call("wamp.registration.lookup", "com.meta.p") == reg.id
        assert await admin.call("wamp.registration.list_callees", reg.id) == [s._session_id]
        await s.call("wamp.session.add_testament", "com.meta.gone", ["bye"], {})
        sid = s._session_id
        s.disconnect()  # abnormal end: the testament is published
        assert await _next(gone) == ("bye",)
        assert await _next(leaves) == sid
        assert await admin.call("wamp.registration.lookup", "com.meta.p") is None
        # kill
        k = await connect(node)
        await _next(joins)
        await admin.call("wamp.session.kill", k._session_id, reason="com.kicked")
        details = await asyncio.wait_for(k.left, scaled(5))
        assert details.reason == "com.kicked"
        await admin.leave()
    run(main())


# -- robustness ----------------------------------------------------------------------------
@pytest.mark.parametrize("frames", [
    ['[16, 1, {}, "com.x"]'],                                    # PUBLISH before HELLO
    ['[1, "realm1", {"roles": {"caller": {}}}]', '[1, "realm1", {"roles": {"caller": {}}}]'],
    ['[1, "realm1", {"roles": {"caller": {}}}]', '[999, 1]'],     # unknown message type
    ['{"not": "a list"}'],
])
def test_protocol_violation_ends_only_that_session(node, frames):
    async def main():
        other = await connect(node)
        ws = websocket.create_connection(f"ws://127.0.0.1:{node.port}/ws",
                                         subprotocols=["wamp.2.json"], timeout=scaled(5))
        got = []
        try:
            for f in frames:
                ws.send(f)
            while True:
                try:
                    data = ws.recv()
                except websocket.WebSocketConnectionClosedException:
                    break
                if not data:
                    break
                got.append(json.loads(data))
        finally:
            ws.close()
        aborts = [g for g in got if g[0] == 3]
        assert aborts and aborts[-1][2] == "wamp.error.protocol_violation", got
        assert await other.call("wamp.session.count") >= 1  # the other session is fine
        await other.leave()
    run(main())
    assert node.proc.poll() is None


def test_cancel_and_registration_revocation(node):
    async def main():
        caller, callee, admin = await connect(node), await connect(node), await connect(node)
        interrupted = asyncio.get_running_loop().create_future()
        entered: asyncio.Queue = asyncio.Queue()
        reg = await callee.register(slow_callee(entered, interrupted), "com.cancel.slow")
        fut = asyncio.ensure_future(caller.call("com.cancel.slow"))
        await _next(entered)  # the call reached the callee
        fut.cancel()   # autobahn sends CANCEL; the router INTERRUPTs the callee
        assert await asyncio.wait_for(interrupted, scaled(5))
        # revocation: the router unregisters the callee (UNREGISTERED with request 0)
        await admin.call("wamp.registration.remove_callee", reg.id, callee._session_id)

        async def gone() -> bool:
            return await admin.call("wamp.registration.lookup", "com.cancel.slow") is None

        await async_wait_for(gone, 5, "the registration to be gone")
        with pytest.raises(ApplicationError) as e:
            await caller.call("com.cancel.slow")
        assert e.value.error == "wamp.error.no_such_procedure"
        assert callee.is_attached()   # the callee's session survived the revocation
        for s in (caller, callee, admin):
            await s.leave()
    run(main())


@pytest.mark.parametrize("serializer", ["json", "msgpack", "cbor"])
def test_rawsocket_and_websocket_clients_share_the_router(node, serializer):
    async def main():
        raw = await connect(node, serializer=serializer, rawsocket=True)
        ws = await connect(node, serializer="json")
        assert raw.details.authrole == "anonymous"
        got: asyncio.Queue = asyncio.Queue()
        await ws.subscribe(lambda x: got.put_nowait(x), f"com.raw.{serializer}")
        await raw.register(lambda x: x + 1, f"com.raw.{serializer}.inc")
        assert await ws.call(f"com.raw.{serializer}.inc", 41) == 42
        await raw.publish(f"com.raw.{serializer}", "hi", options=PublishOptions(acknowledge=True))
        assert await _next(got) == "hi"
        info = await ws.call("wamp.session.get", raw._session_id)
        assert info["transport"]["type"] == "rawsocket"
        await raw.leave()
        await ws.leave()
    run(main())
