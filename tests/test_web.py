"""The web transport over real sockets: routing, HTTP/1.1 details, options, endpoints."""

from __future__ import annotations

import json
import re
import socket
import time

import pytest
import requests
from support import scaled, web_node
from support.http import read_response

#: client_timeout of the module node's second transport
LIMIT = scaled(1.0)

APP = r'''
import json
import time

def echo(environ, start_response):
    body = json.dumps({"script": environ["SCRIPT_NAME"], "path": environ["PATH_INFO"],
                       "query": environ["QUERY_STRING"], "tag": environ.get("TAG", "")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]

def headers(environ, start_response):
    keys = ("HTTP_X_TEST", "HTTP_COOKIE", "CONTENT_TYPE", "HTTP_X_FOLDED", "HTTP_HOST")
    body = json.dumps({k: environ.get(k) for k in keys}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]

def tagged(tag):
    def app(environ, start_response):
        environ["TAG"] = tag
        return echo(environ, start_response)
    return app

root = tagged("root")
api = tagged("api")
inner = tagged("inner")
nested_root = tagged("nested-root")
second = tagged("second")

def chunked(environ, start_response):
    # No Content-Length and a generator still producing: chunked transfer encoding.
    # (A generator that is already finished when the hub looks gets a Content-Length.)
    start_response("200 OK", [("Content-Type", "text/plain")])
    def gen():
        for i in range(5):
            yield b"part%d;" % i
            time.sleep(0.01)  # the scenario: a generator still producing
    return gen()
'''


def wsgi(obj: str) -> dict:
    return {"type": "wsgi", "module": "webapp", "object": obj}


@pytest.fixture(scope="module")
def node(start_module_node):
    cfg = web_node(
        {
            "/": wsgi("root"),
            "api": wsgi("api"),
            "chunked": wsgi("chunked"),
            "hdrs": wsgi("headers"),
            "nested": {"type": "path", "paths": {"/": wsgi("nested_root"),
                                                 "inner": wsgi("inner")}},
        },
        options={"access_log": True, "hsts": True},
        worker_options={"pythonpath": ["."]},
    )
    worker = cfg["workers"][0]
    # A second TCP transport (with an idle timeout) and a unix socket transport, same process.
    worker["transports"].append({
        "type": "web",
        "endpoint": {"type": "tcp", "port": "$PORT2", "interface": "127.0.0.1"},
        "paths": {"/": wsgi("second")},
        "options": {"client_timeout": LIMIT},
    })
    worker["transports"].append({
        "type": "web",
        "endpoint": {"type": "unix", "path": "web.sock"},
        "paths": {"/": wsgi("second")},
    })
    return start_module_node(cfg, files={"webapp.py": APP}, nports=2)


def get(node, path: str, **kw) -> requests.Response:
    return requests.get(node.url + path, timeout=scaled(5), **kw)


def raw(port: int, data: bytes, *, read_until_close: bool = True, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(timeout)) as s:
        s.sendall(data)
        if not read_until_close:
            return s.recv(65536)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


# ---- routing -------------------------------------------------------------------------------

def test_root_gets_whole_path(node):
    r = get(node, "/some/deep/page?x=1")
    assert r.status_code == 200
    assert r.json() == {"script": "", "path": "/some/deep/page", "query": "x=1", "tag": "root"}


def test_root_exact(node):
    assert get(node, "/").json()["path"] == "/"


def test_explicit_path_beats_root(node):
    r = get(node, "/api/users/7")
    assert r.json() == {"script": "/api", "path": "/users/7", "query": "", "tag": "api"}
    # A sibling that merely starts like "api" is the root's.
    assert get(node, "/apix/1").json()["tag"] == "root"


def test_nested_path(node):
    assert get(node, "/nested/inner/a/b").json() == {
        "script": "/nested/inner", "path": "/a/b", "query": "", "tag": "inner"}
    assert get(node, "/nested/other").json() == {
        "script": "/nested", "path": "/other", "query": "", "tag": "nested-root"}


def test_404_names_the_path(start_node):
    n = start_node(web_node({"api": {"type": "wsgi", "module": "webapp", "object": "api"}},
                            worker_options={"pythonpath": ["."]}),
                   files={"webapp.py": APP})
    r = requests.get(n.url + "/nothing/here", timeout=scaled(5))
    assert r.status_code == 404
    assert "/nothing/here" in r.text
    assert len(r.content) < 1000
    assert requests.get(n.url + "/api/x", timeout=scaled(5)).json()["tag"] == "api"


