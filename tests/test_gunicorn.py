"""geonode under gunicorn: ``-k geonode.gunicorn.GeventWorker`` serving a node and a plain app.

Real gunicorn masters on free loopback ports, real HTTP and real autobahn (asyncio) clients.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import SAMPLES, free_port, wait_port

pytest.importorskip("gunicorn")

WORKER = "geonode.gunicorn.GeventWorker"

PLAIN_APP = '''
def app(environ, start_response):
    hook = environ.get("geonode.websocket") is not None
    body = ("plain %s %s upgrade-hook=%s" % (environ["REQUEST_METHOD"], environ["PATH_INFO"],
                                             hook)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def node_config(port: int) -> dict:
    """The Flask sample (the seed's example) next to a WAMP router on /ws."""
    return {
        "version": 2,
        "controller": {},
        "workers": [{
            "type": "router",
            "options": {"pythonpath": [str(SAMPLES / "flask")]},
            "realms": [{"name": "realm1", "roles": [{
                "name": "anonymous",
                "permissions": [{"uri": "", "match": "prefix",
                                 "allow": {"call": True, "register": True,
                                           "publish": True, "subscribe": True}}]}]}],
            "transports": [{
                "type": "web",
                "endpoint": {"type": "tcp", "port": port, "interface": "127.0.0.1"},
                "paths": {"/": {"type": "wsgi", "module": "myapp", "object": "app"},
                          "ws": {"type": "websocket"}},
            }],
        }],
    }


def _gunicorn_args() -> list[str]:
    # gunicorn >= 24 opens a control socket in ~/.gunicorn by default: parallel test
    # masters would fight over it.
    from gunicorn.config import KNOWN_SETTINGS

    flags = {flag for s in KNOWN_SETTINGS for flag in (getattr(s, "cli", None) or ())}
    return ["--no-control-socket"] if "--no-control-socket" in flags else []


class Gunicorn:
    def __init__(self, tmp: Path, app: str, worker: str = WORKER, workers: int = 1,
                 extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.log_path = tmp / f"gunicorn-{self.port}.log"
        cmd = [sys.executable, "-m", "gunicorn", "-k", worker, "-w", str(workers),
               "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "5",
               *_gunicorn_args(), *extra, app]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
                                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            wait_port(self.port, self.proc, timeout=20)
        except Exception:
            self.stop()
            raise RuntimeError(f"gunicorn did not start:\n{self.log()}") from None
        self.url = f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def gunicorn(tmp_path):
    started: list[Gunicorn] = []

    def _start(app: str, **kw) -> Gunicorn:
        g = Gunicorn(tmp_path, app, **kw)
        started.append(g)
        return g

    yield _start
    for g in started:
        g.stop()


def write_node(tmp: Path) -> None:
    # The port in the config is ignored under gunicorn (gunicorn owns the socket).
    (tmp / "node.json").write_text(json.dumps(node_config(free_port()), indent=2))


def upgrade_request(port: int, path: str) -> bytes:
    """A raw WebSocket upgrade request; returns the response (head and body)."""
    req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wamp.2.json\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(req.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = s.recv(4096)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body


# --- plain WSGI app ------------------------------------------------------------------------

def test_plain_wsgi_app_under_geonode_worker(tmp_path, gunicorn):
    (tmp_path / "plainapp.py").write_text(PLAIN_APP)
    g = gunicorn("plainapp:app")
    s = requests.Session()
    for i in range(3):  # keep-alive: several requests on one connection
        r = s.get(f"{g.url}/hello/{i}", timeout=5)
        assert r.status_code == 200
        assert r.text == f"plain GET /hello/{i} upgrade-hook=False"
    # HEAD: the GET's headers, no body (else the next response on the connection is garbled)
    r = s.head(f"{g.url}/hello/x", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Length"] == str(len(
        "plain HEAD /hello/x upgrade-hook=False"))
    assert s.get(f"{g.url}/after-head", timeout=5).text == "plain GET /after-head upgrade-hook=False"
    s.close()  # an idle keep-alive connection would hold the graceful stop for its timeout
    r = requests.post(f"{g.url}/form", data=b"x" * 100_000, timeout=5)
    assert r.text == "plain POST /form upgrade-hook=False"
    # The upgrade hook is offered to the app, which is free to ignore it (answers plain HTTP).
    head = upgrade_request(g.port, "/chat")
    assert head.startswith(b"HTTP/1.1 200"), head
    # A plain app with several workers is not a node: no router warning.
    assert "own WAMP router" not in g.log()
    assert g.stop() == 0


SLOW_APP = '''
import time

def app(environ, start_response):
    if environ["PATH_INFO"] != "/ready":
        time.sleep(2.0)  # monkey-patched by the worker: a gevent sleep
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return [b"done"]
'''


def test_graceful_stop_finishes_request_and_closes_its_keepalive_connection(tmp_path, gunicorn):
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    g = gunicorn("slowapp:app")
    # The master listens before its worker runs: a SIGTERM reaching a worker still booting is
    # lost, and the worker goes on until the master kills it after the graceful timeout.
    assert requests.get(f"{g.url}/ready", timeout=10).text == "done"
    with socket.create_connection(("127.0.0.1", g.port), timeout=8) as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")  # HTTP/1.1: keep-alive
        time.sleep(0.3)
        g.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        data = b""
        while True:  # bounded by the socket timeout
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        closed_after = time.monotonic() - t0
    # The request in flight finished; then the handler closed the connection instead of
    # waiting for a next request, so the worker did not sit out the graceful timeout (5 s,
    # after which gunicorn kills the worker and with it the connection).
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\ndone"), data
    assert closed_after < 4.0, closed_after
    assert g.proc.wait(10) == 0
    assert "graceful timeout" not in g.log(), g.log()


# --- a node -----------------------------------------------------------------------------------

async def _wamp_session(url: str, realm: str):
    """Join ``realm`` at ``url`` with an autobahn asyncio session; returns the joined session."""
    import txaio

    txaio.use_asyncio()
    from autobahn.asyncio.wamp import ApplicationSession
    from autobahn.asyncio.websocket import WampWebSocketClientFactory
    from autobahn.wamp.types import ComponentConfig

    loop = asyncio.get_running_loop()
    joined: asyncio.Future = loop.create_future()

    class Client(ApplicationSession):
        def onJoin(self, details):
            if not joined.done():
                joined.set_result(self)

        def onLeave(self, details):
            if not joined.done():
                joined.set_exception(RuntimeError(f"left: {details}"))
            super().onLeave(details)

    factory = WampWebSocketClientFactory(lambda: Client(ComponentConfig(realm)), url=url,
                                         serializers=None)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    await loop.create_connection(factory, "127.0.0.1", port)
    return await asyncio.wait_for(joined, 10)


async def _two_clients_call_each_other(ws_url: str) -> tuple:
    a = await _wamp_session(ws_url, "realm1")
    b = await _wamp_session(ws_url, "realm1")
    try:
        await a.register(lambda x, y: x + y, "com.test.add")
        await b.register(lambda s: s.upper(), "com.test.upper")
        got_event: asyncio.Future = asyncio.get_running_loop().create_future()
        await a.subscribe(lambda v: got_event.done() or got_event.set_result(v), "com.test.ev")
        from autobahn.wamp.types import PublishOptions

        r1 = await b.call("com.test.add", 2, 3)
        r2 = await a.call("com.test.upper", "geonode")
        await b.publish("com.test.ev", 42, options=PublishOptions(acknowledge=True))
        ev = await asyncio.wait_for(got_event, 5)
        return r1, r2, ev
    finally:
        a.leave()
        b.leave()
        await asyncio.sleep(0.05)


def test_node_under_geonode_worker_serves_flask_and_wamp(tmp_path, gunicorn):
    write_node(tmp_path)
    g = gunicorn("geonode:load('node.json')")
    r = requests.get(g.url + "/", timeout=10)
    assert r.status_code == 200
    assert "Hello from" in r.text
    # The router lives in the worker: two clients meet there, calls go both ways.
    r1, r2, ev = asyncio.run(asyncio.wait_for(
        _two_clients_call_each_other(f"ws://127.0.0.1:{g.port}/ws"), 30))
    assert (r1, r2, ev) == (5, "GEONODE", 42)
    log = g.log()
    assert "own WAMP router" not in log  # one worker: no warning
    assert "Traceback" not in log, log

    # A session still open when gunicorn stops gets the router's GOODBYE, and the worker does
    # not sit out gunicorn's graceful timeout for the open WebSocket.
    import websocket

    ws = websocket.create_connection(f"ws://127.0.0.1:{g.port}/ws",
                                     subprotocols=["wamp.2.json"], timeout=10)
    ws.send(json.dumps([1, "realm1", {"roles": {"subscriber": {}}}]))
    assert json.loads(ws.recv())[0] == 2  # WELCOME
    g.proc.send_signal(signal.SIGTERM)
    goodbye = json.loads(ws.recv())
    assert goodbye[0] == 6 and goodbye[2] == "wamp.close.system_shutdown", goodbye
    assert g.stop() == 0
    assert "graceful timeout" not in g.log()


def test_several_workers_warn_about_separate_routers(tmp_path, gunicorn):
    write_node(tmp_path)
    g = gunicorn("geonode:load('node.json')", workers=2)
    assert requests.get(g.url + "/", timeout=10).status_code == 200
    log = g.log()
    assert log.count("each build their own WAMP router") == 1, log
    assert "backplane" in log


def test_plain_gevent_worker_refuses_websocket_path_clearly(tmp_path, gunicorn):
    write_node(tmp_path)
    g = gunicorn("geonode:load('node.json')", worker="gevent")
    # The web paths work under any gevent worker …
    assert "Hello from" in requests.get(g.url + "/", timeout=10).text
    # … but without geonode's handler there is no upgrade hook: a clear 4xx/5xx, no hang.
    head = upgrade_request(g.port, "/ws")
    status = int(head.split(b" ", 2)[1])
    assert status in (426, 501), head
    assert b"GeventWorker" in head, head  # the message says what to use instead


# --- components and geonode.wamp.session() in the worker ---------------------------------------

COMPONENT = '''
class Hello:
    def on_join(self, session):
        session.register("com.comp.hello", lambda name: "hello " + name)
'''

# No "wamp" key on this wsgi path: the view finds the router through geonode.wamp.session().
PUBLISHER_APP = '''
import geonode.wamp

def app(environ, start_response):
    geonode.wamp.session("realm1", "backend").publish("com.app.news", environ["PATH_INFO"],
                                                      acknowledge=True)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"published"]
'''


def wamp_app_config(port: int, folder: Path) -> dict:
    """A node with a component and a wsgi app that publishes through geonode.wamp.session()."""
    allow_all = [{"uri": "", "match": "prefix",
                  "allow": {"call": True, "register": True, "publish": True, "subscribe": True}}]
    return {
        "version": 2,
        "controller": {},
        "workers": [{
            "type": "router",
            "options": {"pythonpath": [str(folder)]},
            "realms": [{"name": "realm1", "roles": [{"name": "anonymous", "permissions": allow_all},
                                                     {"name": "backend", "permissions": allow_all}]}],
            "transports": [{
                "type": "web",
                "endpoint": {"type": "tcp", "port": port, "interface": "127.0.0.1"},
                "paths": {"/": {"type": "wsgi", "module": "pubapp", "object": "app"},
                          "ws": {"type": "websocket"}},
            }, {
                # gunicorn serves only the first web transport: this one is named in a warning
                "type": "rawsocket",
                "endpoint": {"type": "tcp", "port": free_port(), "interface": "127.0.0.1"},
            }],
            "components": [{"type": "class", "classname": "comp.Hello", "realm": "realm1"}],
        }],
    }


def write_wamp_app(tmp: Path) -> None:
    (tmp / "comp.py").write_text(COMPONENT)
    (tmp / "pubapp.py").write_text(PUBLISHER_APP)
    (tmp / "node.json").write_text(json.dumps(wamp_app_config(free_port(), tmp), indent=2))


def check_component_and_publishing_view(port: int, url: str) -> None:
    """An autobahn client calls the component's procedure and gets the view's event."""
    import queue
    import time

    from _wampclient import SyncClient
    from autobahn.wamp.exception import ApplicationError

    client = SyncClient(port)
    try:
        deadline = time.monotonic() + 10
        while True:  # the component joins right after start-up
            try:
                assert client.call("com.comp.hello", "gunicorn") == "hello gunicorn"
                break
            except ApplicationError as e:
                if e.error != "wamp.error.no_such_procedure" or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        events = client.subscribe("com.app.news")
        r = requests.get(url + "/from-view", timeout=10)
        assert (r.status_code, r.text) == (200, "published")
        try:
            assert events.get(timeout=5) == (["/from-view"], {})
        except queue.Empty:
            raise AssertionError("no event from the view") from None
    finally:
        client.close()


def test_components_and_wamp_session_run_under_gunicorn(tmp_path, gunicorn):
    write_wamp_app(tmp_path)
    g = gunicorn("geonode:load('node.json')")
    check_component_and_publishing_view(g.port, g.url)
    assert g.stop() == 0
    log = g.log()
    # geonode's own log lines appear in gunicorn's error log
    assert "component workers[0].components[0] joined realm1" in log, log
    assert ("only workers[0].transports[0] is served here (the server's own socket); "
            "not served: workers[0].transports[1]") in log, log
    assert "Traceback" not in log, log
    assert "graceful timeout" not in log
