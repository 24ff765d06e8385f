"""Hostile HTTP clients (issue 9, rows 6 and 7) against a real node over raw sockets.

Row 6: a request head trickled in (slowloris), connections that never send a request, a body
far larger than anything the path takes (by Content-Length and chunked), more connections
than an endpoint should hold. Row 7: reverse-proxy paths that try to climb out of the
upstream ``path`` (raw and percent-encoded dot-segments, backslashes, ``..;``, double
encoding, NUL, ``//``), checked against a real upstream that records what reached it.
And the other side: honest clients that are slow (a long request, a streaming response, an
idle WebSocket, keep-alive) are never cut by the new limits.

Limits and their defaults: geonode/web/limits.py, docs/web.md "Limits", docs/security.md.
The timeouts here are LIMIT (1 s, scaled: configured), so the module runs in seconds.
"""

from __future__ import annotations

import http.server
import json
import re
import select
import socket
import threading
import time

import pytest
import requests
from support import free_port, launch_gunicorn, scaled, wait_for, web_node
from support.http import connect, exchange, http_server, read_until_close, split_response

pytestmark = pytest.mark.hostile

APP = r'''
import json, threading, time

BODIES = {"n": 0}
_lock = threading.Lock()

def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    with _lock:
        BODIES["n"] += 1  # bodies an app got to read
    out = json.dumps({"len": len(body)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(out)))])
    return [out]

def bodies(environ, start_response):
    out = str(BODIES["n"]).encode()
    start_response("200 OK", [("Content-Length", str(len(out)))])
    return [out]

def slow(environ, start_response):
    time.sleep(float(environ["QUERY_STRING"]))  # the scenario: an app that takes its time
    start_response("200 OK", [("Content-Length", "4")])
    return [b"done"]

BIG = b"0123456789abcdef" * (14 * 1024 * 1024 // 16)

def big(environ, start_response):
    start_response("200 OK", [("Content-Length", str(len(BIG)))])
    return [BIG]  # one chunk: one write of 14 MiB

def stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    pause = float(environ["QUERY_STRING"])
    def gen():
        yield b"part0;"
        for i in (1, 2):
            time.sleep(pause)  # the scenario: pauses between chunks longer than the timeouts
            yield b"part%d;" % i
    return gen()
'''

REALMS = [{"name": "realm1", "roles": [{"name": "anonymous", "permissions": [
    {"uri": "", "match": "prefix",
     "allow": {"call": True, "register": True, "publish": True, "subscribe": True}}]}]}]

#: the module node's request_head_timeout, keepalive_timeout and client_timeout
LIMIT = scaled(1.0)
TRANSPORT_LIMIT = 4096    # the transport's max_body_size in the module node
SMALL = 1000              # a path's own, smaller max_body_size
HUGE = 2 * 1024 ** 3      # what an attacker announces
BIG_SIZE = 14 * 1024 * 1024


def wsgi(obj: str, **kw) -> dict:
    return {"type": "wsgi", "module": "hostileapp", "object": obj, **kw}


# ---- an upstream that records exactly what reached it -----------------------------------

class Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, bool]] = []   # (request line as received, body complete)
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def _body_complete(self) -> bool:
        try:
            if "chunked" in self.headers.get("Transfer-Encoding", ""):
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        return self.rfile.readline() == b"\r\n"
                    if len(self.rfile.read(size + 2)) != size + 2:
                        return False
            n = int(self.headers.get("Content-Length", 0))
            return len(self.rfile.read(n)) == n
        except (OSError, ValueError):
            return False

    def _answer(self) -> None:
        # requestline is the raw line: BaseHTTPRequestHandler rewrites a "//x" path itself.
        line = self.raw_requestline.decode("latin-1").rstrip("\r\n")
        complete = self._body_complete()
        with self.lock:
            self.seen.append((line, complete))
        if not complete:
            self.close_connection = True
            return
        body = line.encode("latin-1")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer


@pytest.fixture(scope="module")
def upstream():
    with http_server(Recorder) as port:
        yield port


