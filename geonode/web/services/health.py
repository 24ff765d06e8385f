"""``health`` path service: 200 and a small JSON body while the node serves, 503 otherwise.

geonode addition (for load balancers, Docker/Kubernetes probes, systemd watchdogs). 503 while
the node starts (until every endpoint accepts and every component has joined), once a graceful
stop began, and while a required part is down: a component whose session is not joined, or a
check another part registered (``NodeInfo.health_checks``: a backplane link, a worker process).
docs/observability.md "Health".
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from geonode.config.services import HealthService
from geonode.httpstatus import status_line
from geonode.web.context import BuildContext, NodeInfo
from geonode.web.services.plain import text_response

_HEADERS = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]


def _worker_of(json_path: str) -> str:
    return json_path.split(".", 1)[0]


def report(info: NodeInfo) -> tuple[bool, dict]:  # noqa: C901 - one check per part of the node, in the body's order
    """(healthy, body) for the node ``info`` describes."""
    node: Any = info.owner
    down: list[str] = []
    workers: dict[str, dict] = {}

    def worker(path: str) -> dict:
        return workers.setdefault(path, {"type": "router", "realms": {}, "transports": {},
                                         "components": {}})

    if node is not None:
        for router in node.routers:
            w = worker(getattr(router, "json_path", "workers[?]"))
            for name, realm in list(router.realms.items()):
                w["realms"][name] = {"state": "up", "sessions": len(realm.sessions)}
        for t in node.web:
            listening = t.server is not None and t.server.started and not t.server.closed
            worker(_worker_of(t.json_path))["transports"][t.json_path] = \
                "listening" if listening else "closed"
        for tpath, server in node.rawsocket_servers:
            worker(_worker_of(tpath))["transports"][tpath] = \
                "listening" if server.started and not server.closed else "closed"
        for handle in node.components:
            for c in handle.items:
                joined = c.session.joined
                worker(_worker_of(c.json_path))["components"][c.json_path] = \
                    "joined" if joined else "down"
                if not joined:
                    down.append(c.json_path)
    checks: dict[str, dict] = {}
    for check in list(info.health_checks):
        try:
            name, ok, detail = check()
        except Exception as e:   # a failing check is a part that is down, not a 500
            name, ok, detail = getattr(check, "__name__", "check"), False, {"error": str(e)}
        checks[name] = {"ok": bool(ok), **(detail or {})}
        if not ok:
            down.append(name)
    state = info.state
    if state == "up" and down:
        # Components join just after the endpoints accept: not joined yet is still starting.
        never = {c.json_path for h in (node.components if node is not None else ())
                 for c in h.items if not getattr(c, "_started", True)}
        status = "starting" if set(down) <= never else "down"
    else:
        status = "ok" if state == "up" else state
    body = {"status": status, "version": info.version, "pid": info.pid,
            "uptime": round(time.time() - info.started_at, 3),
            "workers": workers}
    if checks:
        body["checks"] = checks
    if down:
        body["down"] = down
    return status == "ok", body


def build(_svc: HealthService, ctx: BuildContext) -> Callable[[dict, Callable], Iterable[bytes]]:
    """The WSGI app for a ``health`` path."""
    info = ctx.node

    def app(environ: dict, start_response) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return text_response(start_response, 405, f"method {method} not allowed here",
                                 [("Allow", "GET, HEAD")])
        ok, body = report(info)
        data = (json.dumps(body, separators=(",", ":"), sort_keys=True) + "\n").encode()
        start_response(status_line(200 if ok else 503),
                       [*_HEADERS, ("Content-Length", str(len(data)))])
        return [] if method == "HEAD" else [data]

    return app
