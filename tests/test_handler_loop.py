"""The handler's lean request loop (``Handler._serve``, issue 15 fourth pass), in process.

In the style of gevent's ``test__pywsgi.py``: a real server on 127.0.0.1 in this process, raw
sockets as clients. Each behaviour is checked on the lean loop (requests counted through
``Handler._respond``, so a test fails if the loop stops serving them), and every odd or hostile
request is also sent to the same handler with the loop switched off (pywsgi's chain, what
geonode served before): both must answer byte for byte alike (Date aside).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from wsgiref.validate import validator

import gevent
import pytest
from gevent import socket
from support.timing import scaled

from geonode.config.model import Endpoint
from geonode.web.handler import Handler
from geonode.web.server import WebServer

pytestmark = pytest.mark.inprocess

_SEEN: list[dict] = []


def _app(environ: dict, start_response) -> list[bytes]:
    """Answers with what the environ says (the keys both paths must agree on)."""
    # (only a request with a body: an upgrade request's input is the raw connection)
    framed = environ.get("CONTENT_LENGTH") or environ.get("HTTP_TRANSFER_ENCODING")
    body = environ["wsgi.input"].read(1 << 20) if framed else b""
    keys = {k: v for k, v in environ.items()
            if k.startswith("HTTP_") or k in ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING",
                                              "SERVER_PROTOCOL", "CONTENT_LENGTH",
                                              "CONTENT_TYPE", "SCRIPT_NAME",
                                              "wsgi.input_terminated",
                                              "geonode.client_timeout")}
    keys["body"] = body.decode("latin-1")
    _SEEN.append(environ)
    out = json.dumps(keys, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(out)))])
    return [out]


class _Chain(Handler):
    """The same handler with the lean loop off: pywsgi's chain for every request."""


_Chain._lean = False  # (after the class: __init_subclass__ sets it)


class _ChainServer(WebServer):
    handler_class = _Chain


@pytest.fixture
def lean_calls(monkeypatch):
    calls = []
    respond = Handler._respond

    def counted(self, *args):
        calls.append(self.path)
        return respond(self, *args)

    monkeypatch.setattr(Handler, "_respond", counted)
    return calls


def _serve(server_class: type = WebServer, app=_app):
    srv = server_class(Endpoint(port=0, interface="127.0.0.1"), app, config_dir=Path("."),
                       json_path="transports[0]")
    srv.start()
    return srv


@pytest.fixture
def server():
    srv = _serve()
    yield srv
    srv.stop(timeout=scaled(2))


