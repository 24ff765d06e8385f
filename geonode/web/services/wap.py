"""``wap`` path service: Crossbar's WAMP Application Page.

Each route (``path`` as a werkzeug rule below the mount, ``method`` GET or POST) calls a WAMP
procedure (``call``; none: an empty result) through an in-process session joined to the
worker's router as ``wamp.authrole`` on ``wamp.realm`` (the role's permissions apply), then
renders the Jinja2 template ``render`` with the call's result. Templates come from
``templates`` (a folder relative to the config's, or ``{"package", "resource"}``) and run in
Jinja2's sandboxed environment unless ``sandbox`` is false; autoescaping is on.

As Crossbar: the procedure gets the rule's variables and the query arguments (the first value
of each) as keyword arguments, a POST body as ``data`` (bytes) with ``data_type`` (its
Content-Type); a client whose ``Accept`` is ``application/json`` gets the result as JSON
instead of the page. Unlike Crossbar (which answers 511 and 500 for everything): a method the
route does not take is 405, a WAMP error 502 with its URI, a call without an answer within
``timeout`` seconds 504, a template failing on the result 500, each with one log line.
Crossbar's per-cookie sessions (a FIXME there: every one joins as ``anonymous``) are not
reproduced: every request calls as the configured role.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Iterable
from typing import Any

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule

from geonode import wamp
from geonode.config.imports import wap_templates
from geonode.config.services import WapService
from geonode.httpstatus import status_line
from geonode.web.context import BuildContext
from geonode.web.limits import max_body_size
from geonode.web.services.plain import text_response

log = logging.getLogger(__name__)

#: query arguments a request may carry (each becomes a keyword argument of the call)
MAX_QUERY_ARGS = 100


class WapApp:
    def __init__(self, svc: WapService, ctx: BuildContext) -> None:
        self.json_path = ctx.json_path
        self.timeout = svc.timeout
        self.body_limit = max_body_size(svc.extra, ctx)
        templates = wap_templates(svc, ctx.config_dir)   # as check compiles them
        rules = [Rule("/" + route.path.strip("/"), methods=[route.method],
                      endpoint=(route.call, template))
                 for route, template in zip(svc.routes, templates, strict=True)]
        self.map = Map(rules, strict_slashes=False)
        if ctx.router is not None:
            wamp.register_router(ctx.router)
        self.session = wamp.Session(svc.realm, svc.authrole,
                                    svc.authid or f"geonode-wap-{ctx.json_path}",
                                    router=ctx.router, name=f"wap:{ctx.json_path}")

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        wants_json = environ.get("HTTP_ACCEPT", "").strip() == "application/json"
        method = environ.get("REQUEST_METHOD", "GET")
        adapter = self.map.bind_to_environ(environ)
        try:
            (procedure, template), kwargs = adapter.match(method="GET" if method == "HEAD"
                                                          else method)
        except NotFound:
            return self._error(start_response, 404, "no page here", wants_json, environ)
        except MethodNotAllowed as e:
            allow = ", ".join(sorted(e.valid_methods or []))
            return self._error(start_response, 405, f"method {method} not allowed here",
                               wants_json, environ, [("Allow", allow)])
        except Exception:  # werkzeug's redirects (strict slashes): treat as not found
            return self._error(start_response, 404, "no page here", wants_json, environ)
        kwargs = dict(kwargs)
        query = _query_args(environ.get("QUERY_STRING", ""))
        if query is None:
            return self._error(start_response, 400, "too many query arguments", wants_json,
                               environ)
        for k, v in query.items():
            kwargs.setdefault(k, v)
        if method == "POST":
            body = self._body(environ)
            if isinstance(body, int):
                return self._error(start_response, body, "request body too large or unreadable",
                                   wants_json, environ, [("Connection", "close")])
            if body:
                kwargs["data"] = body
                kwargs["data_type"] = environ.get("CONTENT_TYPE") or "application/octet-stream"
        result: Any = {}
        if procedure:
            try:
                result = self.session.call(procedure, timeout=self.timeout, **kwargs)
            except wamp.ApplicationError as e:
                status = 504 if e.error == "wamp.error.timeout" else 502
                log.info("wap %s: %s -> %s", self.json_path, procedure, e.error)
                return self._error(start_response, status,
                                   f"calling {procedure} failed: {e.error}", wants_json, environ)
            if isinstance(result, wamp.CallResult):
                result = dict(result.kwresults or {}, results=list(result.results or []))
        try:
            if wants_json:
                body = json.dumps(result, separators=(",", ":"), ensure_ascii=False).encode()
                ctype = "application/json; charset=utf-8"
            else:
                context = result if isinstance(result, dict) else {"result": result}
                body = template.render(context).encode("utf-8")
                ctype = "text/html; charset=utf-8"
        except Exception as e:   # a template that fails on this result (or sandbox refusal)
            log.warning("wap %s: rendering %s for %s failed: %s", self.json_path,
                        template.name, procedure, e)
            return self._error(start_response, 500, f"rendering the page failed: {e}",
                               wants_json, environ)
        start_response(status_line(200), [("Content-Type", ctype),
                                          ("Content-Length", str(len(body)))])
        return [] if method == "HEAD" else [body]

    def _body(self, environ: dict) -> bytes | int:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return 400
        if self.body_limit is not None and length > self.body_limit:
            return 413
        try:
            return environ["wsgi.input"].read(length) if length > 0 else b""
        except OSError:
            return 400

    @staticmethod
    def _error(start_response, status: int, message: str, wants_json: bool, environ: dict,
               headers: list[tuple[str, str]] | None = None) -> list[bytes]:
        head = environ.get("REQUEST_METHOD") == "HEAD"
        if wants_json:
            body = json.dumps({"error": message}).encode()
            start_response(status_line(status), [("Content-Type", "application/json"),
                                                 ("Content-Length", str(len(body))),
                                                 *(headers or [])])
            return [] if head else [body]
        if status in (405, 413, 400):
            return text_response(start_response, status, message, headers or [], head=head)
        body = ("<!DOCTYPE html><html><head><title>WAMP Application Page error</title></head>"
                f"<body><h3>WAMP Application Page error</h3><pre>{html.escape(message)}</pre>"
                "</body></html>\n").encode()
        start_response(status_line(status), [("Content-Type", "text/html; charset=utf-8"),
                                             ("Content-Length", str(len(body))),
                                             *(headers or [])])
        return [] if head else [body]


def _query_args(query: str) -> dict[str, str] | None:
    from urllib.parse import parse_qsl

    if query.count("&") >= MAX_QUERY_ARGS:
        return None
    out: dict[str, str] = {}
    for k, v in parse_qsl(query, keep_blank_values=True):
        out.setdefault(k, v)   # the first value of each, as Crossbar
    return out


def build(svc: WapService, ctx: BuildContext) -> WapApp:
    """The WSGI app serving a ``wap`` path."""
    return WapApp(svc, ctx)
