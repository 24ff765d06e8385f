"""geonode under gunicorn: ``-k geonode.gunicorn.GeventWorker`` serving a node and a plain app.

Real gunicorn masters on free loopback ports, real HTTP and real autobahn (asyncio) clients.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from pathlib import Path

import pytest
import requests
from support import (
    SAMPLES,
    Node,
    free_port,
    launch_gunicorn,
    realm,
    role,
    scaled,
    wait_for,
    web_node,
)
from support.config import rawsocket_transport

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
    return web_node({"/": {"type": "wsgi", "module": "myapp", "object": "app"},
                     "ws": {"type": "websocket"}}, realms=[realm()],
                    worker_options={"pythonpath": [str(SAMPLES / "flask")]}, port=port)


#: gunicorn's graceful timeout in these tests: after it the master kills a worker that has not
#: stopped, so every "stopped by itself" bound below stays far under it
GRACEFUL = scaled(15)


@pytest.fixture
def gunicorn(tmp_path):
    started: list[Node] = []

    def _start(app: str, worker: str = WORKER, workers: int = 1,
               extra: tuple[str, ...] = ()) -> Node:
        g = launch_gunicorn(tmp_path, app, worker, workers,
                            ("--graceful-timeout", f"{GRACEFUL:g}", *extra),
                            log_name=f"gunicorn-{len(started)}.log")
        started.append(g)
        return g

    yield _start
    for g in started:
        g.stop(timeout=GRACEFUL + 5)


def write_node(tmp: Path) -> None:
    # The port in the config is ignored under gunicorn (gunicorn owns the socket).
    (tmp / "node.json").write_text(json.dumps(node_config(free_port()), indent=2))


def upgrade_request(port: int, path: str) -> bytes:
    """A raw WebSocket upgrade request; returns the response (head and body)."""
    req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wamp.2.json\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(5)) as s:
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
        r = s.get(f"{g.url}/hello/{i}", timeout=scaled(5))
        assert r.status_code == 200
        assert r.text == f"plain GET /hello/{i} upgrade-hook=False"
    # HEAD: the GET's headers, no body (else the next response on the connection is garbled)
    r = s.head(f"{g.url}/hello/x", timeout=scaled(5))
    assert r.status_code == 200 and r.headers["Content-Length"] == str(len(
        "plain HEAD /hello/x upgrade-hook=False"))
    assert s.get(f"{g.url}/after-head", timeout=scaled(5)).text == \
        "plain GET /after-head upgrade-hook=False"
    s.close()  # an idle keep-alive connection would hold the graceful stop for its timeout
    r = requests.post(f"{g.url}/form", data=b"x" * 100_000, timeout=scaled(5))
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
        open("slow-started", "w").close()  # the test waits for this: the request is in flight
        time.sleep(2.0)  # the scenario: a request in flight (monkey-patched: a gevent sleep)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return [b"done"]
'''


def test_graceful_stop_finishes_request_and_closes_its_keepalive_connection(tmp_path, gunicorn):
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    g = gunicorn("slowapp:app")
    # The master listens before its worker runs: a SIGTERM reaching a worker still booting is
    # lost, and the worker goes on until the master kills it after the graceful timeout.
    assert requests.get(f"{g.url}/ready", timeout=scaled(10)).text == "done"
    with socket.create_connection(("127.0.0.1", g.port), timeout=GRACEFUL + 5) as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")  # HTTP/1.1: keep-alive
        wait_for(lambda: (tmp_path / "slow-started").exists(), 10, "the view to start")
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
    # waiting for a next request, so the worker did not sit out the graceful timeout (after
    # which gunicorn kills the worker and with it the connection). The view had < 2 s left.
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\ndone"), data
    assert closed_after < scaled(4.0) < GRACEFUL, closed_after
    assert g.proc.wait(scaled(10)) == 0
    assert "graceful timeout" not in g.log(), g.log()


# --- a node -----------------------------------------------------------------------------------

async def _two_clients_call_each_other(port: int) -> tuple:
    from autobahn.wamp.types import PublishOptions
    from support.wamp import leave, ws_session

    a = await ws_session(port)
    b = await ws_session(port)
    try:
        await a.register(lambda x, y: x + y, "com.test.add")
        await b.register(lambda s: s.upper(), "com.test.upper")
        got_event: asyncio.Future = asyncio.get_running_loop().create_future()
        await a.subscribe(lambda v: got_event.done() or got_event.set_result(v), "com.test.ev")
        r1 = await b.call("com.test.add", 2, 3)
        r2 = await a.call("com.test.upper", "geonode")
        await b.publish("com.test.ev", 42, options=PublishOptions(acknowledge=True))
        ev = await asyncio.wait_for(got_event, scaled(5))
        return r1, r2, ev
    finally:
        await leave(a)
        await leave(b)


def test_node_under_geonode_worker_serves_flask_and_wamp(tmp_path, gunicorn):
    write_node(tmp_path)
    g = gunicorn("geonode:load('node.json')")
    r = requests.get(g.url + "/", timeout=scaled(10))
    assert r.status_code == 200
    assert "Hello from" in r.text
    # The router lives in the worker: two clients meet there, calls go both ways.
    r1, r2, ev = asyncio.run(asyncio.wait_for(
        _two_clients_call_each_other(g.port), scaled(30)))
    assert (r1, r2, ev) == (5, "GEONODE", 42)
    log = g.log()
    assert "own WAMP router" not in log  # one worker: no warning
    assert "Traceback" not in log, log

    # A session still open when gunicorn stops gets the router's GOODBYE, and the worker does
    # not sit out gunicorn's graceful timeout for the open WebSocket.
    import websocket

    ws = websocket.create_connection(f"ws://127.0.0.1:{g.port}/ws",
                                     subprotocols=["wamp.2.json"], timeout=scaled(10))
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
    assert requests.get(g.url + "/", timeout=scaled(10)).status_code == 200
    log = g.log()
    assert log.count("each build their own WAMP router") == 1, log
    assert "backplane" in log


def test_several_workers_with_a_backplane_do_not_warn(tmp_path, gunicorn):
    cfg = node_config(free_port())
    cfg["workers"][0].setdefault("options", {})["backplane"] = {
        "type": "redis", "url": "redis://127.0.0.1:6379/0"}
    (tmp_path / "node.json").write_text(json.dumps(cfg))
    g = gunicorn("geonode:load('node.json')", workers=2)
    assert requests.get(g.url + "/", timeout=scaled(10)).status_code == 200
    assert "each build their own WAMP router" not in g.log()


def test_plain_gevent_worker_refuses_websocket_path_clearly(tmp_path, gunicorn):
    write_node(tmp_path)
    g = gunicorn("geonode:load('node.json')", worker="gevent")
    # The web paths work under any gevent worker …
    assert "Hello from" in requests.get(g.url + "/", timeout=scaled(10)).text
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
    cfg = web_node({"/": {"type": "wsgi", "module": "pubapp", "object": "app"},
                    "ws": {"type": "websocket"}},
                   realms=[realm(roles=[role("anonymous"), role("backend")])],
                   worker_options={"pythonpath": [str(folder)]},
                   components=[{"type": "class", "classname": "comp.Hello", "realm": "realm1"}],
                   port=port)
    # gunicorn serves only the first web transport: this one is named in a warning
    cfg["workers"][0]["transports"].append(rawsocket_transport(free_port()))
    return cfg


def write_wamp_app(tmp: Path) -> None:
    (tmp / "comp.py").write_text(COMPONENT)
    (tmp / "pubapp.py").write_text(PUBLISHER_APP)
    (tmp / "node.json").write_text(json.dumps(wamp_app_config(free_port(), tmp), indent=2))


def check_component_and_publishing_view(port: int, url: str) -> None:
    """An autobahn client calls the component's procedure and gets the view's event."""
    import queue

    from support.wamp import SyncClient, wait_subscribed

    client = SyncClient(port)
    try:
        wait_subscribed(client, procedures=("com.comp.hello",))  # joins right after start-up
        assert client.call("com.comp.hello", "gunicorn") == "hello gunicorn"
        events = client.subscribe("com.app.news")
        r = requests.get(url + "/from-view", timeout=scaled(10))
        assert (r.status_code, r.text) == (200, "published")
        try:
            assert events.get(timeout=scaled(5)) == (["/from-view"], {})
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
