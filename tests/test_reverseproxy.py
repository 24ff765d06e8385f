"""The ``reverseproxy`` path service through a real node, against an upstream in this process."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
import time

import pytest
import requests
from support import free_port, scaled, web_node
from support.http import http_server

# Set by tests, waited on by the upstream: proves bytes move before the whole body exists.
STREAM_GO = threading.Event()
# Set by the timeout test once the proxy gave up: until then the upstream says nothing.
SILENT_GO = threading.Event()
BODY_HALF = threading.Event()
DROPPED: list[str] = []
BIG = hashlib.sha256(b"seed").digest() * (4 * 1024 * 1024 // 32)


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_GET(self):
        if getattr(self, "drop_next", False):
            # Armed by /base/arm: this connection dies without answering, like an upstream
            # whose keep-alive timer ran out just as the proxy reused the connection.
            DROPPED.append(self.path)
            self.close_connection = True
            return
        if self.path.startswith("/base/ka") or self.path.startswith("/base/arm"):
            self.drop_next = self.path.startswith("/base/arm")
            return self._send(200, str(self.client_address[1]).encode())
        if self.path.startswith("/base/stream"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"6\r\nfirst\n\r\n")
            self.wfile.flush()
            STREAM_GO.wait(scaled(10))
            self.wfile.write(b"7\r\nsecond\n\r\n0\r\n\r\n")
            return
        if self.path.startswith("/base/status/418"):
            return self._send(418, b"short and stout", {"X-Custom": "kept"})
        if self.path.startswith("/base/badlen"):
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.send_header("Content-Length", "7")
            self.end_headers()
            self.wfile.write(b"1234567")
            return
        if self.path.startswith("/base/truncated"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"only-this")
            self.close_connection = True
            return
        if self.path.startswith("/base/big"):
            return self._send(200, BIG)
        if self.path.startswith("/base/silent"):
            SILENT_GO.wait(scaled(10))  # silent past the proxy's timeout
            return self._send(200, b"too late")
        if self.path.startswith("/base/eof"):
            # No framing at all: the body ends when the upstream closes.
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until-close " * 1000)
            self.close_connection = True
            return
        body = json.dumps({"method": self.command, "path": self.path,
                           "headers": dict(self.headers.items())}).encode()
        self._send(200, body, {"X-Up": "1", "Connection": "close, X-Hop", "X-Hop": "secret",
                               "Keep-Alive": "timeout=5"})

    do_HEAD = do_GET
    do_DELETE = do_GET

    def do_POST(self):
        if self.path.startswith("/base/halves"):
            n = int(self.headers["Content-Length"])
            # The proxy forwards the request body in 64 KiB pieces (wsgi.input reads are exact).
            first = self.rfile.read(65536)
            BODY_HALF.set()
            rest = self.rfile.read(n - len(first))
            return self._send(200, json.dumps({"len": len(first + rest)}).encode())
        data = self._read_body()
        self._send(201, json.dumps({
            "len": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "te": self.headers.get("Transfer-Encoding"),
            "type": self.headers.get("Content-Type")}).encode())


@pytest.fixture(scope="module")
def upstream():
    with http_server(Upstream) as port:
        yield port


@pytest.fixture(scope="module")
def node(start_module_node, upstream):
    up = {"type": "reverseproxy", "host": "127.0.0.1", "port": upstream}
    paths = {
        "/": {"type": "json", "value": "alive"},
        "up": {**up, "path": "/base"},
        "fw": {**up, "path": "/base/", "forwarded_port": 443, "forwarded_proto": "https"},
        "slow": {**up, "path": "/base", "timeout": 0.5},
        "down": {"type": "reverseproxy", "host": "127.0.0.1", "port": free_port()},
    }
    return start_module_node(web_node(paths))


def test_path_query_and_forwarded_headers(node, upstream):
    r = requests.get(node.url + "/up/a%20b/c?x=1&y=%2F&z", headers={
        "X-Forwarded-For": "10.1.1.1", "X-Forwarded-Host": "spoofed", "X-Real-IP": "6.6.6.6",
        "Accept": "text/plain", "X-Custom-In": "yes"})
    assert r.status_code == 200
    seen = r.json()
    assert seen["path"] == "/base/a%20b/c?x=1&y=%2F&z"
    h = {k.lower(): v for k, v in seen["headers"].items()}
    assert h["host"] == f"127.0.0.1:{upstream}"
    assert h["x-forwarded-host"] == f"127.0.0.1:{node.port}"
    assert h["x-forwarded-for"] == "10.1.1.1, 127.0.0.1"
    assert h["x-forwarded-port"] == str(node.port)
    assert h["x-forwarded-proto"] == "http"
    assert h["x-real-ip"] == "127.0.0.1"
    assert h["accept"] == "text/plain" and h["x-custom-in"] == "yes"


def test_forwarded_overrides_and_bare_mount(node):
    seen = requests.get(node.url + "/fw").json()
    assert seen["path"] == "/base"
    h = {k.lower(): v for k, v in seen["headers"].items()}
    assert h["x-forwarded-port"] == "443" and h["x-forwarded-proto"] == "https"
    assert requests.get(node.url + "/fw/x/").json()["path"] == "/base/x/"


def test_hop_by_hop_headers_stripped_both_ways(node):
    r = requests.get(node.url + "/up/hop", headers={
        "Connection": "keep-alive, X-Private", "X-Private": "no", "TE": "trailers",
        "Proxy-Authorization": "Basic abc", "Upgrade": "h2c"})
    h = {k.lower(): v for k, v in r.json()["headers"].items()}
    for name in ("x-private", "te", "proxy-authorization", "upgrade"):
        assert name not in h, name
    assert "connection" not in h  # HTTP/1.1 keep-alive towards the upstream
    assert r.headers["X-Up"] == "1"
    assert "X-Hop" not in r.headers and "Keep-Alive" not in r.headers


def test_status_and_headers_pass_through(node):
    r = requests.get(node.url + "/up/status/418")
    assert r.status_code == 418 and r.text == "short and stout"
    assert r.headers["X-Custom"] == "kept"
    r = requests.delete(node.url + "/up/thing")
    assert r.json()["method"] == "DELETE"


def test_head(node):
    r = requests.head(node.url + "/up/h")
    assert r.status_code == 200 and r.content == b""
    assert int(r.headers["Content-Length"]) > 0


def test_request_body_with_length(node):
    body = bytes(range(256)) * 12_000  # ~3 MB
    r = requests.post(node.url + "/up/upload", data=body,
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201
    got = r.json()
    assert got["len"] == len(body) and got["sha256"] == hashlib.sha256(body).hexdigest()
    assert got["type"] == "application/octet-stream"


def test_request_body_chunked(node):
    parts = [b"alpha-" * 1000, b"beta", b"gamma" * 5000]
    r = requests.post(node.url + "/up/upload", data=iter(parts))
    got = r.json()
    data = b"".join(parts)
    assert got["te"] == "chunked"
    assert got["len"] == len(data) and got["sha256"] == hashlib.sha256(data).hexdigest()


def test_request_body_streams_before_complete(node):
    BODY_HALF.clear()
    body = b"x" * 200_000
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(10)) as s:
        s.sendall(b"POST /up/halves HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body[:100_000])
        # The upstream sees the first 64 KiB while the client still holds the rest.
        assert BODY_HALF.wait(scaled(5)), "first half never reached the upstream"
        s.sendall(body[100_000:])
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert json.loads(data.partition(b"\r\n\r\n")[2].decode()) == {"len": len(body)}


def test_response_streams(node):
    STREAM_GO.clear()
    with requests.get(node.url + "/up/stream", stream=True, timeout=scaled(10)) as r:
        it = r.iter_content(None)
        # "first" arrives while the upstream is still blocked before "second".
        assert next(it) == b"first\n"
        STREAM_GO.set()
        assert b"".join(it) == b"second\n"


def test_close_delimited_response(node):
    r = requests.get(node.url + "/up/eof")
    assert r.status_code == 200 and r.content == b"until-close " * 1000


def test_upstream_down_is_502(node):
    r = requests.get(node.url + "/down/anything?q=1")
    assert r.status_code == 502 and "bad gateway" in r.text
    assert len(r.content) < 200


def test_upstream_timeout_is_504(node):
    t0 = time.monotonic()
    try:
        r = requests.get(node.url + "/slow/silent", timeout=scaled(10))
        assert r.status_code == 504 and "timeout" in r.text
        assert time.monotonic() - t0 < scaled(2.5)  # the proxy's 0.5 s, not the upstream
    finally:
        SILENT_GO.set()
    # The node still serves everyone else.
    assert requests.get(node.url + "/").json() == "alive"
    assert requests.get(node.url + "/slow/fast").status_code == 200


def test_concurrent_requests(node):
    # Streams held open do not stall other proxied requests (all on the hub, cooperatively).
    STREAM_GO.clear()
    with requests.get(node.url + "/up/stream", stream=True, timeout=scaled(10)) as held:
        it = held.iter_content(None)
        assert next(it) == b"first\n"
        for i in range(5):
            r = requests.get(node.url + f"/up/n{i}", timeout=scaled(5))
            assert r.json()["path"] == f"/base/n{i}"
        STREAM_GO.set()
        assert b"".join(it) == b"second\n"


def test_big_response_intact(node):
    with requests.get(node.url + "/up/big", stream=True) as r:
        assert int(r.headers["Content-Length"]) == len(BIG)
        h = hashlib.sha256()
        for chunk in r.iter_content(65536):
            h.update(chunk)
    assert h.hexdigest() == hashlib.sha256(BIG).hexdigest()


def test_ambiguous_upstream_length_is_502(node):
    r = requests.get(node.url + "/up/badlen")
    assert r.status_code == 502 and "Content-Length" in r.text


def test_upstream_connections_reused(node):
    first = requests.get(node.url + "/up/ka").text
    assert requests.get(node.url + "/up/ka").text == first
    assert requests.get(node.url + "/up/ka").text == first


def test_dead_pooled_connection_is_retried(node):
    DROPPED.clear()
    armed = requests.get(node.url + "/up/arm").text
    r = requests.get(node.url + "/up/ka?after-arm")
    assert r.status_code == 200 and r.text != armed
    assert DROPPED == ["/base/ka?after-arm"]


def test_expect_100_continue(node):
    body = b"payload" * 1000
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(10)) as s:
        s.sendall(b"POST /up/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        interim = s.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100")
        s.sendall(body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 201")
    got = json.loads(data.partition(b"\r\n\r\n")[2])
    assert got["len"] == len(body)


def test_truncated_upstream_body_breaks_the_connection(node):
    # Headers are already out when the upstream dies: the client must see a short body on a
    # closed connection, never a "complete" response or a hang.
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(10)) as s:
        s.sendall(b"GET /up/truncated HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 100000" in head
    assert body == b"only-this"
    assert requests.get(node.url + "/").json() == "alive"
