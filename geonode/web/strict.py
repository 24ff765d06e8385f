"""StrictHTTP: the part of geonode's pywsgi handler that refuses what HTTP/1.1 forbids.

A mixin in front of ``WSGIHandler`` (``geonode.web.handler.Handler`` inherits it), so the node
and the gunicorn worker refuse the same requests. The rules themselves are in
``geonode.web.httprules``; this file wires them into pywsgi's request loop:

- request line and framing headers checked before any body byte is read; a refusal is a short
  ``text/plain`` answer naming the problem, then the connection closes (its framing is unknown);
- timeouts (the server's attributes, ``geonode.web.limits``): a connection waits for a request
  at most ``keepalive_timeout`` (one timer per connection: IdleClock), a request head must be
  complete ``request_head_timeout`` after its first byte however it trickles in (slowloris:
  408), and any other wait on the client is bounded by ``client_timeout`` (the socket timeout);
- a WSGI app's status line and headers are checked before they go out, and the body it
  produces is held to its own ``Content-Length``: extra bytes are dropped, a short body closes
  the connection (either way one error line is logged), so a keep-alive stream never desyncs;
- an HTTP/1.0 keep-alive response without a length closes the connection (it is the only end
  marker the client has), and so does a final answer to ``Expect: 100-continue`` sent before
  the body was asked for;
- a request asking for an upgrade that carries a body reads that body through ``wsgi.input``.

Cost (in-process bench, 3 request headers): about 3.5 us per request on top of pywsgi's 16.
"""

from __future__ import annotations

import logging
import time
from time import monotonic as _monotonic
from typing import Any, cast

from gevent import Timeout, get_hub
from gevent.pywsgi import (
    MAX_REQUEST_LINE,
    Input,
    WSGIHandler,
    format_date_time,
    unquote_latin1,
)
from greenlet import getcurrent

from geonode.httpstatus import status_line
from geonode.web.httprules import (
    GOOD_STATUS,
    RequestError,
    check_request_line,
    check_response_headers,
    check_status,
    framing,
)

__all__ = ["StrictHTTP"]

log = logging.getLogger("geonode.web")

# Empty lines tolerated before a request line (RFC 9112 2.2: old clients send CRLF after a body).
_MAX_EMPTY_LINES = 4


# Statuses and header pairs pywsgi's start_response and httprules' checks accepted before
# (apps send the same few every time): status -> (its bytes, code); (name, value) -> their
# bytes. Neither holds 204/304 (their bodies are checked), nor the headers start_response
# looks at (Connection, Date, Content-Length: the fast path handles a digits-only length).
_KNOWN_STATUS: dict[str, tuple[bytes, int]] = {}
_KNOWN_HEADERS: dict[tuple[str, str], tuple[bytes, bytes]] = {}
_KNOWN_MAX = 4096
_LOOKED_AT = frozenset(("connection", "date", "content-length"))
# Headers whose values differ from response to response: not worth a place
_VARYING = frozenset(("set-cookie", "etag", "last-modified", "expires", "location",
                      "content-disposition", "content-range"))


def _learn(status: str, code: int, headers: list) -> None:
    """After a start_response that passed every check: remember what it accepted."""
    if code != 204 and code != 304 and len(_KNOWN_STATUS) < _KNOWN_MAX:
        _KNOWN_STATUS[status] = (status.encode("latin-1"), code)
    for header in headers:
        if type(header) is tuple:
            name, value = header
            lname = name.lower() if type(name) is str and type(value) is str else "date"
            if lname not in _LOOKED_AT and lname not in _VARYING:
                _KNOWN_HEADERS[header] = (name.encode("latin-1"), value.encode("latin-1"))


_date: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The Date header's value now (RFC 9110 5.6.7), formatted once per second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, format_date_time(now))
    return _date[1]


class OptionsStar(RequestError):
    """``OPTIONS *``: answered by the server itself (no path service owns ``*``)."""


