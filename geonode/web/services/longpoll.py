"""``longpoll`` path service: WAMP over HTTP long-poll, Crossbar's (and autobahn|js's) protocol.

Under the service's mount (``/lp`` say)::

    POST /lp/open               {"protocols": ["wamp.2.json"]} -> {"transport": id, "protocol": p}
    POST /lp/<id>/send          body: one message (a batch for ``.batched``) -> 204
    POST /lp/<id>/receive       waits for messages: 200 with one message (all pending ones for
                                ``.batched``), or 204 after ``request_timeout`` with none
    POST /lp/<id>/close         ends the session -> 204
    GET  /lp/<id>               {"transport": id, "session": WAMP session id}

Sessions live on the hub in the service's table: a ``LongPollPeer`` per transport id, attached
to the router like any connection (``MessageQueuePeer``: the same bounded outgoing queue; its
"writer" hands each batch to a waiting receive request). Bounds: a receive waits at most
``request_timeout``; a send body at most ``max_body_size`` (413); at most ``max_sessions``
sessions (503 beyond); a session no request has touched for ``session_timeout`` is closed by
the reaper (one greenlet per service, only while sessions exist). Every answer carries
Crossbar's CORS and no-cache headers; unknown transport ids get 404.
"""

from __future__ import annotations

import html
import json
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

import gevent
from gevent.event import Event

from geonode.config.model import LongPollService as LongPollConfig
from geonode.httpstatus import status_line
from geonode.transport import serializers as ser
from geonode.transport.queue import MessageQueuePeer
from geonode.transport.websocket import http_headers, peer_address
from geonode.web.context import BuildContext

log = logging.getLogger("geonode.transport")

OPEN_BODY_LIMIT = 64 * 1024      # the /open request's JSON
_ENDED_MEMORY = 1024             # recently ended ids: their /close still answers 204
_READ = 65536

_MIME = {"json": "application/json; charset=utf-8", "msgpack": "application/x-msgpack",
         "cbor": "application/cbor", "ubjson": "application/ubjson"}


class LongPollPeer(MessageQueuePeer):
    """One long-poll session. ``send`` (the router's) queues as every transport does; the
    writer greenlet moves each batch into ``outbox`` and waits for receive requests to take
    it, so the queue bound applies to a client that stops polling."""

    def __init__(self, service: LongPollService, tid: str, serializer: ser.WampSerializer,
                 details: dict, **limits: int) -> None:
        super().__init__(serializer, details, **limits)
        self.service = service
        self.tid = tid
        self.outbox: deque = deque()
        self.ready = Event()      # outbox filled, a newer poll came, or the session ended
        self.taken = Event()      # outbox emptied (or the session ended)
        self.last_seen = time.monotonic()
        self.polls = 0            # receive requests waiting now
        self.poll_gen = 0         # the newest receive request: older ones give way
        self.over = False

    # -- MessageQueuePeer hooks (the writer greenlet) ---------------------------------
    def _write(self, items: list) -> None:
        self.outbox.extend(items)
        self.taken.clear()
        self.ready.set()
        while self.outbox and not self.over:
            self.taken.wait()

    def _shutdown(self, code: int, reason: str) -> None:
        # the last words (GOODBYE, ABORT) go out with the next poll; bounded by the caller
        while self.outbox and not self.over:
            self.taken.wait()
        self._end()

    def _abort(self, code: int = 0, reason: str = "") -> None:
        self._end()

    def _end(self) -> None:
        if self.over:
            return
        self.over = True
        self._dead = True
        self.service.forget(self)
        self.ready.set()
        self.taken.set()
        self._detach()

    # -- requests --------------------------------------------------------------------
    def receive(self, timeout: float) -> bytes | str | None:
        """The next message(s) for the client, or None after ``timeout`` with none."""
        self.poll_gen += 1
        gen = self.poll_gen
        self.ready.set()          # an older poll still waiting returns empty: this one serves
        self.polls += 1
        try:
            deadline = time.monotonic() + timeout
            while not self.outbox and not self.over and self.poll_gen == gen:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.ready.clear()
                self.ready.wait(left)
        finally:
            self.polls -= 1
            self.last_seen = time.monotonic()
        if not self.outbox or self.poll_gen != gen:
            return None
        if self.serializer.batched:
            data = self.serializer.join(list(self.outbox))
            self.outbox.clear()
        else:
            data = self.outbox.popleft()
        if not self.outbox:
            self.taken.set()
        return data

    def deliver(self, body: bytes) -> bool:
        """A send request's body to the router; False when it ended the session."""
        self.last_seen = time.monotonic()
        try:
            payload: bytes | str = body if self.serializer.binary else body.decode("utf-8")
        except UnicodeDecodeError:
            self._violation("JSON message is not UTF-8")
            return False
        ok = self._receive_payload(payload)
        if ok and self._pressure is not None:
            self._pace(None)      # receivers it congested: wait for them (bounded)
        return ok


