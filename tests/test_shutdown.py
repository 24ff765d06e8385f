"""Graceful shutdown, the same under ``python -m geonode`` and gunicorn's GeventWorker.

SIGTERM: idle keep-alive connections close at once, a request in flight (a view sleeping
``VIEW`` s) still gets its whole answer, every WAMP session (WebSocket, RawSocket, in-process)
gets GOODBYE ``wamp.close.system_shutdown`` after the testaments went out, and the process exits
0 right after (not after a graceful timeout). A second SIGTERM cuts off what is in flight.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
import requests
from support import (
    Node,
    free_port,
    launch,
    launch_gunicorn,
    router_config,
    scaled,
    wait_for,
    web_transport,
)
from support.config import rawsocket_transport
from support.timing import async_wait_for

APP = r'''
import time

def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        # the test waits for this file: from then on the request is in flight
        open("slow-started", "w").close()
        time.sleep(float(environ["QUERY_STRING"] or 1.0))  # the scenario: a request in flight
        body = b"slow answer " + b"x" * 100000   # big enough for several writes
    else:
        body = b"fast"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''

COMPONENT = r'''
import json, os

class Watcher:
    """Writes what it hears at shutdown to watcher.json (next to the node config)."""

    def __init__(self, config):
        self.path = os.path.join(str(config.config_dir or "."), "watcher.json")
        self.left, self.testaments = [], []

    def on_join(self, session):
        session.subscribe("wamp.session.on_leave", self.on_session_leave, on_hub=True)
        session.subscribe("com.test.testament", self.testaments.append, on_hub=True)

    def on_session_leave(self, session_id):
        self.left.append(session_id)

    def on_leave(self, session, reason):
        with open(self.path, "w") as f:
            json.dump({"reason": reason, "left": self.left, "testaments": self.testaments}, f)
'''


def node_config(port: int | str = "$PORT", rawsocket: bool = False,
                component: bool = False) -> dict:
    web = web_transport({"/": {"type": "wsgi", "module": "shutapp", "object": "app"},
                         "ws": {"type": "websocket"}}, port)
    transports = [web]
    if rawsocket:
        transports.append(rawsocket_transport("$PORT2"))
    cfg = router_config(transports)
    cfg["workers"][0]["options"] = {"pythonpath": ["."]}
    if component:
        cfg["workers"][0]["components"] = [{"type": "class", "classname": "watcher.Watcher",
                                            "realm": "realm1"}]
    return cfg


FILES = {"shutapp.py": APP, "watcher.py": COMPONENT}


def start_node(tmp: Path, cfg: dict, nports: int = 1) -> Node:
    return launch(cfg, tmp, FILES, nports=nports)


def start_gunicorn(tmp: Path) -> Node:
    # the port in node.json is ignored under gunicorn (gunicorn owns the socket)
    (tmp / "shutapp.py").write_text(APP)
    (tmp / "node.json").write_text(json.dumps(node_config(free_port())))
    return launch_gunicorn(tmp, "geonode:load('node.json')", log_name="node.log")


@pytest.fixture
def procs():
    """Nodes a test started: killed at its end if still running."""
    started: list[Node] = []
    yield started
    for n in started:
        n.stop(signal.SIGKILL)


def idle_keepalive(port: int, tls: ssl.SSLContext | None = None) -> socket.socket:
    """A connection that had one request answered and now sits idle (keep-alive)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    if tls is not None:
        s = tls.wrap_socket(s, server_hostname="127.0.0.1")
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    buf = b""
    while not buf.endswith(b"fast"):
        chunk = s.recv(4096)
        assert chunk, buf
        buf += chunk
    return s


def slow_request(tmp: Path, port: int, result: dict, ca: str | None = None,
                 seconds: float = 1.0) -> threading.Thread:
    """GET /slow (the view sleeps ``seconds``) on a thread; returns once the view is running."""
    marker = tmp / "slow-started"
    marker.unlink(missing_ok=True)

    def run():
        scheme = "https" if ca else "http"
        try:
            r = requests.get(f"{scheme}://127.0.0.1:{port}/slow?{seconds}",
                             timeout=scaled(10) + seconds, verify=ca or True)
        except requests.RequestException as e:
            result["error"] = e
            return
        result.update(status=r.status_code, size=len(r.content), head=r.content[:11],
                      connection=r.headers.get("Connection"), done=time.monotonic())

    th = threading.Thread(target=run)
    th.start()
    wait_started(marker)
    return th