def _answer(status: int, text: str, extra: str = "") -> bytes:
    line = status_line(status)
    body = f"{line}: {text}\n".encode() if status >= 400 else b""
    head = (f"HTTP/1.1 {line}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"X-Content-Type-Options: nosniff\r\n{extra}Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode("latin-1") + body


class _NoDrainOnClose:
    """The handler's reference to ``wsgi.input``: pywsgi drains an unread body after each
    response to find the next request; a connection that closes anyway skips that (a trickled
    body would otherwise hold the greenlet until the client finishes it)."""

    __slots__ = ("handler", "input")

    def __init__(self, handler: Any, inp: Any) -> None:
        self.handler = handler
        self.input = inp

    def _discard(self) -> None:
        inp = self.input
        if inp._chunked_input_error:
            # An app read a broken chunked body (greenlet mode): where the next request
            # would start is unknown.
            self.handler.close_connection = True
        elif not self.handler.close_connection:
            inp._discard()


class IdleClock:
    """``keepalive_timeout`` for one connection, without a timer per request.

    Waiting for the next request with the socket's timeout set made gevent build a ``Timeout``
    (a timer watcher and an exception instance) for every request, since a keep-alive client
    sends its next request only after it read the response. Here the wait has no timeout;
    the connection keeps one timer, armed at most once per ``seconds`` while it is busy, that
    on firing looks at when the current wait began: past the bound, the waiting greenlet gets
    the same ``TimeoutError`` the socket timeout raised (pywsgi closes quietly), else the timer
    is armed again for what is left of that wait."""

    __slots__ = ("greenlet", "seconds", "since", "waiting", "timer", "loop")

    def __init__(self, seconds: float) -> None:
        self.greenlet = getcurrent()
        self.loop = get_hub().loop
        self.seconds = seconds
        #: monotonic time the current wait for a request began
        self.since = 0.0
        #: the connection's greenlet is waiting for a request (only then can it be thrown at)
        self.waiting = False
        self.timer: Any = None

    def start_wait(self) -> None:
        self.since = _monotonic()
        self.waiting = True
        if self.timer is None:
            self._arm(self.seconds)

    def _arm(self, after: float) -> None:
        timer = self.timer = self.loop.timer(max(after, 0.001))
        timer.start(self._fire)

    def _fire(self) -> None:
        timer, self.timer = self.timer, None
        if timer is None:
            return  # closed meanwhile
        timer.close()
        if not self.waiting:
            return  # busy with a request: the next wait arms a timer again
        left = self.since + self.seconds - _monotonic()
        if left > 0:
            self._arm(left)
            return
        self.waiting = False
        self.greenlet.throw(TimeoutError("timed out"))

    def close(self) -> None:
        timer, self.timer = self.timer, None
        self.waiting = False
        if timer is not None:
            timer.stop()
            timer.close()


class StrictHTTP(WSGIHandler):
    """Request and response checks for pywsgi (see the module docstring)."""

    _head_deadline: float | None = None
    #: keepalive_timeout's clock (IdleClock), made by the connection's first wait
    _idle: IdleClock | None = None
    # pywsgi's (untyped) attributes this mixin reads and sets
    wsgi_input: Any
    response_headers: Any
    _absolute_host: str | None = None
    _body_left: int | None = None

    # State lives in class defaults and is written to the instance only when it differs:
    # CPython shares one key table between instances of up to 30 attributes, and pywsgi's
    # handler already has 27 by the time a WebSocket is upgraded. Three more made every idle
    # WebSocket's handler dict a private one, 1.3 KiB bigger.

    # The timeouts are the server's (geonode.web.limits); a server without them (a plain
    # pywsgi server) bounds nothing.
    @property
    def _client_timeout(self) -> float | None:
        return getattr(self.server, "client_timeout", None)

    # ---- request --------------------------------------------------------------------
    def _head_clock(self, what: str) -> Any:
        """A Timeout for the rest of the request head (``_head_deadline`` is set)."""
        left = max(cast(float, self._head_deadline) - time.monotonic(), 0.001)
        return Timeout(left, TimeoutError(f"request {what} not complete within "
                                            f"request_head_timeout"))

    def read_requestline(self) -> str:
        rfile = self.rfile
        server = self.server
        idle = getattr(server, "keepalive_timeout", None)
        if idle is not None:
            # Waiting for a request (the first, or the next on a keep-alive connection) is
            # bounded by keepalive_timeout; everything after its first byte by client_timeout.
            # An expired wait raises TimeoutError: pywsgi closes the connection quietly.
            # (gevent's own timeout slot: settimeout() costs 8 times as much, twice a request;
            # no socket timeout while idle: IdleClock bounds the wait)
            sock = self.socket
            clock = self._idle
            if clock is None:
                clock = self._idle = IdleClock(idle)
            clock.start_wait()
            sock.timeout = None
            try:
                head = rfile.peek(1)
            finally:
                clock.waiting = False
                sock.timeout = getattr(server, "client_timeout", None)
        head_timeout = getattr(server, "request_head_timeout", None)
        if head_timeout is None:
            line = rfile.readline(MAX_REQUEST_LINE)
            if line == b"\r\n" or line == b"\n":
                return self._read_requestline(rfile, line)
            return line.decode("latin-1")
        if idle is None:
            head = rfile.peek(1)
        # The head clock starts at its first byte. A head already whole in the read buffer
        # (what every honest client sends: one write) cannot be slow: no clock for it.
        head = head.lstrip(b"\r\n")
        if b"\n\r\n" in head or b"\n\n" in head:
            if self._head_deadline is not None:
                self._head_deadline = None
            line = rfile.readline(MAX_REQUEST_LINE)
            if line == b"\r\n" or line == b"\n":
                return self._read_requestline(rfile, line)
            return line.decode("latin-1")
        self._head_deadline = time.monotonic() + head_timeout
        with self._head_clock("line"):
            return self._read_requestline(rfile, rfile.readline(MAX_REQUEST_LINE))

    @staticmethod
    def _read_requestline(rfile: Any, line: bytes) -> str:
        skipped = 0
        while (line == b"\r\n" or line == b"\n") and skipped < _MAX_EMPTY_LINES:
            line = rfile.readline(MAX_REQUEST_LINE)
            skipped += 1
        return line.decode("latin-1")

    def read_request(self, raw_requestline: str) -> bool:
        """pywsgi's ``read_request``, parsing once with ``httprules`` (its own checks let
        ``HTTP/1.1.1``, ``Content-Length: +5`` and ``Transfer-Encoding: gzip`` through)."""
        method, target, version, absolute = check_request_line(raw_requestline)
        self.requestline = raw_requestline.rstrip()
        self.command, self.path, self.request_version = method, target, version
        if absolute is not None:
            self._absolute_host = absolute.host
        elif self._absolute_host is not None:
            self._absolute_host = None
        if target == "*":
            raise OptionsStar(200, "OPTIONS *")
        if self._head_deadline is None:
            headers = self.MessageClass(self.rfile, 0)
        else:
            try:
                with self._head_clock("headers"):
                    headers = self.MessageClass(self.rfile, 0)
            except TimeoutError as e:
                raise RequestError(408, str(e)) from None
        self.take_headers(headers, method, version)
        return True

    def take_headers(self, headers: Any, method: str, version: str) -> bool:
        """The request's headers: its framing checked (``RequestError``), ``content_length``
        and ``close_connection`` set; whether the body is chunked."""
        self.headers = headers
        length, chunked = framing(headers, version)
        if length and method == "HEAD":
            raise RequestError(400, "HEAD request with a body")
        self.content_length = length
        conn = headers.get("connection")
        if conn is None:
            self.close_connection = version == "HTTP/1.0"
        else:
            # A token list ("keep-alive, Upgrade"), not one word as pywsgi compares it.
            tokens = {t.strip().lower() for t in conn.split(",")}
            if version == "HTTP/1.1":
                self.close_connection = "close" in tokens
            else:
                self.close_connection = "keep-alive" not in tokens
        return chunked

    def _target_into(self, env: dict) -> dict:
        """PATH_INFO, QUERY_STRING and CONTENT_TYPE of the request into ``env`` (pywsgi's
        rules; get_environ's and the lean loop's, geonode.web.handler); its header map."""
        path = self.path
        if "?" in path:
            path, query = path.split("?", 1)
        else:
            query = ""
        env["PATH_INFO"] = unquote_latin1(path) if "%" in path else path
        env["QUERY_STRING"] = query
        fields = self.headers._map
        ctype = fields.get("content-type")
        if ctype is not None:
            env["CONTENT_TYPE"] = ctype
        return fields

    def get_environ(self) -> dict:
        """pywsgi's ``WSGIHandler.get_environ``, the same keys in the same order, from the
        headers as parsed (``RequestHeaders``) and with what geonode adds."""
        env = self.server.get_environ()
        env["REQUEST_METHOD"] = self.command
        env["SCRIPT_NAME"] = ""
        fields = self._target_into(env)
        length = fields.get("content-length")
        if length:
            env["CONTENT_LENGTH"] = length
        env["SERVER_PROTOCOL"] = self.request_version
        client_address = self.client_address
        if isinstance(client_address, tuple):
            env["REMOTE_ADDR"] = str(client_address[0])
            env["REMOTE_PORT"] = str(client_address[1])
        self.headers.environ_into(env)
        sock = self.socket if env.get("HTTP_EXPECT") == "100-continue" else None
        coding = env.get("HTTP_TRANSFER_ENCODING")
        chunked = coding is not None and coding.lower() == "chunked"
        # pywsgi's _connection_upgrade_requested: such a request reads the raw socket file
        connection, upgrade = fields.get("connection"), fields.get("upgrade")
        handling_reads = not ((connection is not None and connection.lower() == "upgrade")
                              or (upgrade is not None and upgrade.lower() == "websocket"))
        self.wsgi_input = Input(self.rfile, self.content_length, socket=sock,
                                chunked_input=chunked)
        env["wsgi.input"] = self.wsgi_input if handling_reads else self.rfile
        env["wsgi.input_terminated"] = handling_reads
        if self._absolute_host is not None:
            # RFC 9112 3.2.2: the authority of an absolute-form target replaces Host.
            env["HTTP_HOST"] = self._absolute_host
        env["geonode.client_timeout"] = self._client_timeout
        inp = self.wsgi_input
        if inp.content_length or inp.chunked_input:
            if env["wsgi.input"] is not inp:
                # pywsgi hands an upgrade request the raw socket file, body framing and all,
                # yet still drains the body afterwards: a POST with "Connection: Upgrade" got
                # its chunks raw and the next request's first bytes eaten.
                env["wsgi.input"] = inp
                env["wsgi.input_terminated"] = True
            self.wsgi_input = _NoDrainOnClose(self, inp)
        return env

    def _handle_client_error(self, ex: BaseException) -> tuple[str, bytes]:
        if isinstance(ex, OptionsStar):
            return "200", _answer(200, "", "Allow: OPTIONS, GET, HEAD, POST, PUT, PATCH, DELETE\r\n")
        if isinstance(ex, RequestError):
            status, reason = ex.status, ex.reason
        else:
            # pywsgi's own ValueError/IOError for a request it cannot parse.
            status, reason = 400, str(ex) or type(ex).__name__
        self.log_error("(from %s) %s %s", self.client_address, status, reason)
        return str(status), _answer(status, reason)

    # ---- response -------------------------------------------------------------------
    def checked_start_response(self, status: str, headers: list, exc_info: Any = None) -> Any:
        """pywsgi's start_response after the checks of ``httprules`` (ValueError: a 500)."""
        known = _KNOWN_STATUS.get(status) if exc_info is None and type(status) is str else None
        if known is not None:
            # What pywsgi's start_response and the checks would conclude, from what they
            # concluded before about the same status and header pairs (apps repeat them).
            encoded: list[tuple[bytes, bytes]] = []
            length = None
            for header in headers:
                try:
                    pair = _KNOWN_HEADERS.get(header)
                except TypeError:
                    break  # unhashable: the full checks say what is wrong with it
                if pair is None:
                    if type(header) is not tuple or len(header) != 2:
                        break
                    name, value = header
                    if (name != "Content-Length" or length is not None or type(value) is not str
                            or not (value.isdigit() and value.isascii() and len(value) < 19)):
                        break  # anything else: the full checks below
                    length = value
                    pair = (b"Content-Length", value.encode())
                encoded.append(pair)
            else:
                self.status, code = known
                self._orig_status = status
                self.response_headers = encoded
                self.code = code
                self.provided_date = None
                self.provided_content_length = length
                if self.request_version == "HTTP/1.0":
                    encoded.append((b"Connection",
                                    b"close" if self.close_connection else b"keep-alive"))
                self._body_left = None
                if length is not None and self.command != "HEAD":
                    self._body_left = int(length)
                return self.write
        if not (exc_info and self.headers_sent):
            if status not in GOOD_STATUS:
                check_status(status)
            check_response_headers(headers)
        write = WSGIHandler.start_response(self, status, headers, exc_info)
        length = self.provided_content_length
        self._body_left = None
        code = self.code
        if length is not None and self.command != "HEAD" and code not in (204, 304):
            self._body_left = int(length)
        if exc_info is None and len(_KNOWN_HEADERS) < _KNOWN_MAX:
            _learn(status, code, headers)
        return write

    def clip_body(self, data: bytes) -> bytes:
        """``data`` cut to what the app's Content-Length still allows."""
        left = self._body_left
        if left is None:
            return data
        if len(data) > left:
            if not self.close_connection:
                log.error("%s %s: the application sent more than its Content-Length of %s; "
                          "extra bytes dropped, connection closed", self.command, self.path,
                          self.provided_content_length)
            self.close_connection = True
            data = data[:left]
        self._body_left = left - len(data)
        return data

    def check_body_complete(self) -> None:
        """After the app's last chunk: a body shorter than its Content-Length closes."""
        if self._body_left and not self.close_connection:
            log.error("%s %s: the application sent %d bytes less than its Content-Length of "
                      "%s; connection closed", self.command, self.path, self._body_left,
                      self.provided_content_length)
        if self._body_left:
            self.close_connection = True

    def _write(self, data: bytes) -> None:
        data = self.clip_body(data)
        if data:
            super()._write(data)

    def finalize_headers(self) -> None:
        # pywsgi's finalize_headers, with the Date formatted once a second, not per response
        if self.provided_date is None:
            self.response_headers.append((b"Date", http_date()))
        code = self.code
        self.connection_upgraded = code == 101
        if code != 304 and code != 204 and self.provided_content_length is None:
            # the reply has a body: it needs a Content-Length or chunked framing
            if hasattr(self.result, "__len__"):
                total = sum(len(chunk) for chunk in self.result)
                self.response_headers.append((b"Content-Length", b"%d" % total))
            else:
                self.response_use_chunked = (not self.connection_upgraded
                                             and self.request_version != "HTTP/1.0")
                if self.response_use_chunked:
                    self.response_headers.append((b"Transfer-Encoding", b"chunked"))
        if (self.request_version == "HTTP/1.0" and not self.close_connection
                and self.command != "HEAD" and self.code not in (204, 304)
                and self.code >= 200 and not self.response_use_chunked
                and not any(h.lower() == b"content-length" for h, _ in self.response_headers)):
            # No length and no chunked in HTTP/1.0: the close is the body's end.
            self._close_after_response()
        inp = self.wsgi_input
        if type(inp) is _NoDrainOnClose and inp.input.socket is not None:
            # "Expect: 100-continue" and the answer came before the body was asked for: the
            # client holds its body back (or sends it anyway), so whatever comes next is not
            # a request line we can trust. RFC 9110 10.1.1: say so and close; no late 100.
            inp.input.socket = None
            self._close_after_response()

    def _close_after_response(self) -> None:
        self.close_connection = True
        self.response_headers = [(h, v) for h, v in self.response_headers
                                 if h.lower() != b"connection"]
        self.response_headers.append((b"Connection", b"close"))
