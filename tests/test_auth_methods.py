"""WAMP-SCRAM, WAMP-TLS, cookie and function authenticators against a real node, with
autobahn-python clients (autobahn's own AuthScram, real TLS client certificates, real
Set-Cookie/Cookie headers)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from autobahn.asyncio.websocket import WampWebSocketClientFactory, WampWebSocketClientProtocol
from autobahn.wamp.auth import AuthScram
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import Challenge, ComponentConfig
from support import launch, realm, role, router_config, scaled, wait_for
from support.certs import certificate, new_key, pem
from support.wamp import Client, leave, make_serializer, ws_session
from support.ws import RawWamp

from geonode.router.auth.scram import principal as scram_principal

FAILED = "wamp.error.authentication_failed"
JS = Path(__file__).resolve().parent / "js"
PW = "s3cr3t pässword"

FUNCS = r'''
from autobahn.wamp.exception import ApplicationError

SEEN = []

def make_ticket(config, controller):
    def authenticate(realm, authid, details):
        if details["ticket"] == config["ticket"]:
            return {"role": "anonymous", "extra": {"via": "function"}}
        raise ApplicationError("wamp.error.not_authorized", "wrong ticket for " + authid)
    return authenticate

def make_tls(config, controller):
    def authenticate(realm, authid, details):
        cert = details["transport"]["peer_cert"]
        return {"role": "anonymous", "authid": cert["subject"]["cn"]}
    return authenticate

def make_scram(config, controller):
    def authenticate(realm, authid, details):
        if authid not in config["principals"]:
            raise ApplicationError("wamp.error.not_authorized", "no such user")
        return config["principals"][authid]
    return authenticate

def broken(config, controller):
    raise RuntimeError("factory exploded")
'''


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, scaled(60)))


async def _session(port: int, path: str, *, ssl_ctx=None, cookie: str | None = None,
                   serializer: str = "json", **auth):
    """A joined autobahn session; ``session.set_cookie``: the 101's Set-Cookie (or None)."""
    loop = asyncio.get_running_loop()
    joined, left = loop.create_future(), loop.create_future()
    seen: dict = {}

    class Proto(WampWebSocketClientProtocol):
        def onConnect(self, response):
            seen.update(response.headers)
            return super().onConnect(response)

    scheme = "wss" if ssl_ctx is not None else "ws"
    factory = WampWebSocketClientFactory(
        lambda: Client(ComponentConfig("realm1"), joined, left, **auth),
        url=f"{scheme}://127.0.0.1:{port}/{path}", serializers=[make_serializer(serializer)],
        headers={"Cookie": cookie} if cookie else None)
    factory.protocol = Proto
    tls = {"ssl": ssl_ctx, "server_hostname": "127.0.0.1"} if ssl_ctx is not None else {}
    await loop.create_connection(factory, "127.0.0.1", port, **tls)
    try:
        session = await asyncio.wait_for(joined, scaled(20))
    except ApplicationError as e:
        e.set_cookie = seen.get("set-cookie")
        raise
    session.left = left
    session.set_cookie = seen.get("set-cookie")
    return session


def _cookie_value(set_cookie: str) -> str:
    return set_cookie.split(";")[0].split("=", 1)[1]


# -- SCRAM and function authenticators ---------------------------------------------------------

ARGON = scram_principal(PW, "argon2id-13", iterations=2, memory=512, role="anonymous")
PBKDF = scram_principal(PW, "pbkdf2", iterations=1000, role="anonymous")


