"""The pywsgi handler class for every geonode web endpoint, under WebServer and gunicorn alike.

Upgrade hook: it runs the WSGI app exactly like pywsgi's plain ``WSGIHandler`` and, when the
request asks for a WebSocket upgrade, hands the app an upgrader at
``environ["geonode.websocket"]``. A path service that wants the WebSocket calls
``upgrader.accept(...)`` (see ``geonode.websocket.handshake``); our own framing layer
(``geonode.websocket``) then owns the connection. Once upgraded, the handler writes nothing
more and closes the TCP connection when the app returns.

Plain HTTP, for every server it runs under: TCP_NODELAY on the connection, request headers
parsed without the ``email`` package, HEAD answered without a body, small responses sent in
one write with their headers, no per-request pywsgi log line, and a connection that asked
for keep-alive is closed after its response once the server stopped accepting (graceful stop).
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from gevent import Greenlet, get_hub
from gevent.pool import PoolFull
from gevent.pywsgi import MAX_REQUEST_LINE, Input, WSGIHandler
from gevent.socket import socket as GeventSocket
from geventwebsocket.handler import WebSocketHandler
from greenlet import getcurrent

from geonode.endpoints import set_nodelay
from geonode.handoff import admit
from geonode.web.httprules import RequestError, check_field, check_request_line
from geonode.web.strict import IdleClock, OptionsStar, StrictHTTP
from geonode.websocket.frames import CLOSE_GOING_AWAY
from geonode.websocket.handshake import Upgrader, wants_upgrade

__all__ = ["Handler", "RequestHeaders"]

# Response bodies up to this size go out in the same write as the headers.
_COALESCE_MAX = 256 * 1024
# Writes larger than this are sent piece by piece when the socket has a timeout (_sendall).
_PIECEWISE_MIN = 64 * 1024

_MAX_HEADER_LINE = 65536
_MAX_HEADERS = 100
_MAX_HEADER_BYTES = 65536
# Lingering close (RFC 9112 9.6): after a response the server closes on, input still arriving
# is read and dropped for this long, and at most this much, before the socket closes. Closing
# with unread input makes the kernel send a reset, which can discard the response the client
# has not read yet (a 408 to a slow head, a 413 to an upload still being sent).
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 1 << 20
# Header names already found to be tokens (clients send the same few every time). Bounded in
# count and in name length: a client's made-up names (up to a 64 KiB line each) must not make
# the process keep megabytes for good.
_GOOD_NAMES: dict[str, str] = {}  # (-> the name in lower case)
# RequestHeaders.dups of a head without a repeated name (read only)
_NO_DUPS: set[str] = frozenset()  # type: ignore[assignment]
_CACHED_NAMES = 1024
_CACHED_NAME_LENGTH = 64
# Header name -> its environ key (pywsgi's rule, see RequestHeaders.environ_into); "" for the
# names that get no HTTP_ key. Bounded like _GOOD_NAMES.
_CGI_KEYS: dict[str, str] = {}
_NO_HTTP_KEY = ("CONTENT_TYPE", "CONTENT_LENGTH")

_http_log = logging.getLogger("geonode.http")

# The methods of pywsgi's per-request chain that Handler._serve does in place of calling them
_LEAN_STEPS = ("handle_one_response", "run_application", "get_environ",
               "read_request", "read_requestline", "MessageClass", "log_request",
               "take_headers", "_pywsgi_request")


def _run_detached(ws: Any, run: Callable, args: tuple, connections: Any, sock: Any) -> None:
    try:
        run(*args)
    finally:
        if connections is not None:
            connections.discard_websocket(ws)
        ws.release()
        # the last reference: the descriptor closes now (see detach_websocket)
        sock._decref_socketios()


def _noop_write(data) -> None:
    """After an upgrade the socket belongs to the WebSocket: HTTP writes are dropped."""


def _add_line(items: list[tuple[str, str]], text: str) -> None:
    """One header line (its line end removed) onto ``items``, or :class:`RequestError`."""
    if text[0] in " \t":
        if not items:
            raise RequestError(400, "continuation line before any header")
        name, value = items[-1]
        folded = text.strip(" \t")
        check_field(name, folded)
        items[-1] = (name, f"{value} {folded}")  # obsolete line folding
        return
    name, sep, value = text.partition(":")
    if not sep:
        raise RequestError(400, f"invalid header line {text[:60]!r}")
    value = value.strip(" \t")
    # Known names and printable values pass at C speed; the regexes judge the rest.
    if name not in _GOOD_NAMES or not (value.isprintable() or not value):
        check_field(name, value)
        if len(_GOOD_NAMES) < _CACHED_NAMES and len(name) <= _CACHED_NAME_LENGTH:
            _GOOD_NAMES[name] = name.lower()
    items.append((name, value))


class RequestHeaders:
    """Request headers with the interface pywsgi's handler uses, parsed without ``email``.

    pywsgi parses headers with ``http.client.parse_headers`` (the email package): about a third
    of the hub's time per request. This parser is strict where that one is lenient: a line
    without a colon, or whitespace inside a field name, makes the request a 400.
    """

    __slots__ = ("_items", "_map", "dups", "status")

    def __init__(self, items: list[tuple[str, str]], status: str = "") -> None:
        self._items = items
        self.status = status  # pywsgi checks it; errors are raised as RequestError instead
        first: dict[str, str] = {}
        dups: set[str] = set()
        for name, value in items:
            lname = name.lower()
            if lname in first:
                dups.add(lname)
            else:
                first[lname] = value
        self._map = first
        #: lower-case names given more than once (framing rules look at them)
        self.dups = dups

    @classmethod
    def parse(cls, rfile: Any) -> RequestHeaders:
        """Read the header section; :class:`RequestError` for anything RFC 9112 forbids.

        Bare LF line ends are accepted (RFC 9112 2.2 allows it) and obs-fold lines are joined
        with a space (RFC 9112 5.2); a CR or NUL inside a line never is."""
        items: list[tuple[str, str]] = []
        total = 0
        while True:
            line = rfile.readline(_MAX_HEADER_LINE + 1)
            if len(line) > _MAX_HEADER_LINE:
                raise RequestError(400, "header line too long")
            if line in (b"\r\n", b"\n"):
                return cls(items)
            if not line.endswith(b"\n"):
                raise RequestError(400, "connection closed inside the request headers")
            total += len(line)
            if total > _MAX_HEADER_BYTES:
                raise RequestError(400, f"request headers larger than {_MAX_HEADER_BYTES} bytes")
            if len(items) >= _MAX_HEADERS:
                raise RequestError(400, f"more than {_MAX_HEADERS} headers")
            text = line.decode("latin-1")
            _add_line(items, text[:-2] if text[-2:] == "\r\n" else text[:-1])

    @classmethod
    def from_lines(cls, lines: list[str], start: int) -> RequestHeaders:
        """``parse`` for a head already whole in memory: ``lines[start:]`` are its header
        lines without their line ends (the caller bounds their size; the count is checked
        here, as ``parse`` checks it)."""
        items: list[tuple[str, str]] = []
        first: dict[str, str] = {}
        dups: set[str] = _NO_DUPS
        good = _GOOD_NAMES
        plain = True
        count = len(lines) - start > _MAX_HEADERS  # (fewer lines: fewer headers)
        for text in lines[start:]:
            if count and len(items) >= _MAX_HEADERS:
                raise RequestError(400, f"more than {_MAX_HEADERS} headers")
            # What _add_line does for a known name and a printable value, inline (a request
            # has a few such lines), and __init__'s map with it; the rest (folding, errors,
            # new names) goes through _add_line, and then __init__ makes the map.
            name, sep, value = text.partition(":")
            value = value.strip(" \t")
            lname = good.get(name)
            if lname is not None and sep and (value.isprintable() or not value):
                items.append((name, value))
                if lname in first:
                    if dups is _NO_DUPS:
                        dups = set()
                    dups.add(lname)
                else:
                    first[lname] = value
            else:
                _add_line(items, text)
                plain = False
        if not plain:
            return cls(items)
        headers = cls.__new__(cls)
        headers._items = items
        headers._map = first
        headers.dups = dups
        headers.status = ""
        return headers

    def environ_into(self, env: dict) -> None:
        """The ``HTTP_*`` keys pywsgi's ``WSGIHandler._headers`` gives an environ, from the
        parsed items (pywsgi re-joins and re-splits every line): a name with ``_`` gets none
        (it could pose as the same name with ``-``), Content-Type and Content-Length get only
        their CGI keys (set by the caller), a repeated name is joined with ``,`` (cookies:
        ``; ``) onto what ``env`` holds."""
        keys = _CGI_KEYS
        for name, value in self._items:
            key = keys.get(name)
            if key is None:
                key = "" if "_" in name else name.replace("-", "_").upper()
                key = "" if key in _NO_HTTP_KEY or not key else "HTTP_" + key
                if len(keys) < _CACHED_NAMES and len(name) <= _CACHED_NAME_LENGTH:
                    keys[name] = key
            if not key:
                continue
            value = value.strip()
            if key in env:
                env[key] += ("; " if "COOKIE" in key else ",") + value
            else:
                env[key] = value

    def get(self, name: str, default: Any = None) -> Any:
        return self._map.get(name.lower(), default)

    getheader = get

    def __getitem__(self, name: str) -> Any:
        return self._map.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map

    def __delitem__(self, name: str) -> None:
        lname = name.lower()
        self._map.pop(lname, None)
        self._items = [(k, v) for k, v in self._items if k.lower() != lname]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def keys(self) -> list[str]:
        return [k for k, _ in self._items]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._items)

    @property
    def headers(self):
        for name, value in self._items:
            yield f"{name}: {value}\r\n"

    @property
    def typeheader(self) -> str | None:
        return self._map.get("content-type")


class _Readable:
    """The lean loop's wait for a keep-alive connection's next request, once its read buffer
    is empty: one libev io watcher per connection, left started between waits.

    Reading first and waiting on EAGAIN (gevent's socket) costs a request a recv that finds
    nothing (the system call, an exception, gevent's wait: a watcher started and stopped per
    wait) and an ``epoll_ctl`` that fails (libev re-adding a descriptor a stopped watcher
    left in its epoll set): at -c10 the hello request's next recv found nothing ~98 % of the
    time (bench/README.md, issue 15, fifth pass). A readiness that comes while the
    connection is not waiting (a pipelined request, read by then from the buffer) stops the
    watcher, so a level-triggered event cannot spin the loop; the next wait starts it
    again."""

    __slots__ = ("greenlet", "hub", "watcher", "waiting")

    def __init__(self, fd: int) -> None:
        self.greenlet = getcurrent()
        self.hub = get_hub()
        self.watcher = self.hub.loop.io(fd, 1)
        self.waiting = False

    def wait(self) -> None:
        """Until the socket is readable (or an EOF, a reset) or the greenlet is thrown at
        (IdleClock's timeout, a kill); may return early: the read after it is gevent's."""
        watcher = self.watcher
        if not watcher.active:
            watcher.start(self._ready)
        self.waiting = True
        try:
            self.hub.switch()
        finally:
            self.waiting = False

    def _ready(self) -> None:
        if self.waiting:
            self.greenlet.switch()
        else:
            self.watcher.stop()

    def stop(self) -> None:
        """Before the socket is read or waited on another way (pywsgi's chain, an upgrade)."""
        self.watcher.stop()

    def close(self) -> None:
        self.watcher.stop()
        self.watcher.close()


# Why gevent-websocket's WebSocketHandler is the base (the design's upgrade hook) although none
# of its code runs here: the methods of it that pywsgi calls (run_application, start_response,
# log_request) are overridden below, skipping it for WSGIHandler's (or doing nothing), so it
# never upgrades on its own (its upgrade_* methods are reached only from its run_application)
# nor logs. What it contributes is its type: a geonode handler *is* a ``WebSocketHandler`` for
# code that checks (``isinstance``) which handler serves it.
class Handler(StrictHTTP, WebSocketHandler):
    """pywsgi handler: plain WSGI handling plus an opt-in WebSocket upgrade hook."""

    # pywsgi's (untyped) attributes: the status line (bytes once the app started the
    # response, a text note after a socket error) and the code
    status: Any
    code: Any
    #: the connection's socket (None once detach_websocket moved it to a greenlet of its own)
    socket: Any

    #: set by the upgrader once the 101 response went out
    websocket_upgraded = False
    #: from a request line read until its response is done; False while the connection waits
    #: for its next request (a graceful stop closes those at once: geonode.web.shutdown)
    in_request = False
    #: request lines read on this connection: 0 while it waits for its first request (a
    #: graceful stop gives that one a moment to come: geonode.web.shutdown)
    requests_read = 0

    #: the server's geonode.metrics.HttpStats when the node counts requests, else None
    http_stats: Any = None

    #: _respond's environ keys shared by every request of the connection (made by its
    #: first plain request: an upgraded connection's handler does without it)
    _shared_environ: dict | None = None
    #: the lean loop's wait for the next request (made by its first wait on an empty buffer)
    _readable: _Readable | None = None

    #: serve requests through _serve: true unless a subclass overrides one of the steps of
    #: pywsgi's chain that _serve does itself (gunicorn's handler: its get_environ and
    #: access log), for it would be skipped there
    _lean = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._lean = all(getattr(cls, name) is getattr(Handler, name) for name in _LEAN_STEPS)

    def handle(self) -> None:
        # Once per connection, whichever server accepted it (node or gunicorn). Connections
        # arrive in bursts (a thousand WebSocket handshakes at once): a new one waits for the
        # next pass of the loop once this one has had its slice, so requests on connections
        # already open are not held up by the whole burst.
        # Tracked before admit(): a graceful stop that comes while this connection waits for
        # its turn must know it was accepted (its request is served, not dropped).
        connections = getattr(self.server, "connections", None)
        if connections is not None:
            connections.add(self)
        try:
            admit()
            set_nodelay(self.socket)
            self.http_stats = getattr(self.server, "http_stats", None)
            return super().handle()
        finally:
            if connections is not None:
                connections.discard(self)
            clock = self._idle
            if clock is not None:
                clock.close()

    def detach_websocket(self, ws: Any, run: Callable, args: tuple) -> bool:
        """``Upgrader.detach``: the upgraded connection continues in a greenlet of its own.

        The new greenlet takes a slot of the endpoint's pool (``max_connections``) before this
        request's is freed, so the cap still counts the connection; with the pool full the
        request keeps it instead. The socket object goes with it: the server closes it when
        the request greenlet ends (gevent's ``StreamServer.do_close``), but a socket closes
        only once the readers ``makefile`` made of it are closed too, so the new greenlet
        holds the socket as such a reader does (its count of them, ``_io_refs``; the reader
        itself was ~0.4 KiB and 4 objects for the cyclic GC per session) for the session's
        life and lets go of it last. Not
        under TLS: there the request keeps the connection (a TLS connection's memory is
        dominated by OpenSSL's anyway)."""
        sock = self.socket
        env = self.environ
        if type(sock) is not GeventSocket or env.get("CONTENT_LENGTH") \
                or env.get("HTTP_TRANSFER_ENCODING"):
            return False  # (a body on the upgrade request: pywsgi still reads it afterwards)
        # Before: a duplicate descriptor, the server's close of the original deferred by the
        # request's reader, which lives in a cycle (handler, environ, upgrader): the original
        # stayed open, the connection's socket with it, until the cyclic GC freed the reader,
        # minutes after the session on a quiet node (bench/soak.py, issue 13). A new socket
        # object on the same descriptor lost wake-ups now and then (libev's per-descriptor
        # state); the very same object has neither problem.
        connections = getattr(self.server, "connections", None)
        greenlet = Greenlet(_run_detached, ws, run, args, connections, sock)
        pool = getattr(self.server, "pool", None)
        if pool is not None:
            try:
                pool.add(greenlet, blocking=False)
            except PoolFull:
                return False
        # What makefile() does for its reader (socket.socket's own protocol): the server's
        # close() of the socket, when this request ends, waits for _decref_socketios().
        sock._io_refs += 1
        ws.rebind(sock)
        # The request's reader (8 KiB of buffer): what it had read ahead went to the
        # WebSocket at the accept; closed, it no longer holds the socket open.
        self.rfile.close()
        # pywsgi neither closes nor reads a handler's socket once it is None.
        self.socket = None
        self.close_connection = True
        if connections is not None:
            connections.add_websocket(ws)
        greenlet.start()
        return True

    def handle_one_request(self):
        # pywsgi's handle() calls this until it returns None; the lean loop serves every
        # request of the connection in one call (see _serve).
        if self._lean:
            try:
                return self._serve()
            finally:
                readable = self._readable
                if readable is not None:
                    self._readable = None
                    readable.close()  # before pywsgi closes the socket
        return self._pywsgi_request()

    def _serve(self) -> None:  # noqa: C901 - pywsgi's request chain in one loop: a branch per case it hands back to the chain (bench/http, issue 15)
        """The connection's requests, one after the other, until it is to close (None).

        pywsgi's chain per request (handle_one_request, read_requestline, read_request,
        MessageClass, get_environ, handle_one_response, run_application, a dozen Python
        frames and three clock reads) in one loop, for the request every client sends: a
        head already whole in the read buffer, no body, no upgrade, no ``Expect`` (bench/
        README.md, issue 15, fourth pass). The checks are the same functions the chain
        calls (check_request_line, RequestHeaders' line rules and limits, framing), so a
        request either path refuses gets the same answer. The rest takes pywsgi's chain,
        for that request only:

        - a head not yet whole in the buffer (trickling in: the request_head_timeout clock,
          408), empty lines before the request line, a request line of MAX_REQUEST_LINE or
          more (414): read by pywsgi's chain from the start (nothing is consumed here first);
        - a body (Content-Length, chunked: pywsgi's Input and its drain, _NoDrainOnClose), an
          upgrade request (Upgrade, Connection: upgrade: the WebSocket hook) or ``Expect``
          (100-continue): parsed here, answered by pywsgi's get_environ and
          handle_one_response.
        """
        server = self.server
        rfile = self.rfile
        idle = getattr(server, "keepalive_timeout", None)
        client_timeout = getattr(server, "client_timeout", None)
        stats = self.http_stats
        # the read buffer is known to be empty (the last request was all it held): wait for
        # the socket to be readable before reading (_Readable). Not under TLS: OpenSSL may
        # hold the rest of a record the kernel no longer reports readable.
        drained = False
        plain = type(self.socket) is GeventSocket
        while True:
            sock = self.socket
            if sock is None or rfile.closed:
                return None
            try:
                if idle is not None:
                    # StrictHTTP.read_requestline's wait (keepalive_timeout by the IdleClock)
                    clock = self._idle
                    if clock is None:
                        clock = self._idle = IdleClock(idle)
                    clock.start_wait()
                    sock.timeout = None
                    try:
                        if drained:
                            readable = self._readable
                            if readable is None:
                                readable = self._readable = _Readable(sock.fileno())
                            readable.wait()
                        head = rfile.peek(1)
                    finally:
                        clock.waiting = False
                        sock.timeout = client_timeout
                else:
                    # (a socket timeout, client_timeout, bounds this wait: gevent's read keeps it)
                    if drained and sock.timeout is None:
                        readable = self._readable
                        if readable is None:
                            readable = self._readable = _Readable(sock.fileno())
                        readable.wait()
                    head = rfile.peek(1)
            except OSError:
                return None  # pywsgi: a socket error while waiting closes quietly
            drained = False
            if not head:
                return None
            # The head's end: the first empty line (CRLF or a bare LF, RFC 9112 2.2).
            crlf = head.find(b"\n\r\n")
            lf = head.find(b"\n\n", 0, crlf + 1) if crlf >= 0 else head.find(b"\n\n")
            if lf >= 0:
                end, size = lf + 1, lf + 2
            elif crlf >= 0:
                end, size = crlf + 1, crlf + 3
            else:
                end = size = 0
            if (not size or head[0] == 13 or head[0] == 10 or size > _MAX_HEADER_BYTES
                    or head.find(b"\n") + 1 >= MAX_REQUEST_LINE):
                if self._readable is not None:
                    self._readable.stop()
                if self._pywsgi_request() is None:
                    return None
                continue
            if self._head_deadline is not None:
                self._head_deadline = None
            self.in_request = True
            self.requests_read += 1
            self.response_length = 0
            text = head[:end].decode("latin-1")
            rfile.read(size)  # (from the buffer: no wait)
            try:
                if text.count("\n") == text.count("\r\n"):
                    lines = text.split("\r\n")
                else:
                    lines = [t[:-1] if t[-1:] == "\r" else t for t in text.split("\n")]
                lines.pop()  # (after the last line end)
                line = lines[0]
                method, target, version, absolute = check_request_line(line)
                self.requestline = line.rstrip()
                self.command, self.path, self.request_version = method, target, version
                if absolute is not None:
                    self._absolute_host = absolute.host
                elif self._absolute_host is not None:
                    self._absolute_host = None
                if target == "*":
                    raise OptionsStar(200, "OPTIONS *")
                headers = RequestHeaders.from_lines(lines, 1)
                fields = headers._map
                if (headers.dups or "content-length" in fields or "connection" in fields
                        or "transfer-encoding" in fields):
                    chunked = self.take_headers(headers, method, version)
                else:
                    # what take_headers concludes for a head without those (most requests)
                    self.headers = headers
                    self.content_length = None
                    self.close_connection = version == "HTTP/1.0"
                    chunked = False
            except Exception as ex:  # noqa: BLE001 - pywsgi's: every parse error is the client's
                self.in_request = False
                self.status, body = self._handle_client_error(ex)
                try:
                    sock.sendall(body)
                except OSError:
                    return None  # the client is gone: nothing to linger for
                self._linger()
                return None
            if (chunked or self.content_length or "upgrade" in fields or "expect" in fields
                    or fields.get("connection", "").lower() == "upgrade"):
                # pywsgi's environ and response (see the docstring)
                if self._readable is not None:
                    self._readable.stop()
                self.request_started = time.monotonic()  # the opening handshake's clock
                try:
                    self.environ = self.get_environ()
                    self.application = server.application
                    self.handle_one_response()
                finally:
                    self.in_request = False
            else:
                self._respond(server, stats, client_timeout)
                self.in_request = False
                # (no body: the app read nothing from rfile; peek returned all it held)
                drained = plain and len(head) == size
            if self.close_connection:
                if self.headers_sent and not self.websocket_upgraded and self.socket is not None:
                    self._linger()
                return None

    def _respond(self, server: Any, stats: Any, client_timeout: float | None) -> None:
        """_serve's answer to a request without a body: WSGIHandler.handle_one_response
        with Handler.run_application's one-chunk write, the same state reset, the same
        error handling, and Handler.handle_one_response's count and graceful-stop close."""
        env = self.environ = self._environ(server, client_timeout)
        app = self.application = server.application
        self.status = None
        self.headers_sent = False
        self.response_use_chunked = False
        self.connection_upgraded = False
        started = time.monotonic() if stats is not None else 0.0
        try:
            self._call_app(app, env)
        except OSError as ex:
            if ex.args and ex.args[0] in self.ignored_socket_errors:
                self.close_connection = True  # the client went (pywsgi: quietly)
            else:
                self.handle_error(*sys.exc_info())
        except:  # noqa: E722 - pywsgi's: whatever the app raised is a 500
            self.handle_error(*sys.exc_info())
        if stats is not None:
            stats.observe(env.get("SCRIPT_NAME") or "/", self.code or 0,
                          time.monotonic() - started)
        if server.closed:
            self.close_connection = True  # graceful stop (see handle_one_response)

    def _environ(self, server: Any, client_timeout: float | None) -> dict:
        """StrictHTTP.get_environ's environ for a request without a body, upgrade or Expect
        (the same keys, not in pywsgi's order): those every request of the connection shares
        are made once, the request's own added to a copy."""
        shared = self._shared_environ
        if shared is None:
            shared = server.get_environ()
            shared["SCRIPT_NAME"] = ""
            client_address = self.client_address
            if isinstance(client_address, tuple):
                shared["REMOTE_ADDR"] = str(client_address[0])
                shared["REMOTE_PORT"] = str(client_address[1])
            # No body: an Input that reads nothing and has nothing to drain (the WSGI host
            # replaces it anyway), so one for the connection
            shared["wsgi.input"] = Input(self.rfile, None)
            shared["wsgi.input_terminated"] = True
            shared["geonode.client_timeout"] = client_timeout
            self._shared_environ = shared
        env = shared.copy()
        env["REQUEST_METHOD"] = self.command
        fields = self._target_into(env)
        if self.content_length is not None:
            env["CONTENT_LENGTH"] = fields["content-length"]  # ("0": no body)
            env["wsgi.input"] = Input(self.rfile, 0)
        env["SERVER_PROTOCOL"] = self.request_version
        self.headers.environ_into(env)
        self.wsgi_input = env["wsgi.input"]
        if self._absolute_host is not None:
            # RFC 9112 3.2.2: the authority of an absolute-form target replaces Host.
            env["HTTP_HOST"] = self._absolute_host
        return env

    def _pywsgi_request(self):
        """One request through pywsgi's chain."""
        try:
            result = super().handle_one_request()
        finally:
            self.in_request = False
        if isinstance(result, tuple):
            # An error answer to a request we could not read (pywsgi would send it and close
            # at once): send it here so the close can linger.
            self.status, body = result
            try:
                self.socket.sendall(body)
            except OSError:
                return None  # the client is gone: nothing to linger for
            self._linger()
            return None
        if (result is None and self.close_connection and self.headers_sent
                and not self.websocket_upgraded and self.socket is not None):
            self._linger()
        return result

    def _linger(self) -> None:
        """Half-close, then drop what the client still sends until it closes too (bounded)."""
        if self.server.closed:
            return  # a graceful stop does not wait for clients
        sock = self.socket
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + _LINGER_SECONDS
            left = _LINGER_BYTES
            while left > 0:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    break
                sock.settimeout(wait)
                data = sock.recv(min(left, 65536))
                if not data:
                    break
                left -= len(data)
        except OSError:
            pass  # reset or timed out: the close follows either way

    def MessageClass(self, rfile: Any, *args: Any) -> RequestHeaders:  # noqa: N802 - pywsgi's name
        return RequestHeaders.parse(rfile)

    def read_requestline(self):
        line = super().read_requestline()
        if line:
            self.in_request = True
            self.requests_read += 1
        else:
            self.in_request = False
        # The opening handshake clock (``open_handshake_timeout``) starts with the request line.
        self.request_started = time.monotonic()
        return line

    def handle_one_response(self) -> None:
        super().handle_one_response()
        stats = self.http_stats
        if stats is not None:
            # After routing, SCRIPT_NAME is the path service's mount (dispatch rewrites the
            # environ in place). An upgraded request lasted as long as its WebSocket: counted,
            # but kept out of the durations.
            upgraded = self.websocket_upgraded
            stats.observe(self.environ.get("SCRIPT_NAME") or "/",
                          101 if upgraded else (self.code or 0),
                          None if upgraded else self.time_finish - self.time_start)
        if self.server.closed:
            # The server stopped accepting (graceful stop): this response is the connection's
            # last, so the stop does not wait for the client's next keep-alive request.
            self.close_connection = True

    def run_application(self):
        # Never gevent-websocket's automatic upgrade: the app decides (and validates) itself.
        self.websocket_upgraded = False
        env = self.environ
        if "HTTP_UPGRADE" in env and wants_upgrade(env):  # (most requests ask for none)
            return self._run_upgradable(env)
        self._call_app(self.application, env)

    def _call_app(self, app: Any, env: dict) -> None:
        """pywsgi's run_application with its process_result's usual case inlined: a response
        of one non-empty chunk (what the WSGI host returns for every response it got whole)
        goes out through _write_with_headers as pywsgi's write() would send it, three Python
        calls fewer per request (bench/README.md, issue 15). For a request that asks for no
        upgrade (run_application's and _serve's): start_response's WebSocket case cannot
        arise, so the app gets the checked start_response directly."""
        try:
            result = self.result = app(env, self.checked_start_response)
            if (type(result) is list and len(result) == 1 and result[0] and self.status
                    and not self.headers_sent and self.code != 204 and self.code != 304):
                self._write_with_headers(result[0])
                if self.response_use_chunked:
                    self._sendall(b"0\r\n\r\n")
                if self._body_left:
                    self.check_body_complete()
            else:
                self.process_result()
        finally:
            close = getattr(self.result, "close", None)
            try:
                if close is not None:
                    close()
            finally:
                self.result = None

    def _run_upgradable(self, env: dict) -> None:
        """run_application for a request that asks for a WebSocket upgrade."""
        upgrader = env["geonode.websocket"] = Upgrader(self)
        try:
            return WSGIHandler.run_application(self)
        finally:
            ws = upgrader.websocket if not upgrader.detached else None
            if ws is not None and not ws.closed:
                # The app returned with its WebSocket still open: close it properly.
                ws.close(CLOSE_GOING_AWAY, "going away")
            # handler -> environ -> upgrader -> handler (and -> the WebSocket) is a reference
            # cycle: broken, the request and its WebSocket are freed by reference counting at
            # once, not whenever the cyclic GC next runs (the node freezes what it built at
            # start-up, and a full collection walks every live session).
            upgrader.handler = upgrader.websocket = None
            env.pop("geonode.websocket", None)

    def start_response(self, status, headers, exc_info=None):
        if self.websocket_upgraded:
            # The app returned after its WebSocket session; there is no HTTP response left.
            return _noop_write
        return self.checked_start_response(status, headers, exc_info)

    def write(self, data):
        if self.websocket_upgraded:
            return None
        return WSGIHandler.write(self, data)

    def process_result(self):
        if self.websocket_upgraded:
            # Consume (and close, via run_application) whatever the app returned, write nothing.
            for _ in self.result:
                pass
            return None
        WSGIHandler.process_result(self)
        if self._body_left:
            self.check_body_complete()
        return None

    def log_request(self) -> None:
        # pywsgi formats a log line per request even with logging off; the access log is
        # geonode's own middleware (options.access_log), or gunicorn's (its handler class
        # comes first in geonode.gunicorn.GunicornHandler).
        pass

    def finalize_headers(self) -> None:
        super().finalize_headers()
        if self.server.closed and not self.close_connection and not self.websocket_upgraded:
            # Graceful stop: tell the client this response is the connection's last (RFC 9112
            # 9.6), so it does not send its next request into a closing connection (an
            # HTTP/1.0 keep-alive answer loses the "keep-alive" pywsgi gave it).
            self._close_after_response()
        if self.command == "HEAD":
            # The headers describe the GET body; no body (and no terminating chunk) follows.
            self.response_use_chunked = False

    def _write(self, data: bytes) -> None:
        if self.command == "HEAD":
            return
        super()._write(data)

    def _sendall(self, data: bytes | bytearray) -> None:
        # gevent's sendall holds the whole call to the socket timeout (client_timeout): for a
        # body that is a minimum download speed (8 MiB in 60 s), which cuts honest clients
        # on slow links. Sent piece by piece, the timeout bounds each wait for progress: a
        # slow reader gets everything, one that stops reading is dropped after the timeout.
        # The first send is tried as is: it takes any ordinary response whole (gevent's
        # sendall asks the socket for its buffer size, a system call, and reads the clock
        # twice before sending anything).
        sock = self.socket
        try:
            try:
                sent = sock.send(data)
                if sent < len(data):
                    view = memoryview(data)[sent:]
                    if len(view) <= _PIECEWISE_MIN or sock.timeout is None:
                        sock.sendall(view)
                    else:
                        while view:
                            view = view[sock.send(view):]
            except OSError as ex:
                # pywsgi's note of a failed write (the status a log line would show)
                self.status = f"socket error: {ex}"
                if self.code > 0:
                    self.code = -self.code
                raise
        except TimeoutError:
            # The client's doing, not ours: one line, no traceback; ECONNRESET is the error
            # pywsgi closes the connection on quietly.
            _http_log.info("(from %s) %s %s: the client took nothing for %s s (client_timeout):"
                           " response cut off, connection closed", self.client_address,
                           self.command, self.path, sock.timeout)
            raise ConnectionResetError(errno.ECONNRESET, "client stopped reading") from None
        self.response_length += len(data)
        return None

    def _write_with_headers(self, data: bytes) -> None:
        # pywsgi sends the headers and the first chunk in two writes; one write is one syscall
        # less per response and leaves nothing for Nagle/delayed-ACK to hold back.
        if not data or len(data) > _COALESCE_MAX or self.command == "HEAD":
            return super()._write_with_headers(data)
        data = self.clip_body(data)
        self.headers_sent = True
        self.finalize_headers()
        out = bytearray(b"HTTP/1.1 ")
        out += self.status
        out += b"\r\n"
        for header, value in self.response_headers:
            out += header
            out += b": "
            out += value
            out += b"\r\n"
        out += b"\r\n"
        if self.response_use_chunked:
            out += b"%x\r\n" % len(data)
            out += data
            out += b"\r\n"
        else:
            out += data
        self._sendall(out)
