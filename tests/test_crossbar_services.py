"""Crossbar's ``wap``, ``archive`` and ``websocket-reverseproxy`` path services (issue 14 item
3, issue 12), against one node, with real clients: requests, websocket-client, autobahn."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import zipfile

import pytest
import requests
import websocket
from support import router_config, scaled
from support.config import endpoint
from support.wamp import SyncClient

BIG = 3 * 1024 * 1024 + 17


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("site/index.html", "<h1>from the zip</h1>")
        z.writestr("site/app.js", "console.log(1)")
        z.writestr("site/data.xyz", "custom")
        z.writestr("site/big.bin", bytes(range(256)) * (BIG // 256) + b"x" * (BIG % 256))
        z.writestr("site/sub/page.html", "sub page")
        z.writestr("secret.txt", "outside the prefix")
        # members that would escape their folder if unpacked: never served
        z.writestr("site/../../evil.txt", "escaped")
        z.writestr("/abs.txt", "absolute")
    return buf.getvalue()


class _Backend:
    """An autobahn (asyncio) WebSocket echo server in a thread: the proxied backend."""

    def __init__(self) -> None:
        from autobahn.asyncio.websocket import WebSocketServerFactory, WebSocketServerProtocol

        seen = self.seen = []

        class Echo(WebSocketServerProtocol):
            def onConnect(self, request):
                seen.append(request)
                return "echo.v1" if "echo.v1" in request.protocols else None

            def onMessage(self, payload, is_binary):
                if not is_binary and payload == b"close please":
                    self.sendClose(4001, "asked to")
                    return
                self.sendMessage(payload, is_binary)

        self.loop = asyncio.new_event_loop()
        factory = WebSocketServerFactory(loop=self.loop)
        factory.protocol = Echo
        factory.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(
                self.loop.create_server(factory, "127.0.0.1", 0))
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(scaled(10))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(scaled(5))


@pytest.fixture(scope="module")
def backend():
    b = _Backend()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def node(start_module_node, backend, tmp_path_factory):
    from support.net import free_port

    archive = tmp_path_factory.mktemp("zip") / "site.zip"
    archive.write_bytes(_zip())

    dead = free_port()   # nothing listens there
    wap = {"type": "wap", "templates": "templates",
           "routes": [{"path": "/", "method": "GET", "call": "com.example.hello",
                       "render": "hello.html"},
                      {"path": "/user/<name>", "method": "GET", "call": "com.example.user",
                       "render": "hello.html"},
                      {"path": "/post", "method": "POST", "call": "com.example.echo",
                       "render": "hello.html"},
                      {"path": "/static", "method": "GET", "render": "static.html"},
                      {"path": "/evil", "method": "GET", "call": "com.example.hello",
                       "render": "evil.html"},
                      {"path": "/fail", "method": "GET", "call": "com.example.fails",
                       "render": "hello.html"},
                      {"path": "/forbidden", "method": "GET", "call": "private.proc",
                       "render": "hello.html"}],
           "wamp": {"realm": "realm1", "authrole": "pages"}}
    transports = [{"type": "web", "endpoint": endpoint("$PORT"), "paths": {
        "ws": {"type": "websocket"},
        "wap": wap,
        "zip": {"type": "archive", "archive": str(archive), "object_prefix": "site",
                "default_object": "index.html", "mime_types": {".xyz": "text/x-custom"},
                "options": {"default_file": "index.html"}, "cache": True},
        "proxy": {"type": "websocket-reverseproxy", "backend": {
            "type": "websocket", "endpoint": {"type": "tcp", "host": "127.0.0.1",
                                              "port": backend.port},
            "url": f"ws://127.0.0.1:{backend.port}/echo?x=1"}},
        "deadproxy": {"type": "websocket-reverseproxy", "backend": {
            "type": "websocket", "endpoint": {"type": "tcp", "host": "127.0.0.1",
                                              "port": dead},
            "url": f"ws://127.0.0.1:{dead}/"}},
    }}]
    cfg = router_config(transports)
    cfg["workers"][0]["realms"][0]["roles"].append(
        {"name": "pages", "permissions": [{"uri": "com.example.", "match": "prefix",
                                           "allow": {"call": True}}]})
    files = {"templates/hello.html": "<p>Hello {{ name }}! {{ data }}</p>",
             "templates/static.html": "<p>no call</p>",
             # the sandbox refuses this (an unsafe attribute)
             "templates/evil.html": "{{ name.__class__.__mro__ }}"}
    return start_module_node(cfg, files)


@pytest.fixture(scope="module")
def client(node):
    c = SyncClient(node.port)
    c.register("com.example.hello", lambda **kw: {"name": "<world>", "data": kw})
    c.register("com.example.user", lambda name, **kw: {"name": name, "data": sorted(kw)})

    def echo(data=None, data_type=None, **kw):
        return {"name": data_type, "data": len(data or b"")}

    c.register("com.example.echo", echo)

    def fails():
        from autobahn.wamp.exception import ApplicationError

        raise ApplicationError("com.example.oops", "no")

    c.register("com.example.fails", fails)
    c.register("private.proc", lambda: {"name": "x"})
    yield c
    c.close()


# -- wap ---------------------------------------------------------------------------------------

def test_wap_renders_the_call_result_escaped(node, client):
    r = requests.get(f"{node.url}/wap/?q=1&q=2", timeout=scaled(10))
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/html")
    # autoescape: the result's markup is text; the first query value is the call's kwarg
    assert r.text == "<p>Hello &lt;world&gt;! {&#39;q&#39;: &#39;1&#39;}</p>"
    r = requests.get(f"{node.url}/wap/user/ada?k=v", timeout=scaled(10))
    assert r.text == "<p>Hello ada! [&#39;k&#39;]</p>"
    r = requests.get(f"{node.url}/wap/static", timeout=scaled(10))
    assert r.text == "<p>no call</p>"


def test_wap_json_post_and_errors(node, client):
    r = requests.get(f"{node.url}/wap/user/bob", headers={"Accept": "application/json"},
                     timeout=scaled(10))
    assert r.json() == {"name": "bob", "data": []}
    r = requests.post(f"{node.url}/wap/post", data=b"x" * 100000,
                      headers={"Content-Type": "application/x-thing"}, timeout=scaled(10))
    assert r.text == "<p>Hello application/x-thing! 100000</p>"
    assert requests.get(f"{node.url}/wap/nothing", timeout=scaled(10)).status_code == 404
    r = requests.post(f"{node.url}/wap/user/x", timeout=scaled(10))
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"
    r = requests.get(f"{node.url}/wap/fail", timeout=scaled(10))
    assert r.status_code == 502 and "com.example.oops" in r.text
    # the role's permissions apply: 'pages' may not call private.proc
    r = requests.get(f"{node.url}/wap/forbidden", timeout=scaled(10))
    assert r.status_code == 502 and "wamp.error.not_authorized" in r.text
    # the sandbox: no way from a template to Python internals
    r = requests.get(f"{node.url}/wap/evil", timeout=scaled(10))
    assert r.status_code == 500 and "__mro__" not in r.text.split("failed")[0]
    assert "<class" not in r.text
    # and the node serves on
    assert requests.get(f"{node.url}/wap/static", timeout=scaled(10)).status_code == 200


# -- archive -----------------------------------------------------------------------------------

def test_archive_serves_members(node):
    base = f"{node.url}/zip"
    r = requests.get(base + "/", timeout=scaled(10))
    assert r.status_code == 200 and r.text == "<h1>from the zip</h1>"
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    r = requests.get(base + "/app.js", timeout=scaled(10))
    assert r.text == "console.log(1)" and "javascript" in r.headers["Content-Type"]
    r = requests.get(base + "/data.xyz", timeout=scaled(10))
    assert r.headers["Content-Type"] == "text/x-custom"
    assert requests.get(base + "/sub/page.html", timeout=scaled(10)).text == "sub page"
    # a megabyte member streams whole, twice (the second from the cache)
    want = bytes(range(256)) * (BIG // 256) + b"x" * (BIG % 256)
    for _ in range(2):
        r = requests.get(base + "/big.bin", timeout=scaled(30))
        assert r.content == want
    etag = r.headers["ETag"]
    r = requests.get(base + "/big.bin", headers={"If-None-Match": etag}, timeout=scaled(10))
    assert r.status_code == 304 and r.content == b""
    r = requests.head(base + "/big.bin", timeout=scaled(10))
    assert r.headers["Content-Length"] == str(BIG)
    # an unknown name: the default_file (single-page apps)
    assert requests.get(base + "/no/such", timeout=scaled(10)).text == "<h1>from the zip</h1>"
    assert requests.post(base + "/app.js", timeout=scaled(10)).status_code == 405


@pytest.mark.parametrize("path", ["/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt",
                                  "/../../evil.txt", "/..%5c..%5cevil.txt", "/../abs.txt"])
def test_archive_never_leaves_its_folder(node, path):
    from support.http import exchange, split_response

    resp = exchange(node.port, f"GET /zip{path} HTTP/1.1\r\nHost: a\r\n"
                               "Connection: close\r\n\r\n".encode())
    status, _, body = split_response(resp)
    # the default_file answers (404 would be as good): never the member outside the prefix
    assert body in (b"<h1>from the zip</h1>", b"not found\n"), (status, body)
    assert b"outside" not in body and b"escaped" not in body and b"absolute" not in body


def test_archive_members_escaping_are_logged(node):
    node.wait_log("escapes its folder")


# -- websocket-reverseproxy ----------------------------------------------------------------------

def test_wsproxy_tunnels_messages_both_ways(node, backend):
    ws = websocket.create_connection(f"ws://127.0.0.1:{node.port}/proxy",
                                     subprotocols=["echo.v1"], timeout=scaled(10))
    try:
        assert ws.getsubprotocol() == "echo.v1"   # the backend's choice, passed through
        ws.send("hello")
        assert ws.recv() == "hello"
        big = bytes(range(256)) * 8192   # 2 MiB binary, both ways through 64 KiB pieces
        ws.send_binary(big)
        assert ws.recv() == big
        for i in range(100):
            ws.send(f"m{i}")
        assert [ws.recv() for _ in range(100)] == [f"m{i}" for i in range(100)]
        ws.send("close please")     # the backend's close frame reaches the client
        opcode, data = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE and data[:2] == (4001).to_bytes(2, "big")
    finally:
        ws.close()
    request = backend.seen[-1]
    assert request.path == "/echo" and request.params == {"x": ["1"]}
    assert request.headers["x-forwarded-for"] == "127.0.0.1"


def test_wsproxy_refusals(node):
    from support.http import exchange, split_response

    # a plain GET: no tunnel without an upgrade
    status, _, _ = split_response(exchange(
        node.port, b"GET /proxy HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
    assert status == 426
    # a broken upgrade: the WebSocket service's own answer, the backend never contacted
    status, _, _ = split_response(exchange(
        node.port, b"GET /proxy HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   b"Sec-WebSocket-Key: short\r\n\r\n"))
    assert status == 400
    # nothing listens behind it: 503, one log line
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        websocket.create_connection(f"ws://127.0.0.1:{node.port}/deadproxy",
                                    timeout=scaled(10))
    assert e.value.status_code == 503
    node.wait_log("backend 127.0.0.1:")


def test_wsproxy_many_at_once(node):
    """Tunnels are independent: twenty clients interleaved, each gets its own echoes."""
    socks = [websocket.create_connection(f"ws://127.0.0.1:{node.port}/proxy",
                                         timeout=scaled(10)) for _ in range(20)]
    try:
        for i, s in enumerate(socks):
            s.send(json.dumps({"i": i}))
        for i, s in enumerate(socks):
            assert json.loads(s.recv()) == {"i": i}
    finally:
        for s in socks:
            s.close()