@pytest.fixture(scope="module")
def node(start_module_node):
    ticket = {"ticket": {"type": "static", "principals": {"joe": {"ticket": "t1",
                                                                  "role": "user"}}},
              "cookie": {}}
    paths = {
        "scram": {"type": "websocket", "auth": {"scram": {"type": "static", "principals": {
            "alice": ARGON, "bob": PBKDF}}}},
        "scramfn": {"type": "websocket", "auth": {"scram": {
            "type": "function", "create": "authfuncs.make_scram",
            "config": {"principals": {"carol": ARGON}}}}},
        "fn": {"type": "websocket", "auth": {"ticket": {
            "type": "function", "create": "authfuncs.make_ticket", "config": {"ticket": "t0"}}}},
        "broken": {"type": "websocket", "auth": {"ticket": {
            "type": "function", "create": "authfuncs.broken"}}},
        "ck": {"type": "websocket", "auth": ticket, "cookie": {"max_age": 3600}},
        "anon": {"type": "websocket", "cookie": {"name": "trk", "length": 16}},
    }
    cfg = router_config([{"type": "web", "paths": paths, "endpoint": {
        "type": "tcp", "port": "$PORT", "interface": "127.0.0.1"}}])
    cfg["workers"][0]["options"] = {"pythonpath": ["."]}
    cfg["workers"][0]["realms"][0]["roles"].append(role("user", [
        {"uri": "", "match": "prefix", "allow": {"call": True, "register": True,
                                                 "publish": True, "subscribe": True}}]))
    return start_module_node(cfg, files={"authfuncs.py": FUNCS})


def _scram_auth(authid: str, password: str = PW) -> tuple[AuthScram, dict]:
    scram = AuthScram(authid=authid, password=password)
    return scram, {"authmethods": ["scram"], "authid": authid, "authextra": scram.authextra,
                   "on_challenge": lambda ch: scram.on_challenge(None, ch)}


def test_scram_argon2id_with_autobahn(node):
    async def main():
        for path, authid in (("scram", "alice"), ("scramfn", "carol")):
            for ser in ("json", "cbor"):
                scram, auth = _scram_auth(authid)
                s = await _session(node.port, path, serializer=ser, **auth)
                info = await s.call("wamp.session.get", s._session_id)
                assert (info["authid"], info["authmethod"]) == (authid, "scram")
                assert info["authprovider"] == ("static" if path == "scram" else "function")
                # the client checks the router's signature: it knew the keys
                assert scram.on_welcome(s, s.details.authextra) is None
                await leave(s)
        for path, authid in (("scram", "alice"), ("scram", "nobody"), ("scramfn", "nobody")):
            _, auth = _scram_auth(authid, "wrong")
            with pytest.raises(ApplicationError) as e:
                await _session(node.port, path, **auth)
            assert e.value.error == FAILED, (path, authid)

    _run(main())


def _pbkdf2_client(authid: str, password: str):
    """WAMP-SCRAM with PBKDF2 as the spec defines it (autobahn's client crashes on PBKDF2:
    it hands the base64 salt text to its pbkdf2(), which wants bytes)."""
    nonce = base64.b64encode(os.urandom(16)).decode()

    def on_challenge(ch):
        e = ch.extra
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(e["salt"]),
                                     e["iterations"], 32)
        msg = (f"n={authid},r={nonce},r={e['nonce']},s={e['salt']},i={e['iterations']},"
               f"c=,r={e['nonce']}").encode()
        ck = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        sig = hmac.new(hashlib.sha256(ck).digest(), msg, hashlib.sha256).digest()
        return base64.b64encode(bytes(a ^ b for a, b in zip(ck, sig, strict=True))).decode()

    return {"authmethods": ["scram"], "authid": authid, "authextra": {"nonce": nonce},
            "on_challenge": on_challenge}


def test_scram_pbkdf2(node):
    async def main():
        s = await _session(node.port, "scram", **_pbkdf2_client("bob", PW))
        assert s.details.authmethod == "scram"
        await leave(s)
        with pytest.raises(ApplicationError) as e:
            await _session(node.port, "scram", **_pbkdf2_client("bob", PW + "x"))
        assert e.value.error == FAILED

    _run(main())