# ---- HTTP/1.1 ------------------------------------------------------------------------------

def test_keep_alive_two_requests_one_connection(node):
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5)) as s:
        s.sendall(b"GET /api/one HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body, rest = read_response(s)
        assert status.startswith(b"HTTP/1.1 200")
        assert json.loads(body)["path"] == "/one"
        s.sendall(b"GET /api/two HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body, _ = read_response(s, rest)
        assert json.loads(body)["path"] == "/two"


def test_pipelined_requests(node):
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5)) as s:
        s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        _, _, body1, rest = read_response(s)
        _, _, body2, _ = read_response(s, rest)
    assert json.loads(body1)["path"] == "/a"
    assert json.loads(body2)["path"] == "/b"


def test_chunked_response(node):
    out = raw(node.port, b"GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body.endswith(b"0\r\n\r\n")
    # And a real client decodes it.
    assert get(node, "/chunked").text == "part0;part1;part2;part3;part4;"


def test_head_has_headers_but_no_body(node):
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5)) as s:
        s.sendall(b"HEAD /chunked HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:  # the HEAD's answer has begun: now the next request
            chunk = s.recv(65536)
            assert chunk
            buf += chunk
        s.sendall(b"GET /api/after HTTP/1.1\r\nHost: x\r\n\r\n")
        while buf.count(b"\r\n\r\n") < 2 or not buf.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            assert chunk
            buf += chunk
    head1, _, rest = buf.partition(b"\r\n\r\n")
    assert head1.startswith(b"HTTP/1.1 200")
    # The very next bytes are the second response: the HEAD sent no body, no final chunk.
    assert rest.startswith(b"HTTP/1.1 200"), rest[:40]
    assert b'"/after"' in rest


def test_head_content_length_kept(node):
    r = requests.head(node.url + "/api/x", timeout=scaled(5))
    assert r.status_code == 200
    assert int(r.headers["Content-Length"]) > 0
    assert r.content == b""


@pytest.mark.parametrize("line", [b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                                  b"GET / HTTP/1.1 extra\r\n\r\n",
                                  b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
                                  b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
                                  b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                                  b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
                                  b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
                                  b"GET / HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n",
                                  b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n"])
def test_bad_request_gets_400(node, line):
    out = raw(node.port, line)
    assert out.startswith(b"HTTP/1.1 400"), out[:80]
    assert get(node, "/api/ok").status_code == 200
    assert "Traceback" not in node.log()


def test_request_headers_reach_the_app(node):
    req = (b"POST /hdrs HTTP/1.1\r\nHost: example.org\r\nX-Test: one\r\n"
           b"Cookie: a=1\r\nCookie: b=2\r\nContent-Type: text/plain\r\n"
           b"X-Folded: first\r\n  second\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    out = raw(node.port, req)
    assert out.startswith(b"HTTP/1.1 200"), out[:100]
    got = json.loads(out.partition(b"\r\n\r\n")[2])
    assert got == {"HTTP_X_TEST": "one", "HTTP_COOKIE": "a=1; b=2", "CONTENT_TYPE": "text/plain",
                   "HTTP_X_FOLDED": "first second", "HTTP_HOST": "example.org"}


def test_tcp_nodelay_keepalive_latency(node):
    # Without TCP_NODELAY, keep-alive responses written in two sends stall ~40 ms each.
    times = []
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rest = b""
        for _ in range(20):
            t0 = time.perf_counter()
            s.sendall(b"GET /api/fast HTTP/1.1\r\nHost: x\r\n\r\n")
            _, _, _, rest = read_response(s, rest)
            times.append(time.perf_counter() - t0)
    per_request = sorted(times)[len(times) // 2]
    # Not scaled: the stall it catches is the kernel's fixed delayed-ACK timer, not the
    # machine's speed; the median of 20 keeps a busy machine's slow moments out.
    assert per_request < 0.03, f"{per_request * 1000:.1f} ms per keep-alive request (median)"


# ---- options ---------------------------------------------------------------------------------

def test_access_log_common_log_format(node):
    get(node, "/api/logged?q=1")
    pattern = re.compile(r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                         r'"GET /api/logged\?q=1 HTTP/1\.1" 200 \d+')
    node.wait_log(pattern, 3)
    lines = [ln for ln in node.log().splitlines() if "/api/logged" in ln]
    assert len(lines) == 1


def test_no_hsts_without_tls(node):
    assert "Strict-Transport-Security" not in get(node, "/").headers


# ---- endpoints -------------------------------------------------------------------------------

def test_second_tcp_transport(node):
    r = requests.get(f"http://127.0.0.1:{node.ports[1]}/x", timeout=scaled(5))
    assert r.json()["tag"] == "second"


def test_unix_socket_endpoint(node):
    path = node.dir / "web.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(scaled(5))
        s.connect(str(path))
        s.sendall(b"GET /via/unix HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body, _ = read_response(s)
    assert status.startswith(b"HTTP/1.1 200")
    assert json.loads(body) == {"script": "", "path": "/via/unix", "query": "", "tag": "second"}


def test_listening_lines_logged(node):
    log = node.log()
    assert f"listening on http://127.0.0.1:{node.port} (workers[0].transports[0])" in log
    assert f"listening on http://127.0.0.1:{node.ports[1]} (workers[0].transports[1])" in log
    assert "(workers[0].transports[2])" in log
    assert re.search(r"ready in \d+\.\d\d s", log)


def test_client_timeout_closes_idle_connection(node):
    with socket.create_connection(("127.0.0.1", node.ports[1]), timeout=scaled(5)) as s:
        s.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        read_response(s)
        t0 = time.monotonic()
        assert s.recv(1024) == b""  # the server closed the idle keep-alive connection
        waited = time.monotonic() - t0
    assert LIMIT / 2 < waited < LIMIT + scaled(2.5)
    # The transport without client_timeout keeps idle connections open (watched for longer
    # than the other one's timeout: the scenario).
    with socket.create_connection(("127.0.0.1", node.port), timeout=1.5 * LIMIT) as s:
        with pytest.raises(socket.timeout):
            s.recv(1024)


def test_ipv6_and_shared_endpoints(start_node):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            port6 = s.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback")
    cfg = web_node({"/": wsgi("root")}, worker_options={"pythonpath": ["."]})
    transports = cfg["workers"][0]["transports"]
    transports[0]["endpoint"].update(shared=True, backlog=10)
    transports.append({"type": "web", "paths": {"/": wsgi("second")},
                       "endpoint": {"type": "tcp", "version": 6, "interface": "::1",
                                    "port": port6}})
    n = start_node(cfg, files={"webapp.py": APP})
    r = requests.get(f"http://[::1]:{port6}/six", timeout=scaled(5))
    assert r.json()["tag"] == "second"
    assert f"listening on http://[::1]:{port6} (workers[0].transports[1])" in n.log()
    # "shared" sets SO_REUSEPORT: another process may bind the same port next to the node.
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", n.port))
    assert requests.get(n.url + "/", timeout=scaled(5)).json()["tag"] == "root"


def test_build_error_names_root_path_as_the_checker_does(start_node):
    # The config checker writes the root service as paths["/"]; so must the dispatcher.
    n = start_node(web_node({"x": {"type": "path", "paths": {
        "/": {"type": "wsgi", "module": "okmod", "object": "nothere"}}}},
        worker_options={"pythonpath": ["."]}), files={"okmod.py": "x = 1\n"}, wait=False)
    assert n.proc.wait(scaled(20)) == 1
    log = n.log()
    assert 'workers[0].transports[0].paths.x.paths["/"].object' in log, log
    assert "paths./" not in log


@pytest.mark.inprocess
def test_listeners_api(tmp_path):
    """The public endpoint listeners (shared by web and RawSocket transports)."""
    from geonode.config.model import Endpoint
    from geonode.endpoints import EndpointError, tcp_listener, unix_listener

    sock, where = tcp_listener(Endpoint("tcp", port=0, interface="127.0.0.1"), "ep")
    try:
        host, _, port = where.rpartition(":")
        assert host == "127.0.0.1" and int(port) > 0
        with pytest.raises(EndpointError, match=rf"^ep: cannot listen on 127.0.0.1 port {port}"):
            tcp_listener(Endpoint("tcp", port=int(port), interface="127.0.0.1"), "ep")
    finally:
        sock.close()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "s.sock"))
    stale.close()  # a socket file nobody answers on: replaced
    usock, path = unix_listener(Endpoint("unix", path="s.sock"), tmp_path, "ep")
    try:
        assert path == str(tmp_path / "s.sock")
        (tmp_path / "f").write_text("")
        with pytest.raises(EndpointError, match=r"^ep.path: .* exists and is not a socket"):
            unix_listener(Endpoint("unix", path="f"), tmp_path, "ep")
    finally:
        usock.close()