def _connect(srv) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.server_port), timeout=scaled(10))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_response(sock, buf: bytearray) -> tuple[bytes, dict, bytes]:
    """One response (Content-Length framed) from ``sock``; ``buf`` keeps what follows it."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, f"connection closed before a whole head: {bytes(buf)!r}"
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", 0))
    while len(rest) < length:
        data = sock.recv(65536)
        assert data, "connection closed inside a body"
        rest += data
    buf[:] = rest[length:]
    return status.encode(), headers, rest[:length]


def _read_to_close(sock) -> bytes:
    out = bytearray()
    while True:
        data = sock.recv(65536)
        if not data:
            return bytes(out)
        out += data


def test_environ_passes_wsgiref_validate(server, lean_calls):
    srv = _serve(app=validator(_app))
    try:
        sock = _connect(srv)
        sock.sendall(b"GET /a%20b/c?x=1&y=%41 HTTP/1.1\r\nHost: h:1\r\nX-One: 1\r\n"
                     b"Cookie: a=1\r\nCookie: b=2\r\nAccept: a\r\naccept: b\r\n\r\n")
        status, headers, body = _read_response(sock, bytearray())
        sock.close()
    finally:
        srv.stop(timeout=scaled(2))
    assert status == b"HTTP/1.1 200 OK"
    env = json.loads(body)
    assert env["REQUEST_METHOD"] == "GET"
    assert env["PATH_INFO"] == "/a b/c"
    assert env["QUERY_STRING"] == "x=1&y=%41"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["HTTP_HOST"] == "h:1" and env["HTTP_X_ONE"] == "1"
    assert env["HTTP_COOKIE"] == "a=1; b=2" and env["HTTP_ACCEPT"] == "a,b"
    assert env["wsgi.input_terminated"] is True and env["body"] == ""
    assert lean_calls == ["/a%20b/c?x=1&y=%41"]


def test_pipelined_requests_answered_in_order(server, lean_calls):
    sock = _connect(server)
    n = 50
    sock.sendall(b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(n)))
    buf = bytearray()
    paths = [json.loads(_read_response(sock, buf)[2])["PATH_INFO"] for _ in range(n)]
    sock.close()
    assert paths == [f"/p{i}" for i in range(n)]
    assert lean_calls == paths


def test_keepalive_then_close(server, lean_calls):
    sock = _connect(server)
    buf = bytearray()
    for i in range(3):
        sock.sendall(b"GET /k%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        status, headers, _ = _read_response(sock, buf)
        assert status == b"HTTP/1.1 200 OK" and "connection" not in headers
    sock.sendall(b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, _ = _read_response(sock, buf)
    assert status == b"HTTP/1.1 200 OK"
    assert _read_to_close(sock) == b"" and not buf  # the server closed after it
    sock.close()
    assert lean_calls == ["/k0", "/k1", "/k2", "/last"]


@pytest.mark.parametrize("keepalive", [False, True])
def test_http10(server, lean_calls, keepalive):
    sock = _connect(server)
    extra = b"Connection: keep-alive\r\n" if keepalive else b""
    sock.sendall(b"GET /old HTTP/1.0\r\n" + extra + b"\r\n")
    buf = bytearray()
    status, headers, body = _read_response(sock, buf)
    assert status == b"HTTP/1.1 200 OK"
    assert json.loads(body)["SERVER_PROTOCOL"] == "HTTP/1.0"
    if keepalive:
        assert headers["connection"] == "keep-alive"
        sock.sendall(b"GET /again HTTP/1.0\r\n\r\n")
        status, headers, _ = _read_response(sock, buf)
        assert headers["connection"] == "close"
    else:
        assert headers["connection"] == "close"
    assert _read_to_close(sock) == b""
    sock.close()
    assert lean_calls == (["/old", "/again"] if keepalive else ["/old"])


def test_idle_keepalive_waits_before_reading(server, lean_calls, monkeypatch):
    """Once a request was all the read buffer held, the loop waits for the next one on its
    own watcher (handler._Readable) instead of a read that finds nothing and gevent's wait on
    the socket (issue 15, fifth pass); a pipelined burst between pauses (a readiness while
    the connection is busy stops that watcher) is still served, in order."""
    from gevent.socket import socket as GeventSocket

    waits: list[int] = []
    wait = GeventSocket._wait

    def counted(sock, watcher, *args, **kwargs):
        if watcher is sock._read_event and sock.getsockname()[1] == server.server_port:
            waits.append(1)  # the server's side of a connection waiting to read
        return wait(sock, watcher, *args, **kwargs)

    monkeypatch.setattr(GeventSocket, "_wait", counted)
    sock = _connect(server)
    buf = bytearray()
    paths = []
    for i in range(6):
        if i == 3:
            sock.sendall(b"GET /b1 HTTP/1.1\r\nHost: x\r\n\r\nGET /b2 HTTP/1.1\r\nHost: x\r\n\r\n")
            paths.append(json.loads(_read_response(sock, buf)[2])["PATH_INFO"])
        else:
            sock.sendall(b"GET /i%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        paths.append(json.loads(_read_response(sock, buf)[2])["PATH_INFO"])
        gevent.sleep(0.01)  # the scenario: a keep-alive client pausing between requests
    sock.close()
    assert paths == ["/i0", "/i1", "/i2", "/b1", "/b2", "/i4", "/i5"]
    assert lean_calls == paths
    # (the connection's first read may wait gevent's way; none after a drained request)
    assert len(waits) <= 1, waits


def test_request_split_across_small_writes(server, lean_calls):
    sock = _connect(server)
    request = b"GET /slow?q=1 HTTP/1.1\r\nHost: x\r\nX-Long: " + b"v" * 200 + b"\r\n\r\n"
    for i in range(0, len(request), 7):
        sock.sendall(request[i:i + 7])
        gevent.sleep(0.001)  # (the trickle itself: every piece its own segment)
    buf = bytearray()
    status, _, body = _read_response(sock, buf)
    assert status == b"HTTP/1.1 200 OK"
    env = json.loads(body)
    assert env["QUERY_STRING"] == "q=1" and env["HTTP_X_LONG"] == "v" * 200
    # the next request, whole in one write, is the lean loop's again
    sock.sendall(b"GET /whole HTTP/1.1\r\nHost: x\r\n\r\n")
    assert json.loads(_read_response(sock, buf)[2])["PATH_INFO"] == "/whole"
    sock.close()
    assert lean_calls[-1] == "/whole"


def _exchange(srv, data: bytes) -> bytes:
    """Everything the server sends for ``data`` (then a closing request), Date removed."""
    sock = _connect(srv)
    # (sent beside the reading: the server may answer and close before it took everything)
    sender = gevent.spawn(_send_quietly, sock,
                          data + b"GET /z HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    out = _read_to_close(sock)
    sender.join()
    sock.close()
    return re.sub(rb"\r\nDate: [^\r]*", b"", out)


def _send_quietly(sock, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the server answered an error and closed first


HOSTILE = {
    "plain": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "bare-lf": b"GET /lf HTTP/1.1\nHost: x\nX-A: 1\n\n",
    "mixed-line-ends": b"GET /m HTTP/1.1\r\nHost: x\nX-A: 1\r\n\n",
    "leading-empty-lines": b"\r\n\r\nGET /e HTTP/1.1\r\nHost: x\r\n\r\n",
    "http09": b"GET /\r\n\r\n",
    "http2-version": b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    "http12-version": b"GET /v HTTP/1.2\r\nHost: x\r\n\r\n",
    "bad-version": b"GET / HTTP/1.1.1\r\nHost: x\r\n\r\n",
    "four-words": b"GET / HTTP/1.1 x\r\nHost: x\r\n\r\n",
    "bad-method": b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "control-in-target": b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n",
    "cr-in-request-line": b"GET / HTTP/1.1\r\r\nHost: x\r\n\r\n",
    "no-colon": b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
    "space-in-name": b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    "cr-in-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    "nul-in-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "obs-text-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: caf\xe9\xa0\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  b\r\n\r\n",
    "fold-first": b"GET / HTTP/1.1\r\n X-A: a\r\nHost: x\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    "cl-and-te": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-gzip": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    "te-http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "plus-length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    "two-lengths": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                   b"Content-Length: 3\r\n\r\nabc",
    "head-with-body": b"HEAD / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    "zero-length": b"GET /z0 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "post-body": b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    "chunked-body": b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n0\r\n\r\n",
    "expect": b"POST /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
              b"Content-Length: 3\r\n\r\nabc",
    "options-star": b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    "get-star": b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-form": b"GET http://other:9/p?q HTTP/1.1\r\nHost: x\r\n\r\n",
    "head": b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n",
    "connection-list": b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n",
    "connection-upgrade": b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\r\n",
    "underscore-name": b"GET / HTTP/1.1\r\nHost: x\r\nX_A: 1\r\nX-A: 2\r\n\r\n",
    "101-headers": b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101))
                   + b"\r\n",
    "100-headers": b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(100))
                   + b"\r\n",
    "long-request-line": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "megabyte-of-headers": b"GET / HTTP/1.1\r\nHost: x\r\n"
                           + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(1000))
                           + b"\r\n",
    "long-header-line": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"v" * 70000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_same_answer_as_pywsgis_chain(name):
    lean, chain = _serve(), _serve(_ChainServer)
    try:
        got, want = _exchange(lean, HOSTILE[name]), _exchange(chain, HOSTILE[name])
    finally:
        lean.stop(timeout=scaled(2))
        chain.stop(timeout=scaled(2))
    assert got == want
    assert got.startswith(b"HTTP/1.1 ")


def test_megabyte_of_headers_refused(server):
    got = _exchange(server, HOSTILE["megabyte-of-headers"])
    assert got.startswith(b"HTTP/1.1 400 ")
    assert b"request headers larger than 65536 bytes" in got
    got = _exchange(server, HOSTILE["101-headers"])
    assert got.startswith(b"HTTP/1.1 400 ") and b"more than 100 headers" in got
    got = _exchange(server, HOSTILE["long-request-line"])
    assert got.startswith(b"HTTP/1.1 414 ")