def test_scram_lying_client_refused(node):
    async def main():
        # a nonce in AUTHENTICATE other than the challenge's (raw JSON: autobahn sends none)
        scram = AuthScram(authid="alice", password=PW)
        raw = await asyncio.to_thread(RawWamp, node.port, "scram")
        challenge = await asyncio.to_thread(raw.hello, authmethods=["scram"], authid="alice",
                                            authextra=scram.authextra)
        assert challenge[0] == 4, challenge
        proof = scram.on_challenge(None, Challenge("scram", challenge[2])).decode()
        raw.send([5, proof, {"nonce": base64.b64encode(os.urandom(32)).decode()}])
        abort = await asyncio.to_thread(raw.recv)
        assert abort[:1] == [3] and abort[2] == FAILED, abort
        raw.close()
        # a proof computed over another client nonce than the HELLO's
        other, auth = _scram_auth("alice")
        other.authextra   # noqa: B018 - makes its own nonce
        auth["authextra"] = {"nonce": base64.b64encode(os.urandom(16)).decode()}
        with pytest.raises(ApplicationError) as e:
            await _session(node.port, "scram", **auth)
        assert e.value.error == FAILED
        # nonces that are not base64 or too short: refused at HELLO
        for nonce in ("not base64!", base64.b64encode(b"short").decode(), None):
            _, auth = _scram_auth("alice")
            auth["authextra"] = {"nonce": nonce}
            with pytest.raises(ApplicationError) as e:
                await _session(node.port, "scram", **auth)
            assert e.value.error == "wamp.error.not_authorized"
        # still serving
        _, auth = _scram_auth("alice")
        await leave(await _session(node.port, "scram", **auth))

    _run(main())
    log = node.log()
    assert "SCRAM nonce does not match" in log
    assert "answered in" in log   # failures went through the throttle


def test_function_ticket(node):
    async def main():
        s = await ws_session(node.port, path="fn", ticket=("joe", "t0"))
        assert (s.details.authmethod, s.details.authprovider) == ("ticket", "function")
        assert s.details.authextra == {"via": "function"}
        await leave(s)
        with pytest.raises(ApplicationError) as e:
            await ws_session(node.port, path="fn", ticket=("joe", "nope"))
        assert e.value.error == "wamp.error.not_authorized"
        with pytest.raises(ApplicationError) as e:
            await ws_session(node.port, path="broken", ticket=("joe", "t0"))
        assert e.value.error == FAILED
        await leave(await ws_session(node.port, path="fn", ticket=("joe", "t0")))

    _run(main())
    assert "function authenticator 'authfuncs.broken': its factory raised" in node.log()


# -- cookies ----------------------------------------------------------------------------------

def test_cookie_login_then_reauth(node):
    async def main():
        s = await _session(node.port, "ck", authmethods=["cookie", "ticket"], authid="joe",
                           on_challenge=lambda ch: "t1")
        assert s.set_cookie.startswith("cbtid=") and ";max-age=3600" in s.set_cookie
        assert (s.details.authmethod, s.details.authprovider) == ("ticket", "static")
        cookie = f"cbtid={_cookie_value(s.set_cookie)}"
        # the next connection with the cookie: no ticket needed, and no new cookie
        s2 = await _session(node.port, "ck", cookie=f"a=1; {cookie}", authmethods=["cookie"])
        assert s2.set_cookie is None
        # the value is a login: other sessions do not see it in the session details
        info = await s.call("wamp.session.get", s2._session_id)
        headers = info["transport"]["http_headers_received"]
        assert headers["cookie"] == "a=1; cbtid=(redacted)"
        assert (s2.details.authid, s2.details.authrole) == ("joe", "user")
        assert (s2.details.authmethod, s2.details.authprovider) == ("ticket", "cookie")
        # a cookie the node never issued: refused, a fresh cookie handed out
        with pytest.raises(ApplicationError) as e:
            await _session(node.port, "ck", cookie="cbtid=" + "A" * 24, authmethods=["cookie"])
        assert e.value.error == FAILED
        assert e.value.set_cookie.startswith("cbtid=")
        # ... but with another method offered, that one is used
        s3 = await _session(node.port, "ck", cookie="cbtid=" + "B" * 24,
                            authmethods=["cookie", "ticket"], authid="joe",
                            on_challenge=lambda ch: "t1")
        assert s3.details.authprovider == "static"
        await leave(s3)
        # logout forgets the login and closes the cookie's other connections
        s.leave("wamp.close.logout")
        await asyncio.wait_for(asyncio.shield(s2.left), scaled(10))
        with pytest.raises(ApplicationError) as e:
            await _session(node.port, "ck", cookie=cookie, authmethods=["cookie"])
        assert e.value.error == FAILED

    _run(main())
    assert "is unknown or expired: issuing a new one" in node.log()