class LongPollService:
    """The sessions of one ``longpoll`` path and the requests that reach them."""

    def __init__(self, cfg: LongPollConfig, ctx: BuildContext) -> None:
        # (the config model checked that the worker has a router, and the serializers)
        self.router = ctx.router
        self.json_path = ctx.json_path
        self.names = cfg.serializers
        self.request_timeout = cfg.request_timeout
        self.session_timeout = cfg.session_timeout
        self.max_sessions = cfg.max_sessions
        self.max_body = cfg.max_body_size
        self.limits = {"max_queue": cfg.max_queue, "max_queue_bytes": cfg.max_queue_bytes}
        self.fixed_id = cfg.debug_transport_id
        self.sessions: dict[str, LongPollPeer] = {}
        self.ended: OrderedDict[str, None] = OrderedDict()
        self._reaper: Any = None

    # -- sessions --------------------------------------------------------------------
    def forget(self, peer: LongPollPeer) -> None:
        if self.sessions.get(peer.tid) is peer:
            del self.sessions[peer.tid]
            self.ended[peer.tid] = None
            if len(self.ended) > _ENDED_MEMORY:
                self.ended.popitem(last=False)

    def _reap(self) -> None:
        tick = max(0.25, min(self.session_timeout / 4, 5.0))
        while self.sessions:
            gevent.sleep(tick)
            now = time.monotonic()
            for peer in list(self.sessions.values()):
                if peer.polls:
                    peer.last_seen = now
                elif now - peer.last_seen > self.session_timeout:
                    log.info("%s: long-poll session %s idle for %.0f s: closed",
                             self.json_path, peer.tid, now - peer.last_seen)
                    peer._end()
        self._reaper = None

    def open(self, environ: dict, body: bytes) -> tuple[int, Any]:
        try:
            request = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return 400, "could not parse WAMP session open request body"
        protocols = request.get("protocols") if isinstance(request, dict) else None
        if not isinstance(protocols, list):
            return 400, "missing attribute 'protocols' in WAMP session open request"
        serializer = None
        for p in protocols[:32]:
            s = ser.by_subprotocol(p) if isinstance(p, str) else None
            if s is not None and s.name.split(".")[0] in self.names:
                serializer = s
                break
        if serializer is None:
            offered = ", ".join(ser.subprotocols(self.names))
            return 400, f"no common protocol to speak (I speak: {offered})"
        if len(self.sessions) >= self.max_sessions and self.fixed_id not in self.sessions:
            log.warning("%s: %d long-poll sessions open, the most allowed (max_sessions): "
                        "refusing another", self.json_path, len(self.sessions))
            return 503, "too many long-poll sessions"
        tid = self.fixed_id or secrets.token_urlsafe(16)
        old = self.sessions.get(tid)
        if old is not None:
            old._end()
        details = {
            "type": "longpoll",
            "channel_type": "tls" if environ.get("wsgi.url_scheme") == "https" else "tcp",
            "channel_framing": "longpoll",
            "channel_serializer": serializer.name,
            "channel_id": {},
            "peer": peer_address(environ),
            "is_server": True,
            "http_headers_received": http_headers(environ),
            "websocket_protocol": serializer.subprotocol,
            "http_path": environ.get("SCRIPT_NAME", "") or "/",
            "transport": tid,
        }
        peer = LongPollPeer(self, tid, serializer, details, **self.limits)
        self.sessions[tid] = peer
        peer.session = self.router.attach(peer)
        if self._reaper is None:
            self._reaper = gevent.spawn(self._reap)
        return 200, {"transport": tid, "protocol": serializer.subprotocol}


def _cors(environ: dict) -> list[tuple[str, str]]:
    """Crossbar's standard long-poll headers: the caller's origin allowed, no caching."""
    origin = environ.get("HTTP_ORIGIN")
    headers = [("Access-Control-Allow-Origin", "*" if not origin or origin == "null" else origin),
               ("Access-Control-Allow-Credentials", "true"),
               ("Cache-Control", "no-store, no-cache, must-revalidate, max-age=0")]
    wanted = environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS")
    if wanted:
        headers.append(("Access-Control-Allow-Headers", wanted))
    return headers


class _TooLarge(Exception):
    pass