def wait_started(marker: Path) -> None:
    """Wait until the slow view has written its marker file (it is sleeping now)."""
    wait_for(marker.exists, 10, "the slow view to start")


#: how long the slow view of check_http_stop takes: longer than every "at once" bound there
VIEW = scaled(1.0)


def check_http_stop(tmp: Path, node: Node, sig_target: int, ca: str | None = None) -> None:
    """Idle keep-alive + a VIEW s request in flight, SIGTERM: the idle connection closes at
    once, the request gets its whole answer, the process exits 0 right after it."""
    port, proc = node.port, node.proc
    idle = idle_keepalive(port, ssl.create_default_context(cafile=ca) if ca else None)
    result: dict = {}
    th = slow_request(tmp, port, result, ca, seconds=VIEW)
    t0 = time.monotonic()
    os.kill(sig_target, signal.SIGTERM)
    idle.settimeout(scaled(3))
    assert idle.recv(4096) == b""  # closed by the server...
    idle_closed = time.monotonic()
    th.join(scaled(5))
    assert result.get("status") == 200, result
    # ...at once, not after the request in flight
    assert idle_closed < result["done"] and idle_closed - t0 < 0.8 * VIEW, (idle_closed - t0)
    assert result["size"] == 11 + 1 + 100000 and result["head"] == b"slow answer"
    assert result["connection"] == "close"  # its connection's last response
    assert proc.wait(scaled(5)) == 0
    took = time.monotonic() - t0
    # < VIEW of the view left, then a prompt exit (no graceful timeout: 10 s, gunicorn's 30 s)
    assert took < VIEW + scaled(1.5), took
    idle.close()


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_node_http_stop(tmp_path, procs, tls):
    cfg = node_config()
    ca = None
    if tls:
        from support.certs import self_signed

        cert, key = self_signed()
        (tmp_path / "cert.pem").write_text(cert)
        (tmp_path / "key.pem").write_text(key)
        ca = str(tmp_path / "cert.pem")
        cfg["workers"][0]["transports"][0]["endpoint"]["tls"] = {"certificate": "cert.pem",
                                                                 "key": "key.pem"}
    node = start_node(tmp_path, cfg)
    procs.append(node)
    check_http_stop(tmp_path, node, node.proc.pid, ca)
    log = node.log()
    assert "stopped" in log and "Traceback" not in log, log


