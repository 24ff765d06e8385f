"""geonode's handler builds what pywsgi would, the cheaper way (issue 15's hot-path cuts).

``StrictHTTP.get_environ`` builds the environ from the parsed header list instead of pywsgi's
re-joined header lines, and ``checked_start_response`` answers repeated status/header pairs
from what the full checks concluded before. Each is compared here with pywsgi's own code on
the same handler state: same keys in the same order, same values, same response fields.
"""

from __future__ import annotations

import socket
import sys

import pytest
from gevent.pywsgi import Input, WSGIHandler

from geonode.web import strict
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


RESPONSES = [
    ("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")]),
    ("200 OK", [("Content-Type", "text/plain")]),
    ("404 Not Found", [("Content-Type", "text/html"), ("Content-Length", "12"),
                       ("X-A", "1")]),
    ("200 OK", [("Content-Type", "text/plain"), ("Connection", "close")]),
    ("200 OK", [("Date", "Thu, 01 Jan 1970 00:00:00 GMT"), ("Content-Length", "0")]),
    ("204 No Content", [("X-A", "1")]),
    ("200 OK", [("Content-Length", "5"), ("Content-Length", "5")]),
]
FIELDS = ("status", "_orig_status", "response_headers", "code", "provided_date",
          "provided_content_length", "close_connection", "_body_left")


@pytest.fixture(autouse=True)
def _forget_known():
    # the first start_response of each case must take the full checks
    strict._KNOWN_STATUS.clear()
    strict._KNOWN_HEADERS.clear()


def _respond(h: Handler, status: str, headers: list, version: str, command: str) -> tuple:
    h.request_version, h.command, h.close_connection = version, command, False
    h.headers_sent = False
    h.checked_start_response(status, list(headers))
    return tuple(getattr(h, f) for f in FIELDS)


@pytest.mark.parametrize("status,headers", RESPONSES)
@pytest.mark.parametrize("version,command", [("HTTP/1.1", "GET"), ("HTTP/1.0", "GET"),
                                             ("HTTP/1.1", "HEAD")])
def test_repeated_start_response_is_the_full_one(handler, status, headers, version, command):
    first = _respond(handler, status, headers, version, command)   # the full checks
    again = _respond(handler, status, headers, version, command)   # what they learnt
    assert again == first


@pytest.mark.parametrize("headers", [
    [("Content-Type", "text/plain"), ("Bad Name", "x")],
    [("Content-Type", "text/plain"), ("X-A", "a\r\nb")],
    [("Content-Type", "text/plain"), ("Content-Length", "5x")],
    [("Content-Type", "text/plain"), ["X-A", ["not", "a", "string"]]],
    [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")],
])
def test_known_pairs_never_let_a_bad_header_through(handler, headers):
    _respond(handler, "200 OK", [("Content-Type", "text/plain")], "HTTP/1.1", "GET")
    with pytest.raises((ValueError, TypeError, UnicodeError)):
        _respond(handler, "200 OK", headers, "HTTP/1.1", "GET")


def test_made_up_header_names_are_not_kept_for_good():
    """The per-process caches of checked names and their environ keys keep short names only:
    a client's long made-up names (a 64 KiB header line each) are checked and served, never
    kept (before: 1,024 of them could pin ~128 MiB in the two caches)."""
    import io

    from geonode.web import handler as module

    long_names = [f"X-{i}-" + "a" * 20_000 for i in range(3)]
    head = "".join(f"{n}: v\r\n" for n in long_names) + "X-Short: v\r\n\r\n"
    headers = RequestHeaders.parse(io.BytesIO(head.encode("latin-1")))
    env: dict = {}
    headers.environ_into(env)
    assert env["HTTP_X_SHORT"] == "v" and sum(k.startswith("HTTP_X_0_") for k in env) == 1
    assert "X-Short" in module._GOOD_NAMES and "X-Short" in module._CGI_KEYS
    assert not any(n in module._GOOD_NAMES or n in module._CGI_KEYS for n in long_names)