def _read_body(environ: dict, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (``_TooLarge`` beyond, ``ValueError`` for a
    body shorter than its Content-Length)."""
    stream = environ["wsgi.input"]
    length_s = environ.get("CONTENT_LENGTH") or ""
    if length_s:
        length = int(length_s)
        if length > limit:
            raise _TooLarge(f"request body of {length} bytes is over the limit of {limit}")
        body = stream.read(length) if length > 0 else b""
        if len(body) != length:
            raise ValueError("request body shorter than its Content-Length")
        return body
    chunks, total = [], 0
    while total <= limit:
        data = stream.read(min(_READ, limit + 1 - total))
        if not data:
            break
        chunks.append(data)
        total += len(data)
    if total > limit:
        raise _TooLarge(f"request body over the limit of {limit} bytes")
    return b"".join(chunks)


def _page(names: list[str]) -> bytes:
    return (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>WAMP long-poll</title>"
        "</head><body><h1>WAMP over Long-Poll</h1><p>This is a WAMP-over-Long-Poll endpoint "
        "of geonode (the fallback of autobahn|js). Protocols: "
        f"{html.escape(', '.join(ser.subprotocols(names)))}</p></body></html>"
    ).encode()


def build(cfg: LongPollConfig, ctx: BuildContext) -> Callable:
    """The WSGI app for a ``longpoll`` path."""
    return _App(LongPollService(cfg, ctx))


def _answer(start_response: Callable, status: int, body: bytes | str, ctype: str,
            environ: dict, extra: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    data = body.encode("utf-8") if isinstance(body, str) else body
    # a 204 carries no Content-Length nor body (RFC 9110 8.6)
    headers = [] if status == 204 else [("Content-Type", ctype),
                                        ("Content-Length", str(len(data)))]
    headers += [*_cors(environ), *extra]
    start_response(status_line(status), headers)
    return [data] if data and environ.get("REQUEST_METHOD") != "HEAD" else []


def _text(start_response: Callable, status: int, message: str, environ: dict,
          extra: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    return _answer(start_response, status, message + "\n", "text/plain; charset=utf-8",
                   environ, extra)


def _no_content(start_response: Callable, environ: dict) -> list[bytes]:
    return _answer(start_response, 204, b"", "text/plain", environ)


def _body(environ: dict, start_response: Callable, limit: int) -> bytes | list[bytes]:
    """The request body, or the answer that refuses it (413, 400)."""
    try:
        return _read_body(environ, limit)
    except _TooLarge as e:
        return _text(start_response, 413, str(e), environ, [("Connection", "close")])
    except ValueError as e:
        return _text(start_response, 400, str(e), environ)


class _App:
    """The WSGI app of one ``longpoll`` path: ``/`` (a page), ``/open``, ``/<id>[/<op>]``."""

    def __init__(self, service: LongPollService) -> None:
        self.service = service
        self.page = _page(service.names)

    def __call__(self, environ: dict, start_response: Callable) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        parts = [p for p in environ.get("PATH_INFO", "").split("/") if p]
        if method == "OPTIONS":   # a browser's CORS preflight before its POSTs
            return _answer(start_response, 204, b"", "text/plain", environ,
                           [("Access-Control-Allow-Methods", "GET, POST, OPTIONS")])
        if not parts:
            if method in ("GET", "HEAD"):
                return _answer(start_response, 200, self.page, "text/html; charset=utf-8",
                               environ)
            return _text(start_response, 405, f"method {method} not allowed here", environ,
                         [("Allow", "GET, HEAD")])
        if len(parts) > 2:
            return _text(start_response, 404, "no such long-poll resource", environ)
        if parts == ["open"]:
            return self._open(environ, start_response, method)
        return self._transport(environ, start_response, method, parts[0],
                               parts[1] if len(parts) == 2 else "")

    def _open(self, environ: dict, start_response: Callable, method: str) -> list[bytes]:
        if method != "POST":
            return _text(start_response, 405, "open a session with POST", environ,
                         [("Allow", "POST")])
        body = _body(environ, start_response, OPEN_BODY_LIMIT)
        if isinstance(body, list):
            return body
        status, result = self.service.open(environ, body)
        if status != 200:
            return _text(start_response, status, result, environ)
        return _answer(start_response, 200, json.dumps(result),
                       "application/json; charset=utf-8", environ)

    def _transport(self, environ: dict, start_response: Callable, method: str, tid: str,
                   op: str) -> list[bytes]:
        service = self.service
        peer = service.sessions.get(tid)
        if op == "close" and peer is None and tid in service.ended:
            return _no_content(start_response, environ)
        if peer is None:
            return _text(start_response, 404, f"no WAMP transport '{tid[:64]}'", environ)
        if op == "":
            if method not in ("GET", "HEAD"):
                return _text(start_response, 405, "GET only", environ,
                             [("Allow", "GET, HEAD")])
            sid = getattr(peer.session, "id", None)
            return _answer(start_response, 200, json.dumps({"transport": tid, "session": sid}),
                           "application/json; charset=utf-8", environ)
        if op not in ("send", "receive", "close"):
            return _text(start_response, 404, f"invalid WAMP transport operation '{op[:64]}'",
                         environ)
        if method != "POST":
            return _text(start_response, 405, f"{op} with POST", environ, [("Allow", "POST")])
        peer.last_seen = time.monotonic()
        if op == "receive":
            data = peer.receive(service.request_timeout)
            if data is None:
                return _no_content(start_response, environ)
            return _answer(start_response, 200, data,
                           _MIME.get(peer.serializer.name.split(".")[0],
                                     "application/octet-stream"), environ)
        if op == "close":
            peer._end()   # as Crossbar: the session ends now, whatever was queued for it
            return _no_content(start_response, environ)
        return self._send(environ, start_response, peer)

    def _send(self, environ: dict, start_response: Callable, peer: Any) -> list[bytes]:
        body = _body(environ, start_response, self.service.max_body)
        if isinstance(body, list):
            return body
        if not body:
            return _text(start_response, 400, "empty message", environ)
        if not peer.deliver(body):
            return _text(start_response, 400, "could not unserialize WAMP message", environ)
        return _no_content(start_response, environ)
