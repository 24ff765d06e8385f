"""The graceful stop shared by geonode's own server and the gunicorn worker.

Every connection a geonode handler serves is in one of three states, which decide what a stop
does to it:

idle       between requests: closed at once, unless bytes of its next request are already
           waiting (then it is served, with ``Connection: close``). A keep-alive client that
           sends its next request right after sees the connection close, which HTTP clients
           handle by retrying on a new one; waiting for it instead would hold the stop for the
           client's keep-alive timeout (gunicorn: its whole ``graceful_timeout``).
new        accepted, no request read yet (its bytes may still be on the way, or its greenlet
           not yet started): a client cannot retry a request that failed on a fresh
           connection, so the stop first waits for those requests, at most
           ``FIRST_REQUEST_SECONDS`` (within the grace), and serves them with
           ``Connection: close``; a connection still silent then is closed as idle.
request    a plain HTTP request in flight: it finishes (bounded by the grace period); its
           response is the connection's last (``Connection: close``).
websocket  upgraded: its session ends when the routers close (WAMP: GOODBYE
           ``wamp.close.system_shutdown``); any other WebSocket is closed with 1001.

``graceful_stop`` runs those steps in order; both servers call it with their own grace, their
own router-closing callable and their own "second signal" flag.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
from gevent import select as gselect

from geonode.websocket.frames import CLOSE_GOING_AWAY

__all__ = ["Connections", "graceful_stop", "connections_of"]

log = logging.getLogger("geonode.web")

#: How long closing WebSockets get for their closing handshakes before connections are dropped.
CLOSE_SECONDS = 2.0
#: How long a connection accepted just before a stop gets to send its first request.
FIRST_REQUEST_SECONDS = 1.0


class Connections:
    """The handlers (one per connection) a server runs now. Handlers add/discard themselves."""

    def __init__(self) -> None:
        self._handlers: set[Any] = set()
        # WebSockets whose request ended (``Upgrader.detach``): no handler tracks them any more.
        self._websockets: set[Any] = set()
        # Sessions of other protocols on this server's connections (a universal transport's
        # RawSocket and MQTT): the routers end them; counted so that every greenlet of the
        # server's pool is a known connection (see ``_not_started``).
        self._sessions: set[Any] = set()

    def add(self, handler: Any) -> None:
        self._handlers.add(handler)

    def discard(self, handler: Any) -> None:
        self._handlers.discard(handler)

    def add_websocket(self, ws: Any) -> None:
        self._websockets.add(ws)

    def discard_websocket(self, ws: Any) -> None:
        self._websockets.discard(ws)

    def add_session(self, sock: Any) -> None:
        self._sessions.add(sock)

    def discard_session(self, sock: Any) -> None:
        self._sessions.discard(sock)

    def __len__(self) -> int:
        return len(self._handlers) + len(self._websockets) + len(self._sessions)

    def in_flight(self) -> int:
        """Plain HTTP requests being served (an upgraded connection is not one)."""
        return sum(1 for h in self._handlers if h.in_request and not h.websocket_upgraded)

    def new(self) -> int:
        """Connections with no request read yet (nor one being read)."""
        return sum(1 for h in self._handlers
                   if not h.requests_read and not h.in_request and not h.websocket_upgraded)

    def close_idle(self, spare_new: bool = False) -> int:
        """Close every connection waiting for its next request (``spare_new``: not those
        waiting for their first); how many were closed."""
        n = 0
        for h in list(self._handlers):
            if not h.in_request and not h.websocket_upgraded:
                if spare_new and not h.requests_read:
                    continue
                sock = getattr(h, "socket", None)
                if _has_input(sock):
                    # Its request (or the client's close) is already here: closing now would
                    # fail a request the client sent before the stop. The handler reads it;
                    # the answer says Connection: close (a later poll catches it otherwise).
                    continue
                _shutdown_socket(sock)
                n += 1
        return n

    def close_websockets(self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down") -> int:
        """Start the closing handshake on every WebSocket still open; how many."""
        n = 0
        for ws in [*map(_websocket_of, list(self._handlers)), *list(self._websockets)]:
            if ws is not None and not ws.closed:
                # A greenlet each: with no reader active close() waits for the peer's reply.
                gevent.spawn(_close_ws, ws, code, reason)
                n += 1
        return n


def connections_of(server: Any) -> Connections | None:
    """The tracker of a server that has one (WebServer, the gunicorn worker's server)."""
    return getattr(server, "connections", None)


def _not_started(server: Any, connections: Connections) -> bool:
    """Greenlets the server spawned for accepted connections that have not yet registered
    (each registered connection, handler, detached WebSocket or other protocol's session, is one
    greenlet of its pool)."""
    pool = getattr(server, "pool", None)
    return pool is not None and len(pool) > len(connections)


def _websocket_of(handler: Any) -> Any:
    if not handler.websocket_upgraded:
        return None
    upgrader = (getattr(handler, "environ", None) or {}).get("geonode.websocket")
    return getattr(upgrader, "websocket", None)


def _close_ws(ws: Any, code: int, reason: str) -> None:
    try:
        ws.close(code, reason)
    except Exception:  # a broken socket: the final kill drops it
        log.debug("closing a WebSocket failed", exc_info=True)


def _has_input(sock: Any) -> bool:
    """Bytes (or an EOF) wait on ``sock`` now; never blocks."""
    if sock is None:
        return False
    try:
        readable, _, _ = gselect.select([sock], [], [], 0)
    except (OSError, ValueError, TypeError):
        return False
    return bool(readable)


def _shutdown_socket(sock: Any) -> None:
    # shutdown, not close: the handler's blocked read returns b"" and it ends the connection
    # the normal way (its greenlet, its cleanup); close() under a blocked reader is an error.
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError, AttributeError):
        pass