def test_cookie_tracking_anonymous(node):
    async def main():
        s = await _session(node.port, "anon")
        value = _cookie_value(s.set_cookie)
        assert s.set_cookie.startswith("trk=") and len(value) == 16
        s2 = await _session(node.port, "anon", cookie=f"other=1; trk={value}")
        assert s2.set_cookie is None
        # the same stable authid per cookie, which is not the cookie itself
        assert s.details.authid == s2.details.authid != value
        await leave(s)
        await leave(s2)

    _run(main())


def test_cookie_file_store_survives_restart(start_node, tmp_path):
    cfg = router_config([{"type": "websocket", "endpoint": {
        "type": "tcp", "port": "$PORT", "interface": "127.0.0.1"},
        "cookie": {"store": {"type": "file", "filename": "cookies.dat"}},
        "auth": {"ticket": {"type": "static", "principals": {"joe": {"ticket": "t1",
                                                                     "role": "anonymous"}}},
                 "cookie": {}}}])
    n1 = start_node(cfg)

    async def login():
        s = await _session(n1.port, "ws", authmethods=["ticket"], authid="joe",
                           on_challenge=lambda ch: "t1")
        await leave(s)
        return f"cbtid={_cookie_value(s.set_cookie)}"

    cookie = _run(login())
    n1.stop()
    assert "joe" in (n1.dir / "cookies.dat").read_text()
    # garbage in the file is skipped with one line, not fatal
    with open(n1.dir / "cookies.dat", "a") as f:
        f.write("{not json\n")
    n2 = launch(cfg, n1.dir)   # the same folder, so the same cookies.dat
    try:
        async def again():
            s = await _session(n2.port, "ws", cookie=cookie, authmethods=["cookie"])
            assert (s.details.authid, s.details.authprovider) == ("joe", "cookie")
            await leave(s)

        _run(again())
        wait_for(lambda: "1 unreadable lines skipped" in n2.log(), scaled(5))
    finally:
        n2.stop()
    # the file was rewritten at start: the garbage is gone, the login stays
    text = (n1.dir / "cookies.dat").read_text()
    assert "not json" not in text and text.count("joe") == 1


# -- TLS client certificates ------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki():
    ca_k, srv_k, ok_k, other_k, old_k = (new_key() for _ in range(5))
    ca = certificate("test ca", ca_k, "test ca", ca_k, ca=True)
    srv = certificate("127.0.0.1", srv_k, "test ca", ca_k, ca=False, server=True)
    ok = certificate("alice", ok_k, "test ca", ca_k, ca=False, client=True)
    other = certificate("eve", other_k, "test ca", ca_k, ca=False, client=True)
    old = certificate("alice", old_k, "test ca", ca_k, ca=False, client=True, expired=True)
    files = {"ca.pem": pem(ca), "srv.crt": pem(srv), "srv.key": pem(srv_k)}
    for name, c, k in (("ok", ok, ok_k), ("other", other, other_k), ("old", old, old_k)):
        files[f"{name}.crt"], files[f"{name}.key"] = pem(c), pem(k)
    sha1 = ":".join(f"{b:02X}" for b in ok.fingerprint(__import__(
        "cryptography.hazmat.primitives.hashes", fromlist=["SHA1"]).SHA1()))
    return files, sha1