@pytest.fixture(scope="module")
def node(start_module_node, upstream):
    proxy = {"type": "reverseproxy", "host": "127.0.0.1", "port": upstream}
    cfg = web_node({
        "/": {"type": "json", "value": "ok"},
        "echo": wsgi("echo"),                                     # the transport's limit
        "big": wsgi("echo", max_body_size=100_000),               # a larger one of its own
        "small": wsgi("echo", max_body_size=SMALL),
        "green": wsgi("echo", threads=False, max_body_size=SMALL),
        "bodies": wsgi("bodies"),
        "slow": wsgi("slow"),
        "stream": wsgi("stream"),
        "ws": {"type": "websocket-testee"},
        "pub": {"type": "publisher", "realm": "realm1", "role": "anonymous"},
        "proxy": {**proxy, "path": "/api", "max_body_size": SMALL},
        "rootproxy": proxy,
    }, realms=REALMS, worker_options={"pythonpath": ["."]}, options={
        # Small, so the module is fast; the defaults are 10 s and 15 s (test_defaults).
        "request_head_timeout": LIMIT, "keepalive_timeout": LIMIT,
        "max_body_size": TRANSPORT_LIMIT,
    })
    # A second transport with Crossbar's client_timeout only (it lowers the others to 1 s).
    cfg["workers"][0]["transports"].append({
        "type": "web", "endpoint": {"type": "tcp", "port": "$PORT2", "interface": "127.0.0.1"},
        "options": {"client_timeout": LIMIT},
        "paths": {"big": wsgi("big"), "proxy": {**proxy, "path": "/api"}}})
    return start_module_node(cfg, files={"hostileapp.py": APP}, nports=2)


# ---- helpers -------------------------------------------------------------------------------

read_all = read_until_close
head_of = split_response


def bodies_read(node) -> int:
    return int(requests.get(node.url + "/bodies", timeout=scaled(5)).text)


def recorded() -> list[tuple[str, bool]]:
    with Recorder.lock:
        return list(Recorder.seen)


# ---- defaults ------------------------------------------------------------------------------

@pytest.mark.inprocess
def test_defaults():
    """Without options a web transport bounds heads (10 s), idle waits (15 s), silent clients
    (60 s), bodies (64 MiB) and connections (a share of ulimit -n); each is configurable and
    null switches it off."""
    from geonode.web.limits import (
        DEFAULT_MAX_BODY_SIZE,
        Timeouts,
        default_max_connections,
        max_body_size,
        open_file_limit,
        timeouts,
    )

    assert timeouts({}) == Timeouts(client=60, request_head=10, keepalive=15)
    # Crossbar's client_timeout lowers the others to itself (its meaning stays: 5 s at most)...
    assert timeouts({"client_timeout": 5}) == Timeouts(client=5, request_head=5, keepalive=5)
    assert timeouts({"client_timeout": 300}) == Timeouts(client=300, request_head=10,
                                                         keepalive=15)
    # ...and null turns off only the silence bound, as in Crossbar.
    assert timeouts({"client_timeout": None}) == Timeouts(client=None, request_head=10,
                                                          keepalive=15)
    assert timeouts({"request_head_timeout": None, "keepalive_timeout": 2.5}) == Timeouts(
        client=60, request_head=None, keepalive=2.5)

    class Ctx:
        transport_options = {"max_body_size": 10}

    assert max_body_size({}, None) == DEFAULT_MAX_BODY_SIZE == 64 * 1024 * 1024
    assert max_body_size({}, Ctx) == 10
    assert max_body_size({"max_body_size": None}, Ctx) is None
    assert default_max_connections() == int(open_file_limit() * 0.8)
    assert default_max_connections(2) == int(open_file_limit() * 0.8) // 2


