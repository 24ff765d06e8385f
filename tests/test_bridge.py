"""WSGI apps and the router both ways, over real sockets: one node (subprocess) with a Flask app
using in-process WAMP, the HTTP bridge services, and router components (HTTP subscriber, HTTP
callee, a user class); real autobahn-python clients; a real HTTP server in this test process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest
import requests
from autobahn.wamp.exception import ApplicationError
from support import scaled, wait_for, web_node
from support.http import http_server
from support.wamp import SyncClient, wait_subscribed

from geonode.bridge.signing import sign_query

ALL = {"call": True, "register": True, "publish": True, "subscribe": True}

FLASK_APP = '''
import json

from flask import Flask, jsonify, request

import geonode.wamp
from geonode.wamp import ApplicationError

app = Flask("backend")
restricted = Flask("restricted")

# import time: the shared session for (realm1, backend, importtime), subscribed before the
# router runs; made when the node starts
received = []
geonode.wamp.session("realm1", "backend", "importtime").subscribe(
    "com.example.importtime", lambda v: received.append(v))


def routes(a):
    @a.route("/publish")
    def publish():
        s = request.environ["geonode.wamp"]
        try:
            pid = s.publish(request.args["topic"], request.args.get("value"), acknowledge=True)
        except ApplicationError as e:
            return jsonify(error=e.error), 500
        return jsonify(id=pid)

    @a.route("/call")
    def call():
        s = request.environ["geonode.wamp"]
        try:
            res = s.call(request.args["procedure"], *json.loads(request.args.get("args", "[]")),
                         timeout=float(request.args.get("timeout", 5)))
        except ApplicationError as e:
            return jsonify(error=e.error, args=list(e.args)), 500
        return jsonify(result=res)

    @a.route("/received")
    def got():
        return jsonify(received)


routes(app)
routes(restricted)
'''

COMPONENT = '''
import threading

from gevent import monkey

import geonode.wamp

_get_ident = monkey.get_original("_thread", "get_ident")
HUB = _get_ident()


class Adder:
    def __init__(self, config):
        self.offset = config.extra.get("offset", 0)

    def on_join(self, session):
        session.register("com.example.comp.add", self.add)
        session.register("com.example.comp.where", self.where)
        session.register("com.example.comp.where_hub", geonode.wamp.on_hub(self.where))

    def add(self, a, b):
        return a + b + self.offset

    def where(self):
        return "hub" if _get_ident() == HUB else "pool"
'''


#: how long the slow HTTP target takes per request (far longer than publishing 8 events)
SLOW_TARGET = scaled(2.0)


class Recorder(BaseHTTPRequestHandler):
    """The test's HTTP service: /events records forwarded events, /api/* echoes requests."""

    events: queue.Queue = queue.Queue()

    def log_message(self, *a):
        pass

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _reply(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("X-Reply", "yes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self._body()
        if self.path == "/slow":
            time.sleep(SLOW_TARGET)  # the scenario: an HTTP target slower than the publishers
            self._reply(200, b"slow", "text/plain")
        elif self.path == "/events":
            Recorder.events.put((self.headers.get("Content-Type"), json.loads(body)))
            self._reply(200, b"ok", "text/plain")
        else:
            self._echo(body)

    def do_GET(self):
        self._echo(b"")

    def _echo(self, body: bytes) -> None:
        self._reply(201, json.dumps({"method": self.command, "path": self.path,
                                     "body": body.decode(),
                                     "x_test": self.headers.get("X-Test")}).encode())


@pytest.fixture(scope="module")
def http_service():
    # quiet: the node going away mid-request (slow target) is expected here
    with http_server(Recorder, quiet=True) as port:
        yield port


SECRET = "s3cret"


@pytest.fixture(scope="module")
def node(start_module_node, http_service):
    realm = {"name": "realm1", "roles": [
        {"name": "anonymous", "permissions": [{"uri": "", "match": "prefix", "allow": ALL}]},
        {"name": "backend", "permissions": [{"uri": "com.example.", "match": "prefix",
                                             "allow": ALL}]},
        {"name": "restricted", "permissions": [{"uri": "com.example.public", "match": "exact",
                                                "allow": {"call": True}}]},
    ]}
    bridge = {"realm": "realm1", "role": "backend"}
    paths = {
        "ws": {"type": "websocket"},
        "app": {"type": "wsgi", "module": "flaskapp", "object": "app",
                "wamp": {"realm": "realm1", "role": "backend"}},
        "app3": {"type": "wsgi", "module": "flaskapp", "object": "app", "threads": False,
                 "wamp": {"realm": "realm1", "role": "backend"}},
        "app2": {"type": "wsgi", "module": "flaskapp", "object": "restricted",
                 "wamp": {"realm": "realm1", "role": "restricted"}},
        "pub": {"type": "publisher", **bridge},
        "pubsigned": {"type": "publisher", **bridge,
                      "options": {"key": "k1", "secret": SECRET, "timestamp_delta_limit": 60}},
        "pubip": {"type": "publisher", **bridge, "options": {"require_ip": ["10.0.0.0/8"]}},
        "pubtls": {"type": "publisher", **bridge, "options": {"require_tls": True}},
        "publimit": {"type": "publisher", **bridge, "options": {"post_body_limit": 100}},
        "call": {"type": "caller", **bridge, "options": {"timeout": 1}},
        "hook": {"type": "webhook", **bridge, "options": {"topic": "com.example.hook"}},
        "hookgh": {"type": "webhook", **bridge,
                   "options": {"topic": "com.example.hookgh", "github_secret": SECRET,
                               "success_response": "thanks"}},
    }
    components = [
        {"type": "class", "classname": "crossbar.bridge.rest.MessageForwarder",
         "realm": "realm1", "role": "backend",
         "extra": {"subscriptions": [{"url": f"http://127.0.0.1:{http_service}/events",
                                      "topic": "com.example.fwd"},
                                     {"url": f"http://127.0.0.1:{http_service}/wrongcode",
                                      "topic": "com.example.fwdcode"},
                                     {"url": "http://127.0.0.1:9/refused",
                                      "topic": "com.example.fwdrefused"}],
                   "expectedcode": 200}},
        {"type": "class", "classname": "crossbar.bridge.rest.MessageForwarder",
         "realm": "realm1", "role": "backend",
         "extra": {"subscriptions": [{"url": f"http://127.0.0.1:{http_service}/slow",
                                      "topic": "com.example.fwdslow"}],
                   "concurrency": 1, "queue": 2, "timeout": 5}},
        {"type": "class", "classname": "crossbar.bridge.rest.RESTCallee", "realm": "realm1",
         "role": "backend",
         "extra": {"procedure": "com.example.rest",
                   "baseurl": f"http://127.0.0.1:{http_service}/api/"}},
        {"type": "class", "classname": "comp.Adder", "realm": "realm1",
         "extra": {"offset": 100}},
    ]
    cfg = web_node(paths, realms=[realm], worker_options={"pythonpath": ["."]},
                   components=components)
    n = start_module_node(cfg, files={"flaskapp.py": FLASK_APP, "comp.py": COMPONENT})
    # components join right after the node listens: wait until all of them are in place
    c = SyncClient(n.port)
    try:
        wait_subscribed(c, ("com.example.fwd", "com.example.fwdcode", "com.example.fwdrefused",
                            "com.example.fwdslow"),
                        ("com.example.rest", "com.example.comp.where_hub"))
    finally:
        c.close()
    return n


@pytest.fixture
def client(node):
    c = SyncClient(node.port)
    yield c
    c.close()


def get_event(q: queue.Queue, timeout: float = 5.0):
    return q.get(timeout=scaled(timeout))


class Gate:
    """A callee for ``client.register`` that holds every call until ``open()``: a test sees
    all its calls waiting at once (``wait_entered``), then lets them finish."""

    def __init__(self, client: SyncClient, fn) -> None:
        import asyncio

        self.client, self.fn, self.entered = client, fn, 0
        self._open = client._run(lambda: _make_event(asyncio))

    async def __call__(self, *args):
        self.entered += 1
        await self._open.wait()
        return self.fn(*args)

    def wait_entered(self, n: int) -> None:
        wait_for(lambda: self.entered >= n, 10, f"{n} calls waiting in the callee")

    def open(self) -> None:
        self.client.loop.call_soon_threadsafe(self._open.set)


async def _make_event(asyncio):
    return asyncio.Event()  # made on the client's loop: it belongs to that loop


# -- in-process WAMP from a Flask view ----------------------------------------------------------

def test_flask_view_publishes_autobahn_receives(node, client):
    q = client.subscribe("com.example.news")
    r = requests.get(f"{node.url}/app/publish", params={"topic": "com.example.news",
                                                      "value": "hello"}, timeout=scaled(5))
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["id"], int)
    assert get_event(q) == (["hello"], {})


def test_flask_view_calls_autobahn_procedure(node, client):
    client.register("com.example.add2", lambda a, b: a + b)

    def fail():
        raise ApplicationError("com.example.oops", "bad input")

    client.register("com.example.fail2", fail)
    r = requests.get(f"{node.url}/app/call", params={"procedure": "com.example.add2",
                                                   "args": "[2, 3]"}, timeout=scaled(5))
    assert r.status_code == 200 and r.json() == {"result": 5}
    r = requests.get(f"{node.url}/app/call", params={"procedure": "com.example.fail2"},
                     timeout=scaled(5))
    assert r.status_code == 500
    assert r.json() == {"error": "com.example.oops", "args": ["bad input"]}
    r = requests.get(f"{node.url}/app/call", params={"procedure": "com.example.nothing"},
                     timeout=scaled(5))
    assert r.json()["error"] == "wamp.error.no_such_procedure"


def test_greenlet_hosted_app_waits_cooperatively(node, client):
    """``"threads": false``: the view runs on the hub; its calls wait without blocking it."""
    gate = Gate(client, lambda x: 2 * x)
    client.register("com.example.slowdouble", gate)
    results: list = []

    def get(i):
        r = requests.get(f"{node.url}/app3/call", params={"procedure": "com.example.slowdouble",
                                                        "args": json.dumps([i])},
                         timeout=scaled(10))
        results.append(r.json()["result"])

    threads = [threading.Thread(target=get, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    # five calls from greenlets on the hub wait at the callee at once: concurrent, not one
    # after another (one view blocking the hub would keep the others from calling)
    gate.wait_entered(5)
    gate.open()
    for t in threads:
        t.join(scaled(10))
    assert sorted(results) == [0, 2, 4, 6, 8]


def test_flask_call_timeout(node, client):
    gate = Gate(client, lambda: "late")  # never opened: answers only after the test
    client.register("com.example.slow1", gate)
    t0 = time.monotonic()
    r = requests.get(f"{node.url}/app/call", params={"procedure": "com.example.slow1",
                                                   "timeout": "0.3"}, timeout=scaled(5))
    assert r.status_code == 500 and r.json()["error"] == "wamp.error.timeout"
    assert time.monotonic() - t0 < scaled(2.5)
    gate.open()


def test_role_permissions_apply_to_inprocess_session(node, client):
    client.register("com.example.public", lambda: "public ok")
    q = client.subscribe("com.example.news2")
    r = requests.get(f"{node.url}/app2/publish", params={"topic": "com.example.news2",
                                                       "value": "x"}, timeout=scaled(5))
    assert r.status_code == 500 and r.json()["error"] == "wamp.error.not_authorized"
    r = requests.get(f"{node.url}/app2/call", params={"procedure": "com.example.public"},
                     timeout=scaled(5))
    assert r.json() == {"result": "public ok"}
    r = requests.get(f"{node.url}/app2/call", params={"procedure": "com.example.comp.add",
                                                    "args": "[1, 2]"}, timeout=scaled(5))
    assert r.json()["error"] == "wamp.error.not_authorized"
    assert q.empty()


def test_nothing_leaks_per_request(node, client):
    # the first request joins the app's shared session (lazily); later ones add nothing
    requests.get(f"{node.url}/app/publish", params={"topic": "com.example.leak"}, timeout=scaled(5))
    before = client.call("wamp.session.count")
    with requests.Session() as http:
        for i in range(40):
            r = http.get(f"{node.url}/app/publish", params={"topic": "com.example.leak",
                                                          "value": str(i)}, timeout=scaled(5))
            assert r.status_code == 200
    assert client.call("wamp.session.count") == before


def test_import_time_subscription(node, client):
    client.publish("com.example.importtime", 7)
    got = wait_for(lambda: requests.get(f"{node.url}/app/received", timeout=scaled(5)).json(),
                   5, "the import-time subscription's event", interval=0.05)
    assert got == [7]


def test_killed_session_rejoins_and_resubscribes(node, client):
    killed = client.call("wamp.session.kill_by_authid", "importtime")
    assert killed  # the Flask module's import-time session was there

    def received_after_rejoin() -> bool:
        # published again on every poll: an event sent before the re-subscription is lost
        client.publish("com.example.importtime", 8)
        return 8 in requests.get(f"{node.url}/app/received", timeout=scaled(5)).json()

    wait_for(received_after_rejoin, 10, "the re-joined session's re-subscription",
             interval=0.2)
    # and the view's session, killed too, re-joins on next use
    client.call("wamp.session.kill_by_authid", "geonode-backend")
    r = requests.get(f"{node.url}/app/publish", params={"topic": "com.example.x"},
                     timeout=scaled(5))
    assert r.status_code == 200 and isinstance(r.json()["id"], int)


# -- HTTP bridge: publisher / caller -------------------------------------------------------------

def check_common_headers(r: requests.Response) -> None:
    assert r.headers["Cache-Control"] == "no-store, no-cache, must-revalidate, max-age=0"
    assert r.headers["Access-Control-Allow-Origin"] in ("*", "http://example.com")
    assert r.headers["Access-Control-Allow-Credentials"] == "true"


def post(node, path: str, body, **kw) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = kw.pop("headers", {"Content-Type": "application/json"})
    r = requests.post(f"{node.url}/{path}", data=data, headers=headers, timeout=scaled(10), **kw)
    check_common_headers(r)
    return r


def test_publisher_publishes(node, client):
    q = client.subscribe("com.example.bridged")
    r = post(node, "pub", {"topic": "com.example.bridged", "args": [1, "two"],
                           "kwargs": {"three": 3}})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert isinstance(r.json()["id"], int)
    assert get_event(q) == ([1, "two"], {"three": 3})
    r = requests.put(f"{node.url}/pub", json={"topic": "com.example.bridged"}, timeout=scaled(5))
    assert r.status_code == 200
    assert get_event(q) == ([], {})
    # "acknowledge" in the options is the bridge's own choice anyway (it always waits)
    r = post(node, "pub", {"topic": "com.example.bridged", "options": {"acknowledge": True}})
    assert r.status_code == 200 and isinstance(r.json()["id"], int), r.text
    assert get_event(q) == ([], {})


def test_publisher_wamp_error_is_200_with_error(node):
    r = post(node, "pub", {"topic": "org.other.topic"})  # role backend: com.example.* only
    assert r.status_code == 200
    assert r.json()["error"] == "wamp.error.not_authorized"
    assert set(r.json()) == {"error", "args", "kwargs"}


def test_caller_calls(node, client):
    client.register("com.example.mul", lambda a, b: a * b)
    r = post(node, "call", {"procedure": "com.example.mul", "args": [6, 7]})
    assert r.status_code == 200 and r.json() == {"args": [42], "kwargs": {}}

    def boom():
        raise ApplicationError("com.example.boom", "x", code=3)

    client.register("com.example.boom", boom)
    r = post(node, "call", {"procedure": "com.example.boom"})
    assert r.status_code == 200
    assert r.json() == {"error": "com.example.boom", "args": ["x"], "kwargs": {"code": 3}}


def test_caller_requests_do_not_block_the_hub(node, client):
    gate = Gate(client, lambda x: x + 1)
    client.register("com.example.slowinc", gate)
    results: list = []

    def one(i):
        r = requests.post(f"{node.url}/call", json={"procedure": "com.example.slowinc",
                                                    "args": [i]}, timeout=scaled(10))
        results.append(r.json()["args"][0])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    gate.wait_entered(10)  # concurrent: all ten calls wait at the callee at once
    # answered while ten calls wait (a blocked hub would answer only after they finish)
    assert requests.options(f"{node.url}/call", timeout=scaled(5)).status_code == 200
    gate.open()
    for t in threads:
        t.join(scaled(10))
    assert sorted(results) == list(range(1, 11))


def test_caller_timeout_504(node, client):
    gate = Gate(client, lambda: None)  # never opened: answers only after the test
    client.register("com.example.slow2", gate)
    t0 = time.monotonic()
    r = post(node, "call", {"procedure": "com.example.slow2"})
    assert r.status_code == 504
    assert r.json()["error"] == "wamp.error.timeout"
    assert time.monotonic() - t0 < scaled(4)  # the caller's 1 s timeout, not the callee
    gate.open()


def test_component_procedure_via_caller(node):
    r = post(node, "call", {"procedure": "com.example.comp.add", "args": [1, 2]})
    assert r.json() == {"args": [103], "kwargs": {}}


@pytest.mark.parametrize("method", ["GET", "DELETE", "PATCH"])
def test_other_methods_405(node, method):
    r = requests.request(method, f"{node.url}/pub", timeout=scaled(5))
    assert r.status_code == 405
    check_common_headers(r)
    assert "error" in r.json()


def test_options_200_with_allow_and_cors(node):
    r = requests.options(f"{node.url}/call", headers={
        "Origin": "http://example.com", "Access-Control-Request-Headers": "content-type"},
        timeout=scaled(5))
    assert r.status_code == 200
    assert r.headers["Allow"] == "POST,PUT,OPTIONS"
    assert r.headers["Access-Control-Allow-Origin"] == "http://example.com"
    assert r.headers["Access-Control-Allow-Headers"] == "content-type"
    check_common_headers(r)


@pytest.mark.parametrize("body,ctype", [
    (b'{"topic": "com.example.x"}', "text/plain"),           # wrong content type
    (b'{"topic": "com.example.x"}', "application/json; charset=latin-1"),
    (b"not json", "application/json"),
    (b'["com.example.x"]', "application/json"),               # not an object
    (b'{"topic": "com.example.\xff"}', "application/json"),   # not UTF-8
    (b'{"args": [1]}', "application/json"),                   # no topic
    (b'{"topic": "com.example.x", "args": {"a": 1}}', "application/json"),  # args not a list
    (b'{"topic": "com.example.x", "options": {"exclude": 5}}', "application/json"),
    (b'{"topic": "com.example.x", "options": {"eligible": ["x"]}}', "application/json"),
])
def test_bad_bodies_400(node, body, ctype):
    r = post(node, "pub", body, headers={"Content-Type": ctype})
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error", "args", "kwargs"}


def test_body_limit_413(node):
    r = post(node, "publimit", {"topic": "com.example.x", "args": ["y" * 200]})
    assert r.status_code == 413
    r = post(node, "publimit", {"topic": "com.example.x"})
    assert r.status_code == 200


def test_require_ip_and_tls_403(node):
    assert post(node, "pubip", {"topic": "com.example.x"}).status_code == 403
    assert post(node, "pubtls", {"topic": "com.example.x"}).status_code == 403


def test_signed_requests(node, client):
    q = client.subscribe("com.example.signed")
    body = json.dumps({"topic": "com.example.signed", "args": ["ok"]}).encode()
    # good
    r = post(node, "pubsigned?" + sign_query("k1", SECRET, body), body)
    assert r.status_code == 200, r.text
    assert get_event(q) == (["ok"], {})
    # unsigned → 400 (missing fields)
    assert post(node, "pubsigned", body).status_code == 400
    # wrong secret → 401
    assert post(node, "pubsigned?" + sign_query("k1", "wrong", body), body).status_code == 401
    # unknown key → 401
    assert post(node, "pubsigned?" + sign_query("k2", SECRET, body), body).status_code == 401
    # body changed after signing → 401
    q_str = sign_query("k1", SECRET, body)
    assert post(node, "pubsigned?" + q_str, body.replace(b"ok", b"ko")).status_code == 401
    # timestamp outside the delta → 401
    import datetime

    old = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(hours=1)
    assert post(node, "pubsigned?" + sign_query("k1", SECRET, body, now=old),
                body).status_code == 401
    # malformed seq → 400
    bad = sign_query("k1", SECRET, body).replace("seq=1", "seq=x")
    assert post(node, "pubsigned?" + bad, body).status_code == 400


# -- webhook ---------------------------------------------------------------------------------------

def test_webhook_publishes_raw_body_and_headers(node, client):
    q = client.subscribe("com.example.hook")
    r = requests.post(f"{node.url}/hook", data=b"raw text body",
                      headers={"X-Custom": "v1", "Content-Type": "text/plain"}, timeout=scaled(5))
    assert r.status_code == 202 and r.text == "OK"
    check_common_headers(r)
    (payload,), _ = get_event(q)
    assert payload["body"] == "raw text body"
    assert payload["headers"]["X-Custom"] == ["v1"]
    assert payload["headers"]["Content-Type"] == ["text/plain"]


def test_webhook_github_signature(node, client):
    q = client.subscribe("com.example.hookgh")
    body = b'{"zen": "Keep it logically awesome."}'
    sig256 = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    sig1 = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    r = requests.post(f"{node.url}/hookgh", data=body,
                      headers={"X-Hub-Signature-256": sig256}, timeout=scaled(5))
    assert r.status_code == 202 and r.text == "thanks"
    assert get_event(q)[0][0]["body"] == body.decode()
    r = requests.post(f"{node.url}/hookgh", data=body, headers={"X-Hub-Signature": sig1},
                      timeout=scaled(5))
    assert r.status_code == 202
    r = requests.post(f"{node.url}/hookgh", data=body, timeout=scaled(5))
    assert r.status_code == 400 and r.text == "NOT OK"
    assert r.headers["Content-Type"].startswith("text/plain")
    assert requests.get(f"{node.url}/hookgh", timeout=scaled(5)).status_code == 405
    r = requests.post(f"{node.url}/hookgh", data=body,
                      headers={"X-Hub-Signature-256": "sha256=" + "0" * 64}, timeout=scaled(5))
    assert r.status_code == 401 and r.text == "NOT OK"


# -- the other direction: HTTP subscriber, HTTP callee, components ---------------------------------

def test_forwarder_posts_events(node, client):
    while not Recorder.events.empty():
        Recorder.events.get_nowait()
    client.publish("com.example.fwd", 1, "a", k="v")
    ctype, body = Recorder.events.get(timeout=scaled(5))
    assert ctype == "application/json"
    assert body == {"args": [1, "a"], "kwargs": {"k": "v"}}


def test_forwarder_failures_are_logged(node, client):
    client.publish("com.example.fwdcode", 1)
    client.publish("com.example.fwdrefused", 2)
    # (not just "127.0.0.1:9/refused": the start-up line "forwarding ... to" has that)
    node.wait_log("returned 201, not the expected 200")
    node.wait_log("forwarding an event to http://127.0.0.1:9/refused failed")
    # the node keeps serving
    assert client.call("com.example.comp.add", 1, 1) == 102


def test_forwarder_survives_events_it_cannot_send(node, client):
    """Binary payloads have no JSON form: each such event is logged and lost, but the 10
    forwarding greenlets all live on."""
    while not Recorder.events.empty():
        Recorder.events.get_nowait()
    for _ in range(12):
        client.publish("com.example.fwd", b"\x00\x01binary")
    client.publish("com.example.fwd", "after")
    assert Recorder.events.get(timeout=scaled(5))[1] == {"args": ["after"], "kwargs": {}}
    assert "has no JSON form, not forwarded: Object of type bytes" in node.log()


def test_forwarder_is_bounded(node, client):
    """A slow HTTP target: one request in flight, two queued, the rest dropped (logged); the
    router and the other forwarder keep going."""
    while not Recorder.events.empty():
        Recorder.events.get_nowait()
    t0 = time.monotonic()
    for i in range(8):
        client.publish("com.example.fwdslow", i)
    # publishing never waited for the slow target (SLOW_TARGET per event)
    assert time.monotonic() - t0 < scaled(1.0)
    client.publish("com.example.fwd", "still flowing")
    assert Recorder.events.get(timeout=scaled(5))[1] == {"args": ["still flowing"], "kwargs": {}}
    node.wait_log("forwarder queue full (2): event for http://127.0.0.1:")


def test_rest_callee(node, client):
    res = client.call("com.example.rest", "POST", "items/7", body="payload",
                      headers={"X-Test": ["1"]}, params={"q": "z"})
    assert res["code"] == 201
    assert res["headers"]["X-Reply"] == ["yes"]
    echoed = json.loads(res["content"])
    assert echoed == {"method": "POST", "path": "/api/items/7?q=z", "body": "payload",
                      "x_test": "1"}
    res = client.call("com.example.rest", "GET", "")
    assert json.loads(res["content"])["path"] == "/api/"


def test_component_procedures(node, client):
    assert client.call("com.example.comp.add", 2, 3) == 105
    assert client.call("com.example.comp.where") == "pool"
    assert client.call("com.example.comp.where_hub") == "hub"


# -- the sample ------------------------------------------------------------------------------------

def test_bridge_sample(tmp_path):
    """samples/bridge/node.json (on a free port): Flask button → in-process publish seen by the
    app's import-time subscription and forwarded back over HTTP; bridge caller → component and
    RESTCallee → Flask."""
    import shutil

    from support import SAMPLES, Node, free_port, geonode_cmd
    from support.nodes import start_process

    port = free_port()
    shutil.copytree(SAMPLES / "bridge", tmp_path / "bridge")
    cfg_path = tmp_path / "bridge" / "node.json"
    cfg_path.write_text(cfg_path.read_text().replace("8080", str(port)))
    proc = start_process(geonode_cmd(str(cfg_path)), tmp_path, tmp_path / "log")
    node = Node(proc, port, tmp_path, tmp_path / "log", [port])
    try:
        node.wait_ports()
        url = node.url
        call = {"procedure": "com.example.greet", "args": ["you"]}

        def greeted():  # components join right after the node listens
            r = requests.post(f"{url}/call", json=call, timeout=scaled(5))
            return r if "error" not in r.json() else None

        r = wait_for(greeted, 5, "the sample's component procedure", interval=0.05)
        assert r.json() == {"args": ["Hello, you!"], "kwargs": {}}
        r = requests.post(f"{url}/call", json={"procedure": "com.example.flaskapi",
                                               "args": ["GET", "status"]}, timeout=scaled(5))
        res = r.json()["args"][0]
        assert res["code"] == 200 and json.loads(res["content"])["name"] == "status"
        r = requests.post(f"{url}/click", allow_redirects=False, timeout=scaled(5))
        assert r.status_code == 302

        def click_shown() -> bool:
            page = requests.get(url, timeout=scaled(5)).text
            # the import-time subscription saw the click, and the forwarder POSTed it back
            return "subscription: 1" in page and "&#39;args&#39;: [1]" in page

        wait_for(click_shown, 5, "the click on the sample's page", interval=0.05)
        assert "WebSocket" in requests.get(f"{url}/live/", timeout=scaled(5)).text
        check_live_page(tmp_path, port)
    finally:
        node.stop()


LIVE_PAGE_HARNESS = r"""
// Runs the sample's /live/ page script in node (ws as WebSocket, a tiny DOM stub).
const fs = require('fs');
const html = fs.readFileSync(process.argv[2], 'utf8');
const script = html.split('<script>')[1].split('</script>')[0];
const els = {};
function el(id) {
  return els[id] || (els[id] = {id, textContent: '', disabled: id === 'add', children: [],
                                prepend(c) { this.children.unshift(c); }, onclick: null});
}
global.document = {getElementById: el, createElement: () => ({textContent: ''})};
global.location = {protocol: 'http:', host: process.argv[3]};
global.WebSocket = require('ws');
eval(script);
const deadline = Date.now() + Number(process.argv[4]);
let clicked = false;
setInterval(() => {
  const b = el('add');
  if (!b.disabled && b.onclick && !clicked) { clicked = true; b.onclick(); console.log('JOINED'); }
  if (el('result').textContent && el('events').children.length) {
    console.log(JSON.stringify({result: el('result').textContent,
                                events: el('events').children.map(c => c.textContent)}));
    process.exit(0);
  }
  if (Date.now() > deadline) { console.log('TIMEOUT ' + el('status').textContent); process.exit(1); }
}, 20);
"""


def check_live_page(tmp_path, port: int) -> None:
    """The sample's browser page (its raw WebSocket WAMP client) joins, calls and shows events."""
    import shutil
    import subprocess

    from support import ROOT, SAMPLES

    modules = ROOT / "tests" / "js" / "node_modules"
    if shutil.which("node") is None or not (modules / "ws").exists():
        pytest.skip("node or tests/js/node_modules/ws missing (tests/js/install.sh)")
    harness = tmp_path / "live_harness.js"
    harness.write_text(LIVE_PAGE_HARNESS)
    proc = subprocess.Popen(["node", str(harness), str(SAMPLES / "bridge" / "static" / "index.html"),
                             f"127.0.0.1:{port}", str(int(scaled(8000)))],
                            stdout=subprocess.PIPE, text=True,
                            env={"NODE_PATH": str(modules), "PATH": "/usr/bin:/usr/local/bin"})
    try:
        assert proc.stdout.readline().strip() == "JOINED"
        r = requests.post(f"http://127.0.0.1:{port}/publish",
                          json={"topic": "com.example.live", "args": ["from http"]},
                          timeout=scaled(5))
        assert r.status_code == 200
        out, _ = proc.communicate(timeout=scaled(10))
    finally:
        if proc.poll() is None:
            proc.kill()
    page = json.loads(out.strip().splitlines()[-1])
    assert page["result"] == "= 5"
    assert any(e.startswith("com.example.live") and "from http" in e for e in page["events"])


def test_no_router_yet_raises_and_keeps_nothing():
    """Before any router runs in the process (import time), publish/call raise
    wamp.error.no_router and leave no pending request behind; subscribe is remembered."""
    import subprocess
    import sys

    code = """
from geonode import wamp
s = wamp.session("realm1", "backend")
for fn in (lambda: s.call("com.example.x", timeout=1),
           lambda: s.publish("com.example.x", acknowledge=True)):
    try:
        fn()
    except wamp.ApplicationError as e:
        assert e.error == wamp.NO_ROUTER, e.error
    else:
        raise AssertionError("no error")
assert not s._pending, s._pending
sub = s.subscribe("com.example.x", print)
assert sub.active and sub.id is None
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=scaled(60))
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