def test_node_http10_keepalive_answer_during_stop_says_close(tmp_path, procs):
    """An HTTP/1.0 keep-alive request in flight at SIGTERM: its answer says Connection: close
    (not the keep-alive it would get otherwise), then the connection closes."""
    node = start_node(tmp_path, node_config())
    procs.append(node)
    proc = node.proc
    s = socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5))
    s.sendall(b"GET /slow?0.3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    wait_started(tmp_path / "slow-started")
    proc.send_signal(signal.SIGTERM)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    assert lines[0].startswith(b"http/1.1 200"), head
    assert b"connection: close" in lines and not any(b"keep-alive" in h for h in lines), head
    assert body.startswith(b"slow answer")
    assert proc.wait(scaled(5)) == 0


def test_gunicorn_http_stop(tmp_path, procs):
    node = start_gunicorn(tmp_path)
    procs.append(node)
    check_http_stop(tmp_path, node, node.proc.pid)
    log = node.log()
    assert "graceful timeout" not in log.lower() and "Traceback" not in log, log


# --- WAMP sessions -----------------------------------------------------------------------------

async def _client(name: str, events: list, port: int, rawsocket: bool = False):
    """A joined autobahn-python session that records onLeave/onDisconnect in ``events``."""
    import txaio

    txaio.use_asyncio()
    from autobahn.asyncio.rawsocket import WampRawSocketClientFactory
    from autobahn.asyncio.wamp import ApplicationSession
    from autobahn.asyncio.websocket import WampWebSocketClientFactory
    from autobahn.wamp.types import ComponentConfig

    loop = asyncio.get_running_loop()
    joined = loop.create_future()

    class Recorder(ApplicationSession):
        def onJoin(self, details):
            joined.set_result(self)

        def onLeave(self, details):
            events.append((name, "leave", details.reason))
            super().onLeave(details)

        def onDisconnect(self):
            events.append((name, "disconnect", None))

    def make():
        return Recorder(ComponentConfig("realm1"))

    if rawsocket:
        factory = WampRawSocketClientFactory(make)
    else:
        factory = WampWebSocketClientFactory(make, url=f"ws://127.0.0.1:{port}/ws")
    await loop.create_connection(factory, "127.0.0.1", port)
    return await asyncio.wait_for(joined, scaled(10))


async def _wamp_shutdown(port: int, rawsocket_port: int | None, sig: callable) -> dict:
    events: list = []
    a = await _client("ws", events, port)
    testaments: list = []
    await a.subscribe(lambda *args: testaments.append(args[0]), "com.test.testament")
    sessions = [a]
    if rawsocket_port is not None:
        b = await _client("raw", events, rawsocket_port, rawsocket=True)
        sessions.append(b)
    for s in sessions:
        await s.call("wamp.session.add_testament", "com.test.testament",
                     [f"last words of {s.session_id}"], {})
    ids = [s.session_id for s in sessions]
    t0 = time.monotonic()
    sig()
    try:
        await async_wait_for(lambda: sum(1 for e in events if e[1] == "disconnect")
                             >= len(sessions), 5, "every session to be disconnected")
    except AssertionError:
        pass  # check_told says which session was not told
    return {"events": events, "testaments": testaments, "took": time.monotonic() - t0,
            "ids": ids}


def check_told(out: dict, names: list[str]) -> None:
    for name in names:
        mine = [e[1:] for e in out["events"] if e[0] == name]
        # GOODBYE first (onLeave with the router's reason), then the transport closes.
        assert mine == [("leave", "wamp.close.system_shutdown"), ("disconnect", None)], out


def test_node_wamp_sessions_told(tmp_path, procs):
    node = start_node(tmp_path, node_config(rawsocket=True, component=True), nports=2)
    procs.append(node)
    proc = node.proc
    out = asyncio.run(_wamp_shutdown(node.port, node.ports[1],
                                     lambda: proc.send_signal(signal.SIGTERM)))
    check_told(out, ["ws", "raw"])
    # Every testament was published while all sessions were still there, the subscriber's
    # own included.
    assert sorted(out["testaments"]) == sorted(f"last words of {i}" for i in out["ids"]), out
    assert proc.wait(scaled(5)) == 0
    assert out["took"] < scaled(1.0), out
    # The in-process component was told too (not left hanging), after the clients: it saw
    # their on_leave meta events and their testaments.
    watcher = json.loads((tmp_path / "watcher.json").read_text())
    assert watcher["reason"] == "wamp.close.system_shutdown"
    assert sorted(watcher["left"]) == sorted(out["ids"]), watcher
    assert len(watcher["testaments"]) == 2, watcher
    log = (tmp_path / "node.log").read_text()
    assert "Traceback" not in log, log


def test_gunicorn_wamp_session_told(tmp_path, procs):
    node = start_gunicorn(tmp_path)
    procs.append(node)
    proc = node.proc
    out = asyncio.run(_wamp_shutdown(node.port, None, lambda: proc.send_signal(signal.SIGTERM)))
    check_told(out, ["ws"])
    assert out["testaments"] == [f"last words of {out['ids'][0]}"], out
    assert proc.wait(scaled(5)) == 0
    assert out["took"] < scaled(1.0), out


def _close_frame(ws) -> tuple[int, list]:
    """Read frames until the close frame: (its close code, the text messages before it)."""
    import websocket

    texts = []
    while True:
        frame = ws.recv_frame()
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(frame.data[:2], "big"), texts
        texts.append(frame.data.decode())


def test_node_websockets_closed_going_away(tmp_path, procs):
    """On the wire: a WAMP WebSocket gets GOODBYE, then close 1001; a non-WAMP WebSocket
    (the echo service) gets close 1001 too."""
    import websocket

    cfg = node_config()
    cfg["workers"][0]["transports"][0]["paths"]["echo"] = {"type": "websocket-testee"}
    node = start_node(tmp_path, cfg)
    procs.append(node)
    proc, port = node.proc, node.port
    wamp = websocket.create_connection(f"ws://127.0.0.1:{port}/ws",
                                       subprotocols=["wamp.2.json"], timeout=scaled(5))
    wamp.send(json.dumps([1, "realm1", {"roles": {"subscriber": {}}}]))
    assert json.loads(wamp.recv())[0] == 2  # WELCOME
    echo = websocket.create_connection(f"ws://127.0.0.1:{port}/echo", timeout=scaled(5))
    echo.send("ping")
    assert echo.recv() == "ping"
    proc.send_signal(signal.SIGTERM)
    code, texts = _close_frame(wamp)
    assert code == 1001
    assert [[m[0], m[2]] for m in map(json.loads, texts)] == [[6, "wamp.close.system_shutdown"]]
    assert _close_frame(echo) == (1001, [])
    assert proc.wait(scaled(5)) == 0


#: the slow view of the "cut off" tests: far longer than their bounds
LONG_VIEW = scaled(5)


def test_node_second_signal_cuts_off(tmp_path, procs):
    node = start_node(tmp_path, node_config())
    procs.append(node)
    proc = node.proc
    result: dict = {}
    th = slow_request(tmp_path, node.port, result, seconds=LONG_VIEW)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    node.wait_log("received SIGTERM")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(scaled(5)) == 0
    assert time.monotonic() - t0 < LONG_VIEW * 0.6  # did not wait for the view
    th.join(scaled(10))
    log = node.log()
    assert "second signal" in log, log


def test_gunicorn_sigint_during_grace_cuts_off(tmp_path, procs):
    """gunicorn's master turns SIGINT during its graceful stop into a quick one (SIGQUIT to
    the worker); the worker does not wait for the request in flight."""
    node = start_gunicorn(tmp_path)
    procs.append(node)
    proc = node.proc
    result: dict = {}
    th = slow_request(tmp_path, node.port, result, seconds=LONG_VIEW)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    node.wait_log("Handling signal: term")
    node.wait_log("request(s) in flight")  # the worker has begun its graceful stop
    proc.send_signal(signal.SIGINT)
    assert proc.wait(scaled(5)) == 0
    assert time.monotonic() - t0 < LONG_VIEW * 0.6  # did not wait for the view
    th.join(scaled(10))
    assert result.get("status") != 200, result
    log = node.log()
    assert "Quick shutdown" in log, log


def test_gunicorn_worker_second_sigterm_cuts_off(tmp_path, procs):
    """A second SIGTERM reaching the worker itself (the master sent the first) stops it at
    once, and the worker says so in the log."""
    import re

    node = start_gunicorn(tmp_path)
    procs.append(node)
    proc = node.proc
    # The master listens (and the port answers) before it has forked and logged the worker.
    node.wait_log("Booting worker with pid: ")
    worker = int(re.search(r"Booting worker with pid: (\d+)", node.log()).group(1))
    result: dict = {}
    th = slow_request(tmp_path, node.port, result, seconds=LONG_VIEW)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    node.wait_log("Handling signal: term")
    node.wait_log("request(s) in flight")  # the worker has begun its graceful stop
    os.kill(worker, signal.SIGTERM)
    assert proc.wait(scaled(5)) == 0
    assert time.monotonic() - t0 < LONG_VIEW * 0.6  # did not wait for the view
    th.join(scaled(10))
    assert result.get("status") != 200, result  # cut off: dropped, or a 500 from the kill
    log = node.log()
    assert "second SIGTERM" in log and "cut off" in log, log
