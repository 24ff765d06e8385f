"""WAMP-cryptosign channel binding (tls-unique) with real autobahn-python asyncio clients.

One node: WebSocket over TLS ($PORT), the same path over plain TCP ($PORT2), RawSocket over
TLS ($PORT3), all with the same static cryptosign principal. The in-process part at the end
covers the dynamic authenticator with a transport that reports a channel id.
"""

from __future__ import annotations

import asyncio
import os
import ssl

import pytest
from autobahn.asyncio.rawsocket import WampRawSocketClientFactory
from autobahn.asyncio.wamp import ApplicationSession
from autobahn.asyncio.websocket import WampWebSocketClientFactory
from autobahn.wamp import message as m
from autobahn.wamp import role
from autobahn.wamp.auth import AuthCryptoSign
from autobahn.wamp.cryptosign import CryptosignKey
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import ComponentConfig
from nacl.signing import SigningKey
from support import router_config, scaled
from support.certs import self_signed
from support.router import Client, make_router
from support.wamp import make_serializer

KEY = SigningKey.generate()
PRIV, PUB = KEY.encode().hex(), KEY.verify_key.encode().hex()
AUTH = {"cryptosign": {"type": "static", "principals": {
    "alice": {"authorized_keys": [PUB], "role": "anonymous"}}}}
TLS = {"key": "server.key", "certificate": "server.crt"}
BOUND = {"channel_binding": "tls-unique"}


@pytest.fixture(scope="module")
def node(start_module_node):
    def web(port: str, tls: dict | None) -> dict:
        endpoint = {"type": "tcp", "port": port, "interface": "127.0.0.1"}
        if tls:
            endpoint["tls"] = tls
        return {"type": "web", "endpoint": endpoint,
                "paths": {"ws": {"type": "websocket", "auth": AUTH}}}

    cert, key = self_signed()
    transports = [web("$PORT", TLS), web("$PORT2", None),
                  {"type": "rawsocket", "auth": AUTH,
                   "endpoint": {"type": "tcp", "port": "$PORT3", "interface": "127.0.0.1",
                                "tls": TLS}}]
    return start_module_node(router_config(transports), nports=3,
                             files={"server.crt": cert, "server.key": key})


def _ctx(node, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(node.dir / "server.crt"))
    if version is not None:   # pin the protocol version on the client
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


class Joiner(ApplicationSession):
    """Joins as alice with cryptosign; ``sign(session, challenge)`` answers the CHALLENGE."""

    def __init__(self, config, joined, authextra: dict, sign):
        super().__init__(config)
        self._joined, self._authextra, self._sign = joined, authextra, sign
        self.challenge = None

    def onConnect(self):
        self.join(self.config.realm, authmethods=["cryptosign"], authid="alice",
                  authextra={"pubkey": PUB, **self._authextra})

    def onChallenge(self, challenge):
        self.challenge = challenge
        return self._sign(self, challenge)

    def onJoin(self, details):
        self._joined.done() or self._joined.set_result(self)

    def onLeave(self, details):
        if not self._joined.done():
            self._joined.set_exception(ApplicationError(details.reason, details.message))
        super().onLeave(details)

    def onDisconnect(self):
        self._joined.done() or self._joined.set_exception(ConnectionError("disconnected"))


def autobahn_signer(authextra: dict):
    """The stock client path: autobahn's AuthCryptoSign reads the channel id itself."""
    auth = AuthCryptoSign(privkey=PRIV, authid="alice", authextra=dict(authextra))
    return lambda session, challenge: auth.on_challenge(session, challenge)


def key_signer(channel_id: bytes | None):
    """Signs with a given channel id (None: the bare challenge, no binding)."""
    key = CryptosignKey.from_bytes(KEY.encode())
    kind = "tls-unique" if channel_id is not None else None
    return lambda session, challenge: key.sign_challenge(challenge, channel_id=channel_id,
                                                         channel_id_type=kind)


async def connect(node, kind: str, authextra: dict, sign, ctx: ssl.SSLContext | None = None,
                  wait: bool = True):
    """A Joiner over ``kind`` ("wss", "ws" or "rawsocket+tls"); with ``wait``, joined."""
    loop = asyncio.get_running_loop()
    joined = loop.create_future()

    def make():
        return Joiner(ComponentConfig("realm1"), joined, authextra, sign)

    if kind == "rawsocket+tls":
        factory = WampRawSocketClientFactory(make, serializer=make_serializer("json"))
        port, tls = node.ports[2], ctx or _ctx(node)
    else:
        scheme, port = (("wss", node.ports[0]) if kind == "wss" else ("ws", node.ports[1]))
        tls = (ctx or _ctx(node)) if kind == "wss" else None
        factory = WampWebSocketClientFactory(make, url=f"{scheme}://127.0.0.1:{port}/ws",
                                             serializers=[make_serializer("json")])
    extra = {"ssl": tls, "server_hostname": "127.0.0.1"} if tls else {}
    transport, _ = await loop.create_connection(factory, "127.0.0.1", port, **extra)
    if wait:
        return await asyncio.wait_for(joined, scaled(10))
    return joined, transport


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, scaled(30)))


def _client_channel_id(session) -> bytes:
    return session._transport.transport_details.channel_id["tls-unique"]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls1.2", "tls1.3"])