@pytest.mark.inprocess
def test_defaults_reach_the_servers(tmp_path):
    """A node config without options gets the default limits on its endpoints."""
    from geonode.config import load
    from geonode.node import Node
    from geonode.web.limits import default_max_connections

    # No realms: no router (a router would stay registered with geonode.wamp, process-wide).
    cfg = web_node({"/": {"type": "json", "value": 1}})
    cfg["workers"][0]["transports"].append({
        "type": "rawsocket", "endpoint": {"type": "tcp", "port": free_port(),
                                          "interface": "127.0.0.1"}})
    path = tmp_path / "node.json"
    path.write_text(json.dumps(cfg).replace('"$PORT"', str(free_port())))
    node = Node(load(path))
    node.build()
    node.bind()
    try:
        server = node.web[0].server
        assert (server.client_timeout, server.request_head_timeout,
                server.keepalive_timeout) == (60, 10, 15)
        share = default_max_connections(2)
        assert server.max_connections == server.pool.size == share
        assert node.rawsocket_servers[0][1].pool.size == share
    finally:
        node.close_listeners()


@pytest.mark.inprocess
def test_starter_config_writes_the_limits_out(tmp_path):
    from geonode.config import load
    from geonode.init_template import write_starter

    write_starter(tmp_path)
    cfg = load(tmp_path / "node.json")
    transport = cfg.data["workers"][0]["transports"][0]
    assert {"client_timeout", "request_head_timeout", "keepalive_timeout", "max_body_size",
            "max_connections"} <= set(transport["options"])


@pytest.mark.inprocess
def test_config_checks_the_new_keys(tmp_path):
    from geonode.config import check

    good = web_node({"app": {"type": "wsgi", "module": "m", "object": "a",
                             "max_body_size": None},
                     "up": {"type": "reverseproxy", "host": "h", "max_body_size": 0}},
                    options={"max_connections": 10, "keepalive_timeout": 0.5,
                             "request_head_timeout": None, "max_body_size": 1},
                    worker_options={"pythonpath": ["."]})  # check imports m as start would
    good["workers"][0]["transports"].append({
        "type": "rawsocket", "endpoint": {"type": "tcp", "port": 1},
        "options": {"max_connections": 5}})
    path = tmp_path / "good.json"
    path.write_text(json.dumps(good).replace('"$PORT"', "8080"))
    (tmp_path / "m.py").write_text("def a(e, s): pass\n")
    assert check(path) == []

    bad = web_node({"/": {"type": "json", "value": 1},
                    "app": {"type": "wsgi", "module": "m", "object": "a", "max_body_size": -1}},
                   options={"max_connections": 0, "keepalive_timeout": "5",
                            "request_head_timeout": 0})
    bad["workers"][0]["transports"].append({
        "type": "rawsocket", "endpoint": {"type": "tcp", "port": 1},
        "options": {"max_connections": 0}})
    path = tmp_path / "node.json"
    path.write_text(json.dumps(bad).replace('"$PORT"', "8080"))
    errors = "\n".join(check(path))
    t0 = "workers[0].transports[0]"
    assert f"{t0}.options.max_connections" in errors
    assert f"{t0}.options.keepalive_timeout" in errors
    assert f"{t0}.options.request_head_timeout" in errors
    assert f"{t0}.paths.app.max_body_size" in errors
    assert "workers[0].transports[1].options.max_connections" in errors


# ---- request head and idle timeouts --------------------------------------------------------

def test_slowloris_heads_get_408_while_others_are_served(node):
    """Many connections each trickle a head line by line, every line well inside any idle
    timeout: each gets 408 once the head is request_head_timeout late, and the node serves
    others meanwhile (without client_timeout in the config)."""
    socks = [connect(node.port) for _ in range(30)]
    try:
        for s in socks:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        answers: dict[socket.socket, bytes] = {}
        line = 0
        while len(answers) < len(socks):
            assert time.monotonic() - t0 < LIMIT + scaled(7), \
                f"{len(socks) - len(answers)} heads still open"
            readable, _, _ = select.select([s for s in socks if s not in answers], [], [], 0.2)
            for s in readable:
                answers[s] = read_all(s)
            # Lines keep coming up to and past the 408: the node's lingering close reads them,
            # so no TCP reset discards the 408 unread (RFC 9112 9.6).
            for s in socks:
                if s not in answers:
                    try:
                        s.sendall(b"X-Line-%d: 1\r\n" % line)
                    except OSError:
                        pass  # answered and closed: read on the next round
            line += 1
            if line == 2:
                t = time.monotonic()
                assert requests.get(node.url + "/", timeout=scaled(5)).json() == "ok"
                assert time.monotonic() - t < LIMIT  # not held until the slow heads are done
        for out in answers.values():
            status, headers, body = head_of(out)
            assert status == 408 and headers["connection"] == "close", out
            assert b"request_head_timeout" in body
    finally:
        for s in socks:
            s.close()