def _wait(until: Callable[[], bool], seconds: float, give_up: Callable[[], bool],
          tick: Callable[[], None] | None, also: Callable[[], Any] | None = None) -> bool:
    """Poll ``until`` (20 ms steps) for at most ``seconds``; False on timeout or give-up."""
    deadline = time.monotonic() + seconds
    last_tick = time.monotonic()
    while not until():
        if time.monotonic() >= deadline or give_up():
            return False
        if also is not None:
            also()
        if tick is not None and time.monotonic() - last_tick >= 1.0:
            tick()  # gunicorn's heartbeat: the master must not take a stopping worker for hung
            last_tick = time.monotonic()
        gevent.sleep(0.02)
    return True


def graceful_stop(servers: Iterable[Any], grace: float, close_routers: Callable[[], None],
                  give_up: Callable[[], bool] = lambda: False,
                  tick: Callable[[], None] | None = None,
                  close_seconds: float = CLOSE_SECONDS) -> bool:
    """Stop ``servers`` (pywsgi servers with a ``connections`` tracker) the graceful way.

    1. stop accepting; 2. close idle keep-alive connections; 3. wait for requests in flight
    (at most ``grace`` s, or until ``give_up()`` says a second signal came); 4. ``close_routers()``
    (components, WAMP sessions: GOODBYE and close); 5. close remaining WebSockets with 1001;
    6. give closing handshakes ``close_seconds``; 7. drop whatever is left.
    Returns False when requests in flight had to be cut off.
    """
    servers = list(servers)
    tracked = [(s, c) for s in servers if (c := connections_of(s)) is not None]
    for s in servers:
        if not s.closed:
            s.close()
    started = time.monotonic()

    def newcomers() -> bool:
        return any(_not_started(s, c) or c.new() for s, c in tracked)

    # Connections accepted just before the stop: their first request (usually already sent)
    # is served, not dropped with the connection.
    _wait(lambda: not newcomers(), min(grace, FIRST_REQUEST_SECONDS), give_up, tick,
          lambda: [c.close_idle(spare_new=True) for _, c in tracked])
    grace = max(grace - (time.monotonic() - started), 0.0)

    def close_idle() -> None:
        # Again on every poll: a request that finishes leaves its connection idle for a moment
        # before the handler sees ``Connection: close`` (pipelined requests, slow clients).
        for _, c in tracked:
            c.close_idle()

    idle = sum(c.close_idle() for _, c in tracked)
    busy = sum(c.in_flight() for _, c in tracked)
    if idle or busy:
        log.info("closed %d idle connection(s); %d request(s) in flight", idle, busy)
    done = _wait(lambda: not any(c.in_flight() for _, c in tracked), grace, give_up, tick,
                 close_idle)
    if not done:
        log.warning("closing requests still in flight (%s)",
                    "second signal" if give_up() else f"the {grace:.0f} s grace is over")
    try:
        close_routers()
    except Exception:
        log.warning("closing the routers failed", exc_info=True)
    for _, c in tracked:
        c.close_websockets()
    if not give_up():
        _wait(lambda: not any(len(c) for _, c in tracked), close_seconds, give_up, tick,
              close_idle)
    for s in servers:
        pool = getattr(s, "pool", None)
        if pool is not None and len(pool):
            pool.kill(block=True, timeout=1.0)
    return done
