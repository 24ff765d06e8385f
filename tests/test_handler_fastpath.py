"""geonode's handler builds what pywsgi would, the cheaper way (issue 15's hot-path cuts).

``StrictHTTP.get_environ`` builds the environ from the parsed header list instead of pywsgi's
re-joined header lines. It is compared here with pywsgi's own code on the same handler state:
same keys in the same order, same values.
"""

from __future__ import annotations

import socket
import sys

import pytest
from gevent.pywsgi import Input, WSGIHandler

from geonode.web.handler import Handler, RequestHeaders
from geonode.web.strict import StrictHTTP

HEADER_SETS = [
    [("Host", "x")],
    [("Host", "x"), ("User-Agent", "bench"), ("Accept", "*/*")],
    # repeated names: joined with "," (cookies with "; "), in order
    [("Host", "x"), ("Accept", "a"), ("accept", "b"), ("Cookie", "a=1"), ("Cookie", "b=2")],
    # a name with "_" gets no key; Content-Type/-Length only their CGI keys
    [("Host", "x"), ("X_Forwarded_For", "1.2.3.4"), ("Content-Type", "text/plain"),
     ("Content-Length", "5")],
    [("Host", "x"), ("Transfer-Encoding", "chunked"), ("X-Odd", "v\xa0")],
    [("Host", "x"), ("Expect", "100-continue"), ("Content-Length", "3")],
    [("Host", "x"), ("Connection", "Upgrade"), ("Upgrade", "websocket")],
    [("Host", "x"), ("Upgrade", "WebSocket")],
    [("Host", "x"), ("-", "dash")],
]


class _Server:
    closed = False
    client_timeout = 60.0

    def get_environ(self) -> dict:
        return {"SERVER_NAME": "t", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
                "wsgi.errors": sys.stderr}


@pytest.fixture
def handler():
    a, b = socket.socketpair()
    h = Handler(a, ("127.0.0.1", 4242), _Server())
    yield h
    a.close()
    b.close()


def _prepare(h: Handler, items: list, path: str) -> None:
    h.headers = RequestHeaders(items)
    h.command, h.path, h.request_version = "POST", path, "HTTP/1.1"
    length = h.headers.get("content-length")
    h.content_length = int(length) if length else None


@pytest.mark.parametrize("items", HEADER_SETS)
@pytest.mark.parametrize("path", ["/", "/a%20b/c?x=1&y=%41", "/p?", "/%e9"])
def test_environ_is_pywsgis(handler, items, path):
    _prepare(handler, items, path)
    want = WSGIHandler.get_environ(handler)
    _prepare(handler, items, path)
    got = StrictHTTP.get_environ(handler)
    assert list(got)[:len(want)] == list(want)
    for key, value in want.items():
        if key not in ("wsgi.input", "wsgi.input_terminated"):
            assert got[key] == value, key
    w, g = want["wsgi.input"], got["wsgi.input"]
    if w is handler.rfile:
        # an upgrade request: pywsgi's raw socket file, unless it carries a body (geonode
        # reads that through the framing: test_http_hardening's upgrade-with-a-body tests)
        assert g is handler.rfile or (type(g) is Input and (g.content_length
                                                            or g.chunked_input))
    else:
        assert type(g) is Input
        assert (g.content_length, g.chunked_input, g.socket) == (
            w.content_length, w.chunked_input, w.socket)
        assert got["wsgi.input_terminated"] == want["wsgi.input_terminated"]
    assert got["geonode.client_timeout"] == 60.0
