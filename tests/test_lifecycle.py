"""Node lifecycle: graceful SIGTERM/SIGINT, start-up failures leave nothing listening."""

from __future__ import annotations

import signal
import socket
import threading
import time

import pytest
import requests
from conftest import web_node

APP = r'''
import time

def slow(environ, start_response):
    time.sleep(1.5)
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
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_lets_in_flight_request_finish(start_node, sig):
    n = start_node(config(), files={"lifeapp.py": APP})
    # An idle keep-alive connection must not hold the shutdown for the whole grace period.
    idle = socket.create_connection(("127.0.0.1", n.port), timeout=5)
    idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    buf = b""
    while not buf.endswith(b"fast"):
        chunk = idle.recv(4096)
        assert chunk
        buf += chunk
    result: dict = {}

    def slow():
        r = requests.get(n.url + "/slow", timeout=10)
        result["status"], result["text"] = r.status_code, r.text

    th = threading.Thread(target=slow)
    th.start()
    time.sleep(0.4)  # the request is in the app now
    t0 = time.monotonic()
    n.proc.send_signal(sig)
    time.sleep(0.3)
    assert refused(n.port), "still accepting after the signal"
    th.join()
    assert result == {"status": 200, "text": "finished"}
    assert n.proc.wait(10) == 0
    assert time.monotonic() - t0 < 5
    assert idle.recv(4096) == b""  # the idle connection was closed
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
        assert n.proc.wait(20) == 1
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
    assert n.proc.wait(20) == 1
    assert "workers[0].transports[0].endpoint.tls" in n.log()
    assert refused(n.port)


def test_second_signal_stops_at_once(start_node):
    n = start_node(config(), files={"lifeapp.py": APP})
    outcome: list = []

    def slow():
        try:
            outcome.append(requests.get(n.url + "/slow", timeout=10).status_code)
        except requests.exceptions.RequestException as e:
            outcome.append(type(e).__name__)

    th = threading.Thread(target=slow)
    th.start()
    time.sleep(0.4)
    t0 = time.monotonic()
    n.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    n.proc.send_signal(signal.SIGTERM)
    assert n.proc.wait(10) == 0
    assert time.monotonic() - t0 < 1.2  # did not wait for the 1.5 s view
    th.join()
    assert outcome and outcome[0] != 200  # cut off, not completed
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
    from _wampclient import SyncClient

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
        r = requests.get(n.url + "/hello", timeout=10)
        assert (r.status_code, r.text) == (200, "published")
        assert events.get(timeout=5) == (["/hello"], {})
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
    from conftest import wait_port

    wait_port(n.port, n.proc)
    assert requests.get(n.url + "/", timeout=5).text == "fast"
    assert refused(n.ports[1])
    log = n.log()
    assert log.count("workers[1]: disabled (options.disabled), not started") == 1, log
    assert log.count("listening on") == 1, log