def test_connection_without_a_request_is_closed(node):
    with connect(node.port) as s:
        t0 = time.monotonic()
        assert s.recv(1024) == b""  # closed quietly: no 408 for a client that sent nothing
        assert LIMIT / 2 < time.monotonic() - t0 < LIMIT + scaled(4)


def test_idle_keepalive_connection_is_closed(node):
    with connect(node.port) as s:
        for _ in range(2):  # a second request inside the idle timeout is served
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            out = b""
            while not out.endswith(b'"ok"'):
                out += s.recv(65536)
            assert head_of(out)[0] == 200
        t0 = time.monotonic()
        assert s.recv(1024) == b""
        assert LIMIT / 2 < time.monotonic() - t0 < LIMIT + scaled(4)


def test_busy_keepalive_connection_is_bounded_per_wait(node):
    """keepalive_timeout bounds each wait for a request, not the connection's life: requests
    spaced under the bound for three times its length are all served, and the wait after
    the last one is closed after the bound, counted from that wait's start (the node's
    per-connection clock re-arms from where each wait began)."""
    def get(s) -> int:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        out = b""
        while not out.endswith(b'"ok"'):
            chunk = s.recv(65536)
            assert chunk, "connection closed between requests spaced under keepalive_timeout"
            out += chunk
        return head_of(out)[0]

    with connect(node.port) as s:
        t_end = time.monotonic() + 3 * LIMIT
        while time.monotonic() < t_end:
            assert get(s) == 200
            time.sleep(0.4 * LIMIT)  # the scenario: a client pausing under the bound
        assert get(s) == 200
        t0 = time.monotonic()
        assert s.recv(1024) == b""
        assert LIMIT / 2 < time.monotonic() - t0 < LIMIT + scaled(4)


def test_honest_slow_clients_are_not_cut(node):
    """The limits bound waits on the client, never the app's time or a WebSocket's silence.
    (The pauses here are the clients' behaviour under test, 2.5 times the timeouts: sleeps
    that are the scenario, not synchronisation.)"""
    from concurrent.futures import ThreadPoolExecutor

    import websocket

    def long_request() -> str:
        # A request the app takes longer than both timeouts to answer.
        return requests.get(f"{node.url}/slow?{2.5 * LIMIT}", timeout=scaled(10)).text

    def streaming() -> str:
        # A response that pauses longer than the idle timeout between chunks.
        return requests.get(f"{node.url}/stream?{1.3 * LIMIT}", timeout=scaled(10)).text

    def idle_websocket() -> str:
        ws = websocket.create_connection(f"{node.ws_url}/ws", timeout=scaled(10))
        try:
            time.sleep(2.5 * LIMIT)  # the scenario: a WebSocket silent past every timeout
            ws.send("still here")
            return ws.recv()
        finally:
            ws.close()

    def head_in_two_pieces() -> int:
        with connect(node.port) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            time.sleep(0.3 * LIMIT)  # the scenario: a head in two pieces, inside the timeout
            s.sendall(b"Connection: close\r\n\r\n")
            return head_of(read_all(s))[0]

    with ThreadPoolExecutor(4) as pool:
        jobs = [pool.submit(f) for f in (long_request, streaming, idle_websocket,
                                         head_in_two_pieces)]
        assert [j.result(timeout=scaled(15)) for j in jobs] == [
            "done", "part0;part1;part2;", "still here", 200]


