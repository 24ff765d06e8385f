"""Node lifecycle: graceful SIGTERM/SIGINT, start-up failures leave nothing listening."""

from __future__ import annotations

import signal
import socket
import threading
import time

import pytest
import requests
from support import port_open, scaled, wait_for, wait_port, web_node

APP = r'''
import time

def slow(environ, start_response):
    open("slow-started", "w").close()  # the test waits for this: the request is in flight
    time.sleep(float(environ["QUERY_STRING"]))  # the scenario: a request that takes its time
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"finished"]

def fast(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"fast"]
'''


def config() -> dict:
    return web_node({"/": {"type": "wsgi", "module": "lifeapp", "object": "fast"},
                     "slow": {"type": "wsgi", "module": "lifeapp", "object": "slow"}},
                    worker_options={"pythonpath": ["."]})


def refused(port: int) -> bool:
    return not port_open(port)


def slow_request(n, seconds: float, result: dict) -> threading.Thread:
    """GET /slow (the view takes ``seconds``) on a thread; returns once the view runs."""
    def run():
        try:
            r = requests.get(f"{n.url}/slow?{seconds}", timeout=scaled(10) + seconds)
            result.update(status=r.status_code, text=r.text, done=time.monotonic())
        except requests.exceptions.RequestException as e:
            result.update(error=type(e).__name__, done=time.monotonic())

    th = threading.Thread(target=run)
    th.start()
    wait_for(lambda: (n.dir / "slow-started").exists(), 10, "the slow view to start")
    return th


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_lets_in_flight_request_finish(start_node, sig):
    n = start_node(config(), files={"lifeapp.py": APP})
    # An idle keep-alive connection must not hold the shutdown for the whole grace period.
    idle = socket.create_connection(("127.0.0.1", n.port), timeout=scaled(5))
    idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    buf = b""
    while not buf.endswith(b"fast"):
        chunk = idle.recv(4096)
        assert chunk
        buf += chunk
    result: dict = {}
    th = slow_request(n, scaled(1.5), result)
    t0 = time.monotonic()
    n.proc.send_signal(sig)
    wait_for(lambda: refused(n.port), 1, "the listener to close after the signal")
    assert "done" not in result  # closed at once, not when the request in flight ended
    assert idle.recv(4096) == b""  # the idle connection was closed...
    idle_closed = time.monotonic()
    th.join()
    assert result["status"] == 200 and result["text"] == "finished", result
    assert idle_closed < result["done"]  # ...before the request in flight finished
    assert n.proc.wait(scaled(10)) == 0
    assert time.monotonic() - t0 < scaled(5)  # the view's time, not the 10 s grace
    idle.close()
    log = n.log()
    assert "stopping" in log and "stopped" in log
    assert "Traceback" not in log


def test_bind_failure_stops_everything(start_node):
    cfg = config()
    worker = cfg["workers"][0]
    with socket.socket() as taken:
        # The second transport wants a port this test holds: it cannot bind.
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        worker["transports"].append({
            "type": "web", "endpoint": {"type": "tcp", "port": busy, "interface": "127.0.0.1"},
            "paths": {"/": {"type": "wsgi", "module": "lifeapp", "object": "fast"}}})
        n = start_node(cfg, files={"lifeapp.py": APP}, wait=False)
        assert n.proc.wait(scaled(20)) == 1
    log = n.log()
    assert "workers[0].transports[1].endpoint" in log
    assert str(busy) in log and "in use" in log
    assert "listening on" not in log
    assert refused(n.port)  # the first transport, bound before the failure, was closed


def test_bad_tls_file_names_key(start_node):
    cfg = config()
    cfg["workers"][0]["transports"][0]["endpoint"]["tls"] = {"key": "nope.key",
                                                             "certificate": "nope.crt"}
    n = start_node(cfg, files={"lifeapp.py": APP}, wait=False)
    assert n.proc.wait(scaled(20)) == 1
    assert "workers[0].transports[0].endpoint.tls" in n.log()
    assert refused(n.port)


def test_second_signal_stops_at_once(start_node):
    n = start_node(config(), files={"lifeapp.py": APP})
    outcome: dict = {}
    view = scaled(5)
    th = slow_request(n, view, outcome)
    t0 = time.monotonic()
    n.proc.send_signal(signal.SIGTERM)
    n.wait_log("received SIGTERM: stopping")
    n.proc.send_signal(signal.SIGTERM)
    assert n.proc.wait(scaled(10)) == 0
    assert time.monotonic() - t0 < view / 2  # did not wait for the view
    th.join()
    assert outcome.get("status") != 200, outcome  # cut off, not completed
    assert "second signal" in n.log()


PUBLISHER_APP = '''
import geonode.wamp

def app(environ, start_response):
    geonode.wamp.session("realm1", "backend").publish("com.app.news", environ["PATH_INFO"],
                                                      acknowledge=True)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"published"]
'''


def test_wamp_session_reaches_router_without_wamp_key(start_node):
    """A view publishes via geonode.wamp.session() though its path has no "wamp" key."""
    from support.wamp import SyncClient

    allow = [{"uri": "", "match": "prefix",
              "allow": {"call": True, "register": True, "publish": True, "subscribe": True}}]
    cfg = web_node({"/": {"type": "wsgi", "module": "pubapp", "object": "app"},
                    "ws": {"type": "websocket"}},
                   realms=[{"name": "realm1", "roles": [{"name": "anonymous", "permissions": allow},
                                                         {"name": "backend", "permissions": allow}]}],
                   worker_options={"pythonpath": ["."]})
    n = start_node(cfg, files={"pubapp.py": PUBLISHER_APP})
    client = SyncClient(n.port)
    try:
        events = client.subscribe("com.app.news")
        r = requests.get(n.url + "/hello", timeout=scaled(10))
        assert (r.status_code, r.text) == (200, "published")
        assert events.get(timeout=scaled(5)) == (["/hello"], {})
    finally:
        client.close()
    assert "no_router" not in n.log()


def test_disabled_worker_does_not_start(start_node):
    cfg = config()
    cfg["workers"].append({
        "type": "router", "options": {"disabled": True},
        "transports": [{"type": "web",
                        "endpoint": {"type": "tcp", "port": "$PORT2", "interface": "127.0.0.1"},
                        "paths": {"/": {"type": "wsgi", "module": "lifeapp", "object": "fast"}}}]})
    n = start_node(cfg, files={"lifeapp.py": APP}, nports=2, wait=False)
    wait_port(n.port, n.proc)
    assert requests.get(n.url + "/", timeout=scaled(5)).text == "fast"
    assert refused(n.ports[1])
    log = n.log()
    assert log.count("workers[1]: disabled (options.disabled), not started") == 1, log
    assert log.count("listening on") == 1, log
