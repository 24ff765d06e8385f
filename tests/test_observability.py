"""issue 13: the ``metrics`` and ``health`` path services, on real nodes over real sockets."""

from __future__ import annotations

import asyncio
import json
import re
import threading

import pytest
import requests
from support import scaled, wait_for, web_node
from support.config import realm, wsgi
from support.wamp import SyncClient, wait_subscribed, ws_session

APP = '''
import threading
release = threading.Event()

def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        release.wait(30)
    if environ["PATH_INFO"] == "/release":
        release.set()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
'''

COMPONENT = '''
class Greeter:
    def on_join(self, session):
        session.register("com.example.greet", lambda name: "hi " + name)
'''


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition ``text`` (0 when absent)."""
    want = {k: v for k, v in labels.items()}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in want.items()):
            return float(m.group(4))
    return 0.0


@pytest.fixture(scope="module")
def node(start_module_node):
    cfg = web_node({"app": wsgi("app", maxthreads=4), "ws": {"type": "websocket"},
                    "metrics": {"type": "metrics"}, "health": {"type": "health"},
                    "hello": {"type": "json", "value": {"a": 1}}},
                   realms=[realm()],
                   components=[{"type": "class", "classname": "comp.Greeter",
                                "realm": "realm1"}])
    return start_module_node(cfg, files={"app.py": APP, "comp.py": COMPONENT})


def scrape(node) -> str:
    r = requests.get(node.url + "/metrics", timeout=scaled(10))
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    return r.text


def test_http_requests_counted_by_mount_and_status(node):
    before = scrape(node)
    for _ in range(7):
        assert requests.get(node.url + "/hello", timeout=scaled(10)).status_code == 200
    for _ in range(3):
        assert requests.get(node.url + "/nothing-here", timeout=scaled(10)).status_code == 404
    after = scrape(node)
    assert metric(after, "geonode_http_requests_total", path="/hello", status="200") - \
        metric(before, "geonode_http_requests_total", path="/hello", status="200") == 7
    assert metric(after, "geonode_http_requests_total", path="/", status="404") - \
        metric(before, "geonode_http_requests_total", path="/", status="404") == 3
    n = metric(after, "geonode_http_request_duration_seconds_count", path="/hello")
    assert n >= 7
    assert metric(after, "geonode_http_request_duration_seconds_bucket", path="/hello",
                  le="+Inf") == n
    # the process collector is there
    assert metric(after, "process_resident_memory_bytes") > 0
    assert metric(after, "process_open_fds") > 0


def test_wamp_messages_sessions_and_calls(node):
    client = SyncClient(node.port)
    try:
        wait_subscribed(client, procedures=("com.example.greet",))
        before = scrape(node)
        sessions = metric(before, "geonode_wamp_sessions", realm="realm1")
        assert sessions >= 1
        for i in range(5):
            assert client.call("com.example.greet", str(i)) == f"hi {i}"
        after = scrape(node)
        d = {t: metric(after, "geonode_wamp_messages_total", realm="realm1", type=t,
                       direction=dr) - metric(before, "geonode_wamp_messages_total",
                                              realm="realm1", type=t, direction=dr)
             for t, dr in (("CALL", "in"), ("INVOCATION", "out"), ("YIELD", "in"),
                           ("RESULT", "out"))}
        assert d == {"CALL": 5, "INVOCATION": 5, "YIELD": 5, "RESULT": 5}
        c0 = metric(before, "geonode_wamp_call_duration_seconds_count", realm="realm1")
        c1 = metric(after, "geonode_wamp_call_duration_seconds_count", realm="realm1")
        assert c1 - c0 == 5
    finally:
        client.close()
    wait_for(lambda: metric(scrape(node), "geonode_wamp_sessions", realm="realm1")
             == sessions - 1, scaled(10), "the client's session gone from the gauge")


def test_wsgi_pool_gauges_and_connections(node):
    # One request holds a pool thread: busy 1 while it waits, 0 after.
    done = []
    t = threading.Thread(target=lambda: done.append(
        requests.get(node.url + "/app/slow", timeout=scaled(30))), daemon=True)
    t.start()
    wait_for(lambda: metric(scrape(node), "geonode_wsgi_threads_busy", path="/app") == 1,
             scaled(10), "one busy WSGI thread")
    text = scrape(node)
    assert metric(text, "geonode_wsgi_threads_max", path="/app") == 4
    assert metric(text, "geonode_connections", transport="web", kind="http_request") >= 2
    requests.get(node.url + "/app/release", timeout=scaled(10))
    t.join(scaled(10))
    assert done and done[0].status_code == 200
    wait_for(lambda: metric(scrape(node), "geonode_wsgi_threads_busy", path="/app") == 0,
             scaled(10), "the WSGI thread free again")


def test_auth_failures_counted(start_node):
    cfg = web_node({"ws": {"type": "websocket", "auth": {"ticket": {
        "type": "static", "principals": {"alice": {"ticket": "secret", "role": "anonymous"}}}}},
        "metrics": {"type": "metrics"}}, realms=[realm()])
    node = start_node(cfg)

    async def bad():
        try:
            await ws_session(node.port, path="ws", realm="realm1", ticket=("alice", "wrong"),
                             timeout=scaled(10))
        except Exception as e:
            return e
        return None

    assert asyncio.run(bad()) is not None
    wait_for(lambda: metric(scrape(node), "geonode_auth_failures_total", realm="realm1",
                            method="ticket") == 1, scaled(10), "one ticket failure counted")


def test_health_ok_with_workers_and_realms(node):
    def ok():
        r = requests.get(node.url + "/health", timeout=scaled(10))
        return r if r.status_code == 200 else None

    r = wait_for(ok, scaled(10), "health 200 (component joined)")
    body = r.json()
    assert body["status"] == "ok"
    assert body["uptime"] > 0 and body["version"]
    w = body["workers"]["workers[0]"]
    assert "sessions" in w["realms"]["realm1"]
    assert w["components"] == {"workers[0].components[0]": "joined"}
    assert w["transports"] == {"workers[0].transports[0]": "listening"}


def test_health_503_while_a_component_is_down(start_node):
    comp = '''
class Leaver:
    def on_join(self, session):
        session.register("com.example.leave", self.leave, on_hub=True)
        self.session = session
    def leave(self):
        import gevent
        gevent.spawn_later(0.05, self.session.leave)
        return "bye"
'''
    cfg = web_node({"ws": {"type": "websocket"}, "health": {"type": "health"}},
                   realms=[realm()],
                   components=[{"type": "class", "classname": "comp.Leaver", "realm": "realm1"}])
    node = start_node(cfg, files={"comp.py": comp})
    wait_for(lambda: requests.get(node.url + "/health", timeout=scaled(10)).status_code == 200,
             scaled(10), "health 200")
    client = SyncClient(node.port)
    try:
        wait_subscribed(client, procedures=("com.example.leave",))
        assert client.call("com.example.leave") == "bye"
    finally:
        client.close()
    # (a Response is falsy when not ok: wrapped in a list for wait_for)
    r, = wait_for(lambda: (lambda r: [r] if r.status_code == 503 else None)(
        requests.get(node.url + "/health", timeout=scaled(10))), scaled(10), "health 503")
    body = r.json()
    assert body["status"] == "down"
    assert body["down"] == ["workers[0].components[0]"]


@pytest.mark.inprocess
@pytest.mark.parametrize("state", ["starting", "stopping"])
def test_health_503_while_starting_and_stopping(state):
    from geonode.web.context import NodeInfo
    from geonode.web.services import health

    info = NodeInfo()
    info.state = state
    app = health.build({"type": "health"}, type("Ctx", (), {"node": info})())
    seen = {}
    body = b"".join(app({"REQUEST_METHOD": "GET"}, lambda s, h: seen.update(status=s)))
    assert seen["status"].startswith("503")
    assert json.loads(body)["status"] == state
    info.state = "up"
    body = b"".join(app({"REQUEST_METHOD": "GET"}, lambda s, h: seen.update(status=s)))
    assert seen["status"].startswith("200")


@pytest.mark.inprocess
def test_health_checks_hook_makes_it_503():
    from geonode.web.context import NodeInfo
    from geonode.web.services import health

    info = NodeInfo()
    info.state = "up"
    link = {"ok": True}
    info.health_checks.append(lambda: ("backplane", link["ok"], {"peers": 2}))
    ok, body = health.report(info)
    assert ok and body["checks"] == {"backplane": {"ok": True, "peers": 2}}
    link["ok"] = False
    ok, body = health.report(info)
    assert not ok and body["status"] == "down" and body["down"] == ["backplane"]


def test_several_processes_counted_together(start_node, tmp_path):
    """GEONODE_METRICS_DIR: each node process writes its counts there; a scrape of any merges
    all (the hook for ``--processes N`` and gunicorn's workers), a stopped one's counters stay."""
    import os

    folder = tmp_path / "metrics"
    env = dict(os.environ, GEONODE_METRICS_DIR=str(folder))
    cfg = web_node({"hello": {"type": "json", "value": 1}, "metrics": {"type": "metrics"}})
    a = start_node(cfg, env=env)
    b = start_node(cfg, env=env)
    for node, n in ((a, 3), (b, 4)):
        for _ in range(n):
            assert requests.get(node.url + "/hello", timeout=scaled(10)).status_code == 200

    def total() -> float:
        return metric(scrape(a), "geonode_http_requests_total", path="/hello", status="200")

    wait_for(lambda: total() == 7, scaled(10), "7 requests over both processes")
    pids = set(re.findall(r'process_open_fds\{pid="(\d+)"\}', scrape(a)))
    assert pids == {str(a.proc.pid), str(b.proc.pid)}
    b.stop()
    assert total() == 7
    assert set(re.findall(r'process_open_fds\{pid="(\d+)"\}', scrape(a))) == {str(a.proc.pid)}