def test_slow_reader_of_a_big_response_gets_all_of_it(node):
    """client_timeout bounds each wait for the client to take more, not the whole download:
    a reader taking 128 KiB every 20 ms gets every byte of a 14 MiB body written at once
    (gevent's sendall would have cut it after 1 s, the kernel buffering 4 MiB of it at most),
    one that stops reading is dropped after client_timeout, with one line."""
    def slow_reader() -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 128 * 1024)
        s.settimeout(scaled(10))
        s.connect(("127.0.0.1", node.ports[1]))
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return s

    with slow_reader() as s:
        t0 = time.monotonic()
        out = bytearray()
        while chunk := s.recv(128 * 1024):
            out += chunk
            time.sleep(0.02)  # the slow reader under test: 6.4 MB/s at most
        elapsed = time.monotonic() - t0
    status, headers, body = head_of(bytes(out))
    assert status == 200 and len(body) == BIG_SIZE, (len(body), elapsed)
    assert elapsed > 2.0  # 14 MiB at 6.4 MB/s at most
    with slow_reader() as s:
        s.recv(1024)  # then nothing: the node gives up after client_timeout
        node.wait_log(f"the client took nothing for {LIMIT} s")  # the stalled reader dropped
        got = 0
        while chunk := s.recv(1024 * 1024):
            got += len(chunk)
        assert got < BIG_SIZE


# ---- max_body_size -------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/echo", "/small", "/green", "/proxy", "/pub"])
@pytest.mark.parametrize("expect", [False, True])
def test_content_length_over_max_body_size_is_413_before_the_body(node, path, expect):
    """The client sends only the head: the 413 comes without a byte of the 2 GiB body, with
    no 100 Continue first, and the connection closes (the body is never read)."""
    before, upstream_before = bodies_read(node), len(recorded())
    extra = b"Expect: 100-continue\r\n" if expect else b""
    out = exchange(node.port, b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                   b"Content-Type: application/json\r\nContent-Length: %d\r\n" % HUGE
                   + extra + b"\r\n")
    status, headers, body = head_of(out)
    assert status == 413, out
    assert headers["connection"] == "close"
    assert b"100 Continue" not in out
    assert bodies_read(node) == before and len(recorded()) == upstream_before


@pytest.mark.parametrize("path,limit", [("/echo", TRANSPORT_LIMIT), ("/small", SMALL),
                                        ("/green", SMALL), ("/proxy", SMALL)])
