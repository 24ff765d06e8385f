"""``status`` path service: a live page of the node, over its own WAMP meta API (autobahn|js).

geonode addition (issue 13). Off unless configured::

    "status": {"type": "status", "realm": "realm1"}
    "status": {"type": "status", "realm": "realm1", "role": "ops",
               "auth": {"ticket": {"type": "static", "principals": {...}}}}

What it serves at its mount (``/status`` here):

- ``/status/`` the page (``geonode/static/status/index.html`` + ``status.js``) and the
  autobahn|js browser build it uses (``autobahn.min.js``, MIT, autobahn-browser 22.11.1);
- ``/status/ws`` the page's WAMP endpoint, **read-only**: its sessions may call the meta API's
  read procedures (``wamp.session.*``, ``wamp.subscription.*``, ``wamp.registration.*`` lists,
  gets, counts, lookups) and ``geonode.status.get`` (answered here: message counters and WSGI
  pool use), and subscribe to the meta events; every other message is refused
  (``wamp.error.not_authorized``; a publish, register or yield never reaches the router).

Without ``auth`` a viewer joins as the router's own kind of session (role ``trusted``, left out
of the meta listings it shows): anyone who can reach the page can read it, so mount it on an
endpoint only operators reach, or give it ``auth`` (any of the websocket transport's methods)
and ``role``: the viewer must then authenticate and get that role, whose permissions on the
realm must allow those calls and subscriptions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from autobahn.wamp import message as m

from geonode.config.model import WebSocketService, parse_service
from geonode.config.services import StatusService
from geonode.httpstatus import status_line
from geonode.router.errors import NOT_AUTHORIZED
from geonode.web.context import BuildContext
from geonode.web.services.plain import text_response

STATIC = Path(__file__).resolve().parents[2] / "static" / "status"
_FILES = {"": ("index.html", "text/html; charset=utf-8"),
          "index.html": ("index.html", "text/html; charset=utf-8"),
          "status.js": ("status.js", "text/javascript; charset=utf-8"),
          "autobahn.min.js": ("autobahn.min.js", "text/javascript; charset=utf-8")}

#: meta procedures a viewer may call (reads only: no kill, no remove_subscriber)
READ_PROCEDURES = frozenset(
    f"wamp.{kind}.{op}" for kind, ops in (
        ("session", ("list", "get", "count")),
        ("subscription", ("list", "get", "lookup", "match", "list_subscribers",
                          "count_subscribers")),
        ("registration", ("list", "get", "lookup", "match", "list_callees", "count_callees")))
    for op in ops)
META_TOPICS = ("wamp.session.on_", "wamp.subscription.on_", "wamp.registration.on_")
STATS_PROCEDURE = "geonode.status.get"


def stats(router: Any, info: Any) -> dict:
    """What ``geonode.status.get`` answers: counters the page turns into rates."""
    from geonode.metrics import type_counts, wsgi_use

    realms = {}
    for name, realm in list(router.realms.items()):
        realms[name] = {
            "sessions": len(realm.sessions),
            "received": type_counts(realm.received),
            "sent": type_counts(realm.sent),
            "calls": sum(realm.call_durations.counts),
        }
    return {"time": time.time(), "version": info.version, "title": info.title,
            "uptime": round(time.time() - info.started_at, 1), "pid": info.pid,
            "realms": realms, "wsgi": wsgi_use()}


class _ReadOnlySession:
    """Stands between a viewer's transport and its RouterSession: only reads get through."""

    def __init__(self, session: Any, router: Any, info: Any, role: str | None) -> None:
        self.session = session
        self.router = router
        self.info = info
        self.role = role

    def _check_role(self) -> bool:
        """A joined viewer without the configured role is sent away (True: it was)."""
        s = self.session
        if self.role is not None and s.realm is not None and s.authrole != self.role:
            s.kill(NOT_AUTHORIZED, f"the status page needs role {self.role!r}")
            return True
        return False

    def __getattr__(self, name: str) -> Any:   # detach, protocol_violation, state, ...
        return getattr(self.session, name)

    def receive(self, msg: Any) -> None:
        s = self.session
        t = type(msg)
        if t in (m.Hello, m.Authenticate, m.Goodbye, m.Abort, m.Unsubscribe, m.Cancel):
            s.receive(msg)
            self._check_role()
            return
        if self._check_role():
            return
        if s.realm is None:
            s.receive(msg)   # not joined: the router answers it as it would anyone
            return
        if t is m.Call:
            if msg.procedure == STATS_PROCEDURE:
                s.send(m.Result(msg.request, args=[stats(self.router, self.info)]))
                return
            if msg.procedure in READ_PROCEDURES:
                s.receive(msg)
                return
            s.send(m.Error(m.Call.MESSAGE_TYPE, msg.request, NOT_AUTHORIZED,
                           ["the status page's sessions are read-only"]))
            return
        if t is m.Subscribe:
            if msg.topic.startswith(META_TOPICS):
                s.receive(msg)
                return
            s.send(m.Error(m.Subscribe.MESSAGE_TYPE, msg.request, NOT_AUTHORIZED,
                           ["the status page may subscribe to meta events only"]))
            return
        if t is m.Publish:
            if msg.acknowledge:
                s.send(m.Error(m.Publish.MESSAGE_TYPE, msg.request, NOT_AUTHORIZED,
                               ["the status page's sessions are read-only"]))
            return
        if t is m.Register:
            s.send(m.Error(m.Register.MESSAGE_TYPE, msg.request, NOT_AUTHORIZED,
                           ["the status page's sessions are read-only"]))
            return
        # UNREGISTER, YIELD, ERROR: nothing a read-only session can have asked for