@pytest.fixture(scope="module")
def tls_node(start_module_node, pki):
    files, sha1 = pki
    tls = {"key": "srv.key", "certificate": "srv.crt", "ca_certificates": ["ca.pem"]}
    paths = {"ws": {"type": "websocket", "auth": {"tls": {"type": "static", "principals": {
        "alice": {"certificate-sha1": sha1, "role": "anonymous"}}}}},
        "dyn": {"type": "websocket", "auth": {"tls": {"type": "function",
                                                      "create": "authfuncs.make_tls"}}}}
    cfg = router_config([{"type": "web", "paths": paths, "endpoint": {
        "type": "tcp", "port": "$PORT", "interface": "127.0.0.1", "tls": tls}}])
    cfg["workers"][0]["options"] = {"pythonpath": ["."]}
    cfg["workers"][0]["realms"] = [realm(roles=[role(permissions=[
        {"uri": "", "match": "prefix", "allow": {"call": True}}])])]
    return start_module_node(cfg, files={**files, "authfuncs.py": FUNCS})


def _client_ctx(node, name: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(node.dir / "ca.pem"))
    ctx.load_cert_chain(str(node.dir / f"{name}.crt"), str(node.dir / f"{name}.key"))
    return ctx


def test_tls_client_certificate(tls_node, pki):
    async def main():
        s = await _session(tls_node.port, "ws", ssl_ctx=_client_ctx(tls_node, "ok"),
                           authmethods=["tls"])
        assert (s.details.authid, s.details.authmethod) == ("alice", "tls")
        info = await s.call("wamp.session.get", s._session_id)
        assert info["transport"]["peer_cert"]["sha1"] == pki[1]
        await leave(s)
        s = await _session(tls_node.port, "dyn", ssl_ctx=_client_ctx(tls_node, "other"),
                           authmethods=["tls"])
        assert (s.details.authid, s.details.authprovider) == ("eve", "function")
        await leave(s)
        # a certificate of the right CA, but no principal's
        with pytest.raises(ApplicationError) as e:
            await _session(tls_node.port, "ws", ssl_ctx=_client_ctx(tls_node, "other"),
                           authmethods=["tls"])
        assert e.value.error == "wamp.error.not_authorized"
        # an expired certificate never gets a TLS connection
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            await _session(tls_node.port, "ws", ssl_ctx=_client_ctx(tls_node, "old"),
                           authmethods=["tls"])
        await leave(await _session(tls_node.port, "ws", ssl_ctx=_client_ctx(tls_node, "ok"),
                                   authmethods=["tls"]))

    _run(main())
    assert "Traceback" not in tls_node.log()


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                    reason="node/npm not installed")
def test_cookie_autobahn_js(node):
    """autobahn|js (Node) re-authenticated by the cookie an autobahn-python login got."""
    if not (JS / "node_modules" / "autobahn").is_dir():
        subprocess.run(["bash", str(JS / "install.sh")], check=True, timeout=scaled(300))

    async def main():
        s = await _session(node.port, "ck", authmethods=["ticket"], authid="joe",
                           on_challenge=lambda ch: "t1")
        cookie = f"cbtid={_cookie_value(s.set_cookie)}"
        out = []
        for header in (cookie, "cbtid=" + "C" * 24):
            proc = await asyncio.create_subprocess_exec(
                "node", str(JS / "cookie.js"), f"ws://127.0.0.1:{node.port}/ck", header,
                str(int(scaled(20) * 1000)), stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, cwd=JS)
            stdout, stderr = await asyncio.wait_for(proc.communicate(), scaled(30))
            out.append((proc.returncode, stdout.decode(), stderr.decode()))
        await leave(s)
        return out

    (rc, stdout, stderr), (bad_rc, _, bad_err) = _run(main())
    assert rc == 0, stderr
    assert json.loads(stdout) == {"authid": "joe", "authmethod": "ticket",
                                  "authprovider": "cookie"}
    assert bad_rc == 1 and FAILED in bad_err