def test_chunked_body_is_413_as_soon_as_it_passes_max_body_size(node, path, limit):
    """Chunks adding up to a little over the limit, and no last chunk: the 413 must come
    anyway (the node stops reading at the limit, it does not wait for the body's end)."""
    before = bodies_read(node)
    with connect(node.port) as s:
        s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        piece = b"x" * 256
        for _ in range(limit // len(piece) + 2):
            s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        out = read_all(s)
    status, headers, body = head_of(out)
    assert status == 413, out
    assert headers["connection"] == "close" and b"max_body_size" in body
    assert bodies_read(node) == before
    if path == "/proxy":
        # Whatever part reached the upstream, it never saw the request complete.
        assert not any(done for line, done in recorded() if line.startswith("POST "))


def test_bodies_within_the_limits_pass(node):
    assert requests.post(node.url + "/echo", data=b"a" * TRANSPORT_LIMIT,
                         timeout=scaled(5)).json() == {"len": TRANSPORT_LIMIT}
    assert requests.post(node.url + "/echo", data=b"a" * (TRANSPORT_LIMIT + 1),
                         timeout=scaled(5)).status_code == 413
    # A path's own max_body_size may be larger than its transport's.
    assert requests.post(node.url + "/big", data=iter([b"b" * 50_000]),
                         timeout=scaled(5)).json() == {"len": 50_000}
    assert requests.post(node.url + "/green", data=iter([b"g" * SMALL]),
                         timeout=scaled(5)).json() == {"len": SMALL}
    r = requests.post(node.url + "/proxy/in", data=iter([b"p" * SMALL]), timeout=scaled(5))
    assert r.status_code == 200 and r.text == "POST /api/in HTTP/1.1"


# ---- reverse proxy: never outside the upstream path -------------------------------------

CLIMBS = [
    "/proxy/../../admin", "/proxy/..%2f..%2fadmin", "/proxy/%2e%2e/%2e%2e/admin",
    "/proxy/%2E%2E%2F%2E%2E%2Fadmin", "/proxy/a/%2E%2e/%2e./../admin",
    "/proxy/..%5c..%5cadmin", "/proxy/..\\..\\admin", "/proxy/..;/..;/admin",
    "/proxy/%252e%252e/%252e%252e/admin", "/proxy/%252E%252E%252Fadmin",
    "/proxy/..%00/admin", "/proxy/x%00", "/proxy/.../admin", "/proxy/..%20/admin",
    "/rootproxy/../admin", "/rootproxy/%2e%2e/admin",
]


@pytest.mark.parametrize("target", CLIMBS)
def test_reverseproxy_refuses_paths_leaving_its_upstream_path(node, target):
    before = len(recorded())
    out = exchange(node.port, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode("latin-1"))
    status, headers, _ = head_of(out)
    assert status == 400 and headers["connection"] == "close", out
    assert len(recorded()) == before, recorded()[before:]


@pytest.mark.parametrize("target,forwarded", [
    ("/proxy/a/../b", "/api/b"),
    ("/proxy/a/./b/", "/api/a/b/"),
    ("/proxy/a/b/%2e%2e/c", "/api/a/c"),
    ("/proxy/a/..", "/api/"),
    ("/proxy//admin", "/api/admin"),
    ("/proxy/a%2fb?q=..%2f..", "/api/a/b?q=..%2f.."),
    ("/proxy/file.tar.gz", "/api/file.tar.gz"),
    ("/rootproxy//evil.example/x", "/evil.example/x"),
    ("/rootproxy", "/"),
])
def test_reverseproxy_resolves_dot_segments_inside_its_upstream_path(node, target, forwarded):
    out = exchange(node.port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                   .encode())
    status, _, body = head_of(out)
    assert status == 200, out
    assert body.decode() == f"GET {forwarded} HTTP/1.1"


def test_upstream_never_saw_a_path_outside_api(node):
    """Over everything this module sent to /proxy: every request line the upstream got is
    inside /api and free of anything that decodes to a dot-segment."""
    lines = [line for line, _ in recorded()]
    assert lines, "the proxy tests ran first"
    for line in lines:
        path = line.split()[1].split("?")[0]
        if not path.startswith("/api"):
            continue  # rootproxy's
        assert path == "/api" or path.startswith("/api/"), line
        assert not re.search(r"(?i)(^|/)(\.|%2e){1,2}(/|%2f|\\|%5c|;|$)", path), line


# ---- the bridge obeys the transport's max_body_size too ----------------------------------

def test_reverseproxy_stalled_body_is_the_clients_408(node):
    """A body that stops coming is the client's fault: 408 after client_timeout (it was a
    504 "upstream stalled reading the request", blaming the upstream)."""
    with connect(node.ports[1]) as s:
        s.sendall(b"POST /proxy/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                  + b"x" * 10)
        t0 = time.monotonic()
        status, headers, body = head_of(read_all(s))
    assert status == 408 and headers["connection"] == "close", body
    assert time.monotonic() - t0 < LIMIT + scaled(4)
    assert not any(done for line, done in recorded() if "/upload" in line)


def test_bridge_body_over_transport_limit(node):
    out = exchange(node.port, b"POST /pub HTTP/1.1\r\nHost: x\r\nContent-Type: "
                   b"application/json\r\nContent-Length: %d\r\n\r\n" % (TRANSPORT_LIMIT + 1))
    status, headers, _ = head_of(out)
    assert status == 413 and headers["connection"] == "close"
    ok = requests.post(node.url + "/pub", json={"topic": "com.example.t", "args": [1]},
                       timeout=scaled(5))
    assert ok.status_code == 200


# ---- max_connections -----------------------------------------------------------------------

def rawsocket_hello(port: int) -> socket.socket:
    s = connect(port)
    s.sendall(bytes((0x7F, 0xF1, 0, 0)))  # json, longest message 2**24
    return s


def answered(socks: list[socket.socket], within: float) -> list[socket.socket]:
    return select.select(socks, [], [], within)[0]


def test_max_connections_makes_excess_connections_wait_with_one_log_line(start_node):
    cfg = web_node({"/": {"type": "json", "value": "capped"}}, realms=REALMS,
                   options={"max_connections": 3, "keepalive_timeout": 60})
    transports = cfg["workers"][0]["transports"]
    transports.append({"type": "web", "endpoint": {"type": "tcp", "port": "$PORT2",
                                                    "interface": "127.0.0.1"},
                       "paths": {"/": {"type": "json", "value": "free"}}})
    transports.append({"type": "rawsocket", "endpoint": {"type": "tcp", "port": "$PORT3",
                                                          "interface": "127.0.0.1"},
                       "options": {"max_connections": 2}})
    node = start_node(cfg, nports=3)
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    held = [connect(node.port) for _ in range(3)]
    excess: list[socket.socket] = []
    try:
        for s in held:
            s.sendall(request)
            assert head_of(s.recv(65536))[0] == 200
        excess = [connect(node.port) for _ in range(20)]  # the kernel's backlog takes them
        for s in excess:
            s.sendall(request)
        log_line = re.compile(r"workers\[0\]\.transports\[0\]: 3 connections open "
                              r"\(max_connections\)")
        node.wait_log(log_line)
        assert answered(excess, 0.5) == []  # waiting, not answered (none in half a second)
        # The endpoint's own connections go on, other endpoints accept as usual.
        held[0].sendall(request)
        assert head_of(held[0].recv(65536))[0] == 200
        other = requests.get(f"http://127.0.0.1:{node.ports[1]}/", timeout=scaled(5))
        assert other.json() == "free"
        # A connection closes: one waiting client gets in, and is served.
        held.pop().close()
        ready = wait_for(lambda: answered(excess, 0.1), 10, "a waiting client served")
        assert head_of(ready[0].recv(65536))[0] == 200
        # RawSocket: the same cap, the same single line.
        raw = [rawsocket_hello(node.ports[2]) for _ in range(3)]
        excess += raw
        wait_for(lambda: len(answered(raw, 0.1)) == 2, 10, "two rawsocket handshakes")
        waiting = [s for s in raw if s not in answered(raw, 0)]
        assert len(waiting) == 1 and answered(waiting, 0.5) == []
        raw[0 if raw[0] not in waiting else 1].close()
        wait_for(lambda: answered(waiting, 0.1), 10, "the third rawsocket handshake")
        assert waiting[0].recv(4)[0] == 0x7F
        assert len(re.findall(r"connections open \(max_connections\)", node.log())) == 2, \
            node.log()
    finally:
        for s in held + excess:
            s.close()


# ---- the same handler under gunicorn --------------------------------------------------------

def test_gunicorn_worker_closes_idle_connections_after_its_keep_alive(tmp_path):
    pytest.importorskip("gunicorn")
    keep_alive = max(1, round(LIMIT))  # gunicorn takes whole seconds

    (tmp_path / "hostileapp.py").write_text(APP)
    g = launch_gunicorn(tmp_path, "hostileapp:bodies", extra=("--keep-alive", str(keep_alive)))
    try:
        with connect(g.port) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert head_of(s.recv(65536))[0] == 200
            t0 = time.monotonic()
            assert s.recv(1024) == b""
            assert keep_alive / 2 < time.monotonic() - t0 < keep_alive + scaled(4)
    finally:
        g.stop()
