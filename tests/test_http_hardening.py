"""The web transport against hostile or picky HTTP/1.1 clients, over raw sockets (RFC 9112).

Every refusal must be a 4xx/5xx that names the problem and closes the connection when the
framing is in doubt; never a 500 for the client's mistake, a traceback, a hang, or a second
response smuggled in behind the first. Rules: geonode/web/httprules.py; docs/web.md.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time

import pytest
import requests
from support import scaled, web_node
from support.http import parse_response

#: the module node's client_timeout (which lowers request_head_timeout and keepalive_timeout
#: to it): every "at once" below is well under it, every timeout test waits past it
LIMIT = scaled(1.0)

APP = r'''
import json, time

def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    out = json.dumps({"method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
                      "query": environ["QUERY_STRING"], "host": environ.get("HTTP_HOST"),
                      "proto": environ["SERVER_PROTOCOL"], "x": environ.get("HTTP_X_A"),
                      "body": body.decode("latin-1")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(out)))])
    return [out]

def stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    def gen():
        for i in range(3):
            yield b"part%d;" % i
            time.sleep(0.01)  # the scenario: chunks written one by one
    return gen()

def sleepy(environ, start_response):
    time.sleep(0.05)  # the scenario: the first of pipelined requests is the slowest
    start_response("200 OK", [("Content-Length", "5")])
    return [b"awake"]

def short_cl(environ, start_response):
    start_response("200 OK", [("Content-Length", "3")])
    return [b"abcdefgh"]

def long_cl(environ, start_response):
    start_response("200 OK", [("Content-Length", "100")])
    return [b"abc"]

def short_cl_stream(environ, start_response):
    start_response("200 OK", [("Content-Length", "3")])
    def gen():
        yield b"abcd"
        time.sleep(0.01)  # the scenario: two separate writes
        yield b"efgh"
    return gen()

def long_cl_stream(environ, start_response):
    start_response("200 OK", [("Content-Length", "100")])
    def gen():
        yield b"abc"
        time.sleep(0.01)  # the scenario: two separate writes
        yield b"def"
    return gen()

STATUS = {"big": "2000 OK", "short": "20 OK", "interim": "100 Continue", "word": "OK",
          "ctl": "200 O\x01K"}
HEADERS = {"latin": [("X-Name", "\u20ac")], "crlf": [("X-Name", "a\r\nX-Injected: 1")],
           "name": [("X Name:", "a")], "te": [("Transfer-Encoding", "chunked")],
           "cl": [("Content-Length", "+2")]}

def bad_status(environ, start_response):
    start_response(STATUS[environ["QUERY_STRING"]], [("Content-Length", "2")])
    return [b"hi"]

def bad_header(environ, start_response):
    headers = HEADERS[environ["QUERY_STRING"]]
    if not any(k == "Content-Length" for k, _ in headers):
        headers = headers + [("Content-Length", "2")]
    start_response("200 OK", headers)
    return [b"hi"]
'''


def wsgi(obj: str, **kw) -> dict:
    return {"type": "wsgi", "module": "hardapp", "object": obj, **kw}


@pytest.fixture(scope="module")
def node(start_module_node):
    cfg = web_node({
        "/": wsgi("echo", maxthreads=1),
        "stream": wsgi("stream"),
        "sleepy": wsgi("sleepy"),
        "green": wsgi("echo", threads=False),
        "gstream": wsgi("stream", threads=False),
        "shortcl": wsgi("short_cl"), "longcl": wsgi("long_cl"),
        "shortcls": wsgi("short_cl_stream"), "longcls": wsgi("long_cl_stream"),
        "badstatus": wsgi("bad_status"), "badheader": wsgi("bad_header"),
        "static": {"type": "static", "directory": "www"},
        "json": {"type": "json", "value": 42},
    }, options={"client_timeout": LIMIT}, worker_options={"pythonpath": ["."]})
    return start_module_node(cfg, files={"hardapp.py": APP, "www/a.txt": "hello\n"})


# ---- helpers ---------------------------------------------------------------------------

def exchange(port: int, data: bytes, timeout: float = 3.0) -> tuple[bytes, bool]:
    """Send ``data``, read until the server closes; (bytes, closed by the server in time)."""
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(timeout)) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out, True
                out += chunk
        except TimeoutError:
            return out, False


parse = parse_response


def responses(buf: bytes) -> list[int]:
    """The status codes of every response in ``buf`` (a smuggled second answer shows here)."""
    out = []
    while buf:
        status, _, _, buf = parse(buf)
        out.append(status)
    return out


def refused(node, data: bytes, status: int = 400, reason: str = "") -> None:
    out, closed = exchange(node.port, data)
    assert closed, f"connection left open after {out[:80]!r}"
    assert responses(out) == [status], out
    code, headers, body, _ = parse(out)
    assert headers.get("connection") == "close"
    assert reason.encode() in body, body
    assert b"Traceback" not in out


FOLLOW = b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n"  # what a smuggler hides behind the body


# ---- request framing (smuggling) ---------------------------------------------------------

@pytest.mark.parametrize("headers,body,reason", [
    (b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n",
     "both Content-Length and Transfer-Encoding"),
    (b"Content-Length: 3\r\nContent-Length: 10\r\n", b"abc", "more than one Content-Length"),
    (b"Content-Length: 3, 3\r\n", b"abc", "invalid Content-Length"),
    (b"Content-Length: +3\r\n", b"abc", "invalid Content-Length"),
    (b"Content-Length: -1\r\n", b"abc", "invalid Content-Length"),
    (b"Content-Length: 1_0\r\n", b"0123456789", "invalid Content-Length"),
    (b"Content-Length: 99999999999999999999999\r\n", b"abc", "invalid Content-Length"),
    (b"Transfer-Encoding: gzip\r\n", b"", "chunked is not the last"),
    (b"Transfer-Encoding: chunked, gzip\r\n", b"3\r\nabc\r\n0\r\n\r\n", "chunked is not the last"),
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n",
     "not the only chunked"),
])
def test_ambiguous_body_framing_is_refused_and_closes(node, headers, body, reason):
    refused(node, b"POST / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + body + FOLLOW,
            400, reason)


def test_unknown_transfer_coding_is_501(node):
    refused(node, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            b"0\r\n\r\n" + FOLLOW, 501, "not supported")


def test_transfer_encoding_in_http10_is_refused(node):
    refused(node, b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400, "HTTP/1.0")


@pytest.mark.parametrize("path", [b"/", b"/green", b"/static/a.txt"])
@pytest.mark.parametrize("chunks", [b"0x3\r\nabc\r\n0\r\n\r\n", b"-1\r\nabc\r\n0\r\n\r\n",
                                    b"f" * 40 + b"\r\nabc\r\n0\r\n\r\n",
                                    b"3\r\nabcXX0\r\n\r\n"])
def test_bad_chunk_framing_gets_one_answer_and_a_close(node, path, chunks):
    out, closed = exchange(node.port, b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n" + chunks + FOLLOW)
    assert closed
    # One answer only (400 from the thread-pool host and from a greenlet app that read the
    # broken body, 405 from static, which reads none): the smuggled GET /json never gets one.
    codes = responses(out)
    assert codes == ([405] if path == b"/static/a.txt" else [400]), out


def test_chunk_extensions_and_trailers_keep_the_stream_in_sync(node):
    out, closed = exchange(node.port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                           b"\r\n\r\n3;name=val\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n"
                           b"GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, _, body, rest = parse(out)
    assert status == 200 and json.loads(body)["body"] == "abcde"
    assert parse(rest)[2] == b"42" and closed


@pytest.mark.parametrize("path", [b"/", b"/green"])
@pytest.mark.parametrize("upgrade,body", [
    (b"Connection: Upgrade\r\nContent-Length: 3\r\n", b"abc"),
    (b"Upgrade: websocket\r\nTransfer-Encoding: chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
    (b"Upgrade: h2c\r\nConnection: Upgrade\r\nContent-Length: 3\r\n", b"abc"),
])
def test_upgrade_request_with_a_body_keeps_the_stream_in_sync(node, path, upgrade, body):
    # pywsgi gave such requests the raw socket file as wsgi.input and then drained the body
    # once more from the stream: the next request lost its first bytes (or the app hung).
    out, closed = exchange(node.port, b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + upgrade
                           + b"\r\n" + body + b"GET /json HTTP/1.1\r\nHost: x\r\n"
                           b"Connection: close\r\n\r\n")
    status, _, seen, rest = parse(out)
    assert status == 200 and json.loads(seen)["body"] == "abc"
    assert parse(rest)[2] == b"42" and closed


# ---- header lines --------------------------------------------------------------------------

@pytest.mark.parametrize("line,reason", [
    (b"Host : x", "invalid header name"),
    (b"X(A): 1", "invalid header name"),
    (b": nameless", "invalid header name"),
    (b"X-A: a\x00b", "control character"),
    (b"X-A: a\rb", "control character"),
    (b"X-A: ab\r", "control character"),
    (b"X-A: a\x1bb", "control character"),
    (b"Host: y", "more than one Host"),
    (b"no colon", "invalid header line"),
])
def test_bad_header_lines_are_refused(node, line, reason):
    refused(node, b"GET / HTTP/1.1\r\nHost: x\r\n" + line + b"\r\n\r\n" + FOLLOW, 400, reason)


def test_continuation_before_any_header_is_refused(node):
    refused(node, b"GET / HTTP/1.1\r\n folded\r\nHost: x\r\n\r\n", 400, "continuation")


def test_obs_fold_and_bare_lf_are_accepted(node):
    # RFC 9112 5.2 / 2.2: a server may join folded lines with a space and accept bare LF.
    out, _ = exchange(node.port, b"GET / HTTP/1.1\nHost: x\nX-A: one\n\t two\n"
                      b"Connection: close\n\n")
    status, _, body, _ = parse(out)
    assert status == 200 and json.loads(body)["x"] == "one two"


def test_header_limits(node):
    refused(node, b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: " + b"a" * 40000 + b"\r\n"
            b"X-B: " + b"b" * 40000 + b"\r\n\r\n", 400, "larger than 65536")
    out, closed = exchange(node.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert closed and out.startswith(b"HTTP/1.1 414 ")


# ---- request line and versions -------------------------------------------------------------

@pytest.mark.parametrize("line,reason", [
    (b"GET / HTTP/2.0", "HTTP version not supported"),
    (b"GET / HTTP/1", "HTTP version not supported"),
    (b"GET / HTTP/1.1.1", "HTTP version not supported"),
    (b"GET / http/1.1", "HTTP version not supported"),
    (b"GET / FOO/1.1", "HTTP version not supported"),
    (b"GET /json", "malformed request line"),           # HTTP/0.9
    (b"G(T / HTTP/1.1", "invalid method"),
    (b"GET /a\x7fb HTTP/1.1", "control character"),
    (b"GET json HTTP/1.1", "invalid request target"),
    (b"GET * HTTP/1.1", "OPTIONS only"),
    (b"CONNECT example.org:443 HTTP/1.1", "invalid request target"),
])
def test_bad_request_lines_are_refused(node, line, reason):
    refused(node, line + b"\r\nHost: x\r\n\r\n", 400, reason)


def test_http_1_minor_above_1_is_served_as_1_1(node):
    out, closed = exchange(node.port, b"GET /a HTTP/1.2\r\nHost: x\r\n\r\n"
                           b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, _, body, rest = parse(out)
    assert status == 200 and json.loads(body)["proto"] == "HTTP/1.1"
    assert json.loads(parse(rest)[2])["path"] == "/b" and closed


def test_absolute_form_target_uses_its_authority(node):
    out, _ = exchange(node.port, b"GET http://example.org:8080/deep/path?q=1 HTTP/1.1\r\n"
                      b"Host: other\r\nConnection: close\r\n\r\n")
    seen = json.loads(parse(out)[2])
    assert (seen["path"], seen["query"], seen["host"]) == ("/deep/path", "q=1", "example.org:8080")
    out, _ = exchange(node.port, b"GET HTTP://example.org HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert json.loads(parse(out)[2])["path"] == "/"


def test_options_asterisk_is_answered_by_the_server(node):
    out, closed = exchange(node.port, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body, _ = parse(out)
    assert status == 200 and "OPTIONS" in headers["allow"] and body == b"" and closed


def test_empty_lines_before_a_request_are_skipped(node):
    out, _ = exchange(node.port, b"\r\n\r\nGET /json HTTP/1.1\r\nHost: x\r\n"
                      b"Connection: close\r\n\r\n")
    assert parse(out)[2] == b"42"


def test_missing_host_is_served(node):
    # Deliberate (docs/web.md): like gunicorn and werkzeug, not RFC 9112's MUST-400.
    out, _ = exchange(node.port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert parse(out)[0] == 200


def test_http10_keep_alive_rules(node):
    out, closed = exchange(node.port, b"GET /json HTTP/1.0\r\n\r\n")
    assert parse(out)[1]["connection"] == "close" and closed
    out, closed = exchange(node.port, b"GET /json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                           b"GET /static/a.txt HTTP/1.0\r\n\r\n")
    status, headers, body, rest = parse(out)
    assert headers["connection"] == "keep-alive" and body == b"42"
    assert parse(rest)[2] == b"hello\n" and closed


@pytest.mark.parametrize("path", [b"/stream", b"/gstream"])
def test_http10_keep_alive_without_length_closes_at_once(node, path):
    # No Content-Length and no chunked in HTTP/1.0: the close ends the body; without it the
    # client waited for client_timeout (and a pipelined request was read as body).
    t0 = time.monotonic()
    out, closed = exchange(node.port, b"GET " + path + b" HTTP/1.0\r\n"
                           b"Connection: keep-alive\r\n\r\n")
    assert closed and time.monotonic() - t0 < 0.8 * LIMIT
    status, headers, body, _ = parse(out)
    assert headers["connection"] == "close" and body == b"part0;part1;part2;"


# ---- pipelining, Expect, HEAD ---------------------------------------------------------------

def test_pipelined_requests_are_answered_in_order(node):
    reqs = [b"GET /sleepy HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /?1 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /static/a.txt HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /?2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz",
            b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n",
            b"HEAD /gstream HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /?3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]
    out, closed = exchange(node.port, b"".join(reqs))
    bodies = []
    for i in range(len(reqs)):
        status, _, body, out = parse(out, head=i == 6)
        assert status == 200
        bodies.append(body)
    assert closed and out == b""
    assert bodies[0] == b"awake" and json.loads(bodies[1])["query"] == "1"
    assert bodies[2] == b"hello\n" and json.loads(bodies[3])["body"] == "xyz"
    assert bodies[4] == b"part0;part1;part2;" and bodies[5] == b"42" and bodies[6] == b""
    assert json.loads(bodies[7])["query"] == "3"


@pytest.mark.parametrize("path", [b"/", b"/green"])
def test_expect_100_continue(node, path):
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(3)) as s:
        s.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 5\r\n\r\n")
        assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        buf = b""
        while b"}" not in buf:
            buf += s.recv(65536)
        assert json.loads(parse(buf)[2])["body"] == "hello"


@pytest.mark.parametrize("path", [b"/static/a.txt", b"/json"])
def test_final_answer_to_expect_100_continue_closes(node, path):
    # The service answers without asking for the body: the client may never send it, so the
    # next bytes cannot be trusted as a request line (they were read as the body before).
    out, closed = exchange(node.port, b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
                           b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n" + FOLLOW)
    assert closed and responses(out) == [405], out
    assert parse(out)[1]["connection"] == "close"


# ---- slow clients ------------------------------------------------------------------------

def trickle(port: int, head: bytes, pieces: list[bytes], pause: float,
            started: threading.Event | None = None) -> tuple[bytes, float]:
    """Send ``head`` then one piece per ``pause`` (the slow client under test) until the
    server answers or 0.75 LIMIT have passed; (answer, elapsed). ``started`` is set once two
    pieces are out. (A piece into a connection the server has just closed draws a TCP reset,
    which can discard its answer unread: RFC 9112 9.6. So the pieces stop before the
    server's deadline.)"""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(5)) as s:
        s.sendall(head)
        for i, piece in enumerate(pieces):
            if select.select([s], [], [], pause)[0] or time.monotonic() - t0 > 0.75 * LIMIT:
                break
            s.sendall(piece)
            if i == 1 and started is not None:
                started.set()
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out, time.monotonic() - t0
            out += chunk


def test_slowloris_headers_time_out(node):
    # Each line comes well within the idle timeout (LIMIT); the whole head may take LIMIT
    # (client_timeout lowers request_head_timeout's default to it).
    lines = [b"X-%d: 1\r\n" % i for i in range(20)] + [b"\r\n"]
    out, elapsed = trickle(node.port, b"GET / HTTP/1.1\r\nHost: x\r\n", lines, LIMIT / 4)
    assert out.startswith(b"HTTP/1.1 408 ") and b"request_head_timeout" in out
    assert elapsed < 2 * LIMIT


def test_slow_body_times_out_without_holding_a_thread(node):
    # "/" has one thread: a body trickling in must not take it (the hub spools it).
    result = {}
    started = threading.Event()

    def slow():
        result["out"] = trickle(node.port, b"POST / HTTP/1.1\r\nHost: x\r\n"
                                b"Content-Length: 20\r\n\r\n", [b"a"] * 20, LIMIT / 4,
                                started)

    t = threading.Thread(target=slow)
    t.start()
    assert started.wait(scaled(5)), "the slow body never started"
    t0 = time.monotonic()
    assert requests.get(node.url + "/?during", timeout=scaled(3)).json()["query"] == "during"
    assert time.monotonic() - t0 < LIMIT / 2  # not after the slow body's 408
    t.join(scaled(5))
    out, elapsed = result["out"]
    assert out.startswith(b"HTTP/1.1 408 ") and elapsed < 2 * LIMIT


# ---- faulty WSGI responses ---------------------------------------------------------------

@pytest.mark.parametrize("path,body", [(b"/shortcl", b"abc"), (b"/shortcls", b"abc"),
                                       (b"/longcl", b"abc"), (b"/longcls", b"abcdef")])
def test_body_not_matching_its_content_length_closes(node, path, body):
    out, closed = exchange(node.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n" + FOLLOW)
    assert closed
    head, _, rest = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and rest == body  # nothing after: no desync
    assert "than its Content-Length" in node.log()


@pytest.mark.parametrize("url", ["/badstatus?big", "/badstatus?short", "/badstatus?interim",
                                 "/badstatus?word", "/badstatus?ctl", "/badheader?latin",
                                 "/badheader?crlf", "/badheader?name", "/badheader?te",
                                 "/badheader?cl"])
def test_bad_status_or_headers_from_the_app_are_a_500(node, url):
    out, closed = exchange(node.port, f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                           + b"GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, _, rest = parse(out)
    assert status == 500 and b"X-Injected" not in out
    assert parse(rest)[2] == b"42" and closed  # the connection stays usable


# ---- the same rules under gunicorn (the handler is shared) ---------------------------------

def test_gunicorn_worker_refuses_the_same(tmp_path):
    pytest.importorskip("gunicorn")
    from support import launch_gunicorn

    (tmp_path / "hardapp.py").write_text(APP)
    g = launch_gunicorn(tmp_path, "hardapp:echo")
    try:
        for data, status in [
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked"
             b"\r\n\r\n0\r\n\r\n" + FOLLOW, 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ]:
            out, closed = exchange(g.port, data)
            assert closed and responses(out) == [status], out
        out, _ = exchange(g.port, b"GET http://example.org/p HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert json.loads(parse(out)[2])["host"] == "example.org"
    finally:
        g.stop()