class _ViewerRouter:
    """What the websocket service attaches viewers to: the router, behind the filter."""

    def __init__(self, router: Any, realm: str, info: Any, role: str | None) -> None:
        self.router = router
        self.realm = realm
        self.info = info
        self.role = role

    def attach(self, peer: Any, auth_config: dict | None = None) -> Any:
        if auth_config is None:
            session = self.router.attach(peer, auth={"authid": "geonode-status",
                                                     "authrole": "trusted",
                                                     "realm": self.realm})
        else:
            session = self.router.attach(peer, auth_config=auth_config)
        return _ReadOnlySession(session, self.router, self.info, self.role)


def _load(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def build(svc: StatusService, ctx: BuildContext) -> Callable[[dict, Callable], Iterable[bytes]]:
    """The WSGI app for a ``status`` path."""
    # (a worker without realms, 'role' without 'auth', a realm without its meta API: the
    # config model refused them, for check and start alike)
    router = ctx.router
    realm, role, auth = svc.realm, svc.role, svc.auth
    from geonode.web.services import websocket

    viewer = parse_service({"type": "websocket", "serializers": ["json"],
                            **({"auth": auth} if auth else {})}, ctx.json_path)
    assert isinstance(viewer, WebSocketService)
    ws_app = websocket.build(viewer, _ViewerContext(ctx, _ViewerRouter(router, realm, ctx.node, role)))
    files = {k: (_load(name), ctype) for k, (name, ctype) in _FILES.items()}
    # The page learns its realm from the config (a "<" could end the script element early).
    page_cfg = json.dumps({"realm": realm}).replace("<", "\\u003c").encode()
    page = files["index.html"][0].replace(b"/*CONFIG*/{}", page_cfg)
    files[""] = files["index.html"] = (page, files["index.html"][1])

    def app(environ: dict, start_response) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/ws":
            return ws_app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "" and method in ("GET", "HEAD"):
            # relative URLs in the page (status.js, ws) need the trailing slash
            loc = environ.get("SCRIPT_NAME", "") + "/"
            start_response(status_line(301), [("Location", loc), ("Content-Length", "0")])
            return []
        entry = files.get(path.lstrip("/"))
        if entry is None or "/" in path.lstrip("/"):
            return text_response(start_response, 404, f"no {path!r} here",
                                 head=method == "HEAD")
        if method not in ("GET", "HEAD"):
            return text_response(start_response, 405, f"method {method} not allowed here",
                                 [("Allow", "GET, HEAD")])
        body, ctype = entry
        start_response(status_line(200), [("Content-Type", ctype),
                                          ("Content-Length", str(len(body))),
                                          ("Cache-Control", "no-cache"),
                                          ("X-Content-Type-Options", "nosniff")])
        return [] if method == "HEAD" else [body]

    return app


class _ViewerContext(BuildContext):
    def __init__(self, ctx: BuildContext, router: Any) -> None:
        super().__init__(config_dir=ctx.config_dir, json_path=f"{ctx.json_path}.ws",
                         router=router, transport_options=ctx.transport_options,
                         node=ctx.node, tls=ctx.tls)