def test_wss_bound_join(node, version):
    """autobahn's own cryptosign client with channel_binding joins over wss; client and
    router computed the same tls-unique id (TLS 1.3 too, where tls-unique is the client's
    Finished message on both ends)."""
    async def main():
        s = await connect(node, "wss", BOUND, autobahn_signer(BOUND), _ctx(node, version))
        assert s._transport.transport.get_extra_info("ssl_object").version() == {
            ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
        assert s.challenge.extra["channel_binding"] == "tls-unique"
        assert (s._authmethod, s._authid) == ("cryptosign", "alice")
        info = await s.call("wamp.session.get", s._session_id)
        cid = _client_channel_id(s)
        assert len(cid) == 32 and cid != b"\x00" * 32
        assert info["transport"]["channel_id"] == {"tls-unique": cid.hex()}
        s.leave()

    _run(main())


def test_rawsocket_tls_bound_join(node):
    async def main():
        s = await connect(node, "rawsocket+tls", BOUND, autobahn_signer(BOUND))
        info = await s.call("wamp.session.get", s._session_id)
        assert info["authmethod"] == "cryptosign"
        assert info["transport"]["channel_id"] == {"tls-unique": _client_channel_id(s).hex()}
        s.leave()

    _run(main())


def test_unbound_or_foreign_signature_refused(node):
    """Binding requested, but the client signs the bare challenge, or binds it to another
    TLS connection (a relay: the challenge of B signed with A's channel id): both refused."""
    async def main():
        with pytest.raises(ApplicationError) as e:
            await connect(node, "wss", BOUND, key_signer(None))
        assert e.value.error == "wamp.error.authentication_failed"
        assert "bound to this TLS channel" in e.value.args[0]
        # connection A stays at its CHALLENGE; its channel id signs B's challenge
        loop = asyncio.get_running_loop()
        seen = loop.create_future()

        def stall(session, challenge):
            seen.set_result(_client_channel_id(session))
            return loop.create_future()    # never answered

        joined_a, transport_a = await connect(node, "wss", BOUND, stall, wait=False)
        foreign = await asyncio.wait_for(seen, scaled(10))
        with pytest.raises(ApplicationError) as e:
            await connect(node, "wss", BOUND, key_signer(foreign))
        assert e.value.error == "wamp.error.authentication_failed"
        transport_a.close()
        await asyncio.wait_for(asyncio.gather(joined_a, return_exceptions=True), scaled(10))
        # rawsocket too
        with pytest.raises(ApplicationError) as e:
            await connect(node, "rawsocket+tls", BOUND, key_signer(os.urandom(32)))
        assert e.value.error == "wamp.error.authentication_failed"

    _run(main())


def test_binding_over_plain_tcp_refused(node):
    """No TLS, no channel id: the HELLO is refused before any CHALLENGE, saying why."""
    async def main():
        with pytest.raises(ApplicationError) as e:
            await connect(node, "ws", BOUND, autobahn_signer(BOUND))
        assert e.value.error == "wamp.error.not_authorized"
        assert ('channel binding "tls-unique" requested, but the transport has no TLS '
                'channel ID') in e.value.args[0]
        with pytest.raises(ApplicationError) as e:
            await connect(node, "wss", {"channel_binding": "tls-exporter"}, key_signer(None))
        assert e.value.error == "wamp.error.not_authorized"
        assert 'invalid channel binding type "tls-exporter" requested' in e.value.args[0]
        # the node still serves: unbound cryptosign over plain ws and over wss
        for kind in ("ws", "wss"):
            s = await connect(node, kind, {}, autobahn_signer({}))
            assert s.challenge.extra["channel_binding"] is None
            info = await s.call("wamp.session.get", s._session_id)
            assert (info["transport"]["channel_id"] == {}) == (kind == "ws")
            s.leave()

    _run(main())


@pytest.mark.inprocess
def test_dynamic_authenticator_binding_in_process():
    """The dynamic path binds the same way; the authenticator sees the channel id in
    ``details.transport`` (in-process router, a peer that reports a channel id)."""
    cid = os.urandom(32)
    router = make_router()
    backend = Client(router, auth={"authid": "auth", "authrole": "trusted"}).joined()
    reg = backend.register("com.auth")
    cfg = {"cryptosign": {"type": "dynamic", "authenticator": "com.auth"}}

    def attempt(channel_id: bytes) -> m.Message:
        c = Client(router, auth_config=cfg)
        c.peer.transport_details["channel_id"] = {"tls-unique": cid.hex()}
        c.send(m.Hello("realm1", dict(role.DEFAULT_CLIENT_ROLES), authmethods=["cryptosign"],
                       authid="alice", authextra={"pubkey": PUB, **BOUND}))
        inv = backend.take(m.Invocation)
        assert inv.args[2]["transport"]["channel_id"] == {"tls-unique": cid.hex()}
        backend.send(m.Yield(inv.request, args=[{"role": "anonymous", "pubkey": PUB}]))
        ch = c.take(m.Challenge)
        assert ch.extra["channel_binding"] == "tls-unique"
        challenge = bytes.fromhex(ch.extra["challenge"])
        signed = bytes(a ^ b for a, b in zip(challenge, channel_id, strict=True))
        c.send(m.Authenticate((KEY.sign(signed).signature + signed).hex()))
        return c.take()

    assert reg
    assert isinstance(attempt(cid), m.Welcome)
    a = attempt(os.urandom(32))
    assert isinstance(a, m.Abort) and a.reason == "wamp.error.authentication_failed"
