"""What the HTTP bridge services (publisher, caller, webhook) share: request checks and replies.

Requests are handled in the server's greenlet on the hub: they only talk to the router (through
an in-process session that waits cooperatively), so nothing here blocks the hub.

Status codes (Crossbar's, with geonode's choices marked *):
- OPTIONS → 200 with ``Allow`` and CORS headers; methods other than POST/PUT/OPTIONS → 405.
- ``require_ip`` (CIDR list) or ``require_tls`` not met → 403 * (Crossbar answers 400).
- Content-Type other than application/json, a charset other than UTF-8, a body that is not
  UTF-8, not JSON (``NaN``/``Infinity`` included: Python's json takes them, JSON does not) or
  not a JSON object, nested deeper than ``MAX_DEPTH``, a missing signature field → 400.
- Body over ``post_body_limit`` (default and maximum 1 MiB *; Crossbar: unlimited) → 413.
- Wrong key or signature, timestamp outside ``timestamp_delta_limit`` → 401 * (Crossbar: 400
  for the timestamp).
- Every response carries CORS headers, ``Cache-Control: no-store, no-cache, must-revalidate,
  max-age=0`` and, for JSON replies, ``Content-Type: application/json; charset=UTF-8``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any
from urllib.parse import parse_qs

from geonode import wamp
from geonode.bridge import signing
from geonode.config.services import BridgeConfig
from geonode.httpstatus import status_line
from geonode.router.errors import INVALID_PAYLOAD, NO_ROUTER, TIMEOUT

log = logging.getLogger("geonode.bridge")

MAX_BODY = 1024 * 1024
# Nesting levels a request body may have (serde_json's default is 128 too). Deeper bodies are
# nobody's real data; past ~1000 Python's parser and encoders raise RecursionError, and a
# payload between the two would be refused by some subscribers' serializers but not others.
MAX_DEPTH = 128
_READ = 65536


class Deny(Exception):
    """Answer the request with ``status`` and a JSON error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decode = json.JSONDecoder(parse_constant=_no_constant).decode


def parse_json(text: str) -> Any:
    """A request body as JSON, strictly: no NaN/Infinity, at most ``MAX_DEPTH`` levels (Deny
    400 otherwise). The depth is only walked when the body has more brackets than that."""
    try:
        value = _decode(text)
    except RecursionError:
        raise Deny(400, f"request body is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:
        raise Deny(400, f"request body is not valid JSON: {e}") from None
    if text.count("[") + text.count("{") > MAX_DEPTH and _deeper_than(value, MAX_DEPTH):
        raise Deny(400, f"request body is nested deeper than {MAX_DEPTH} levels")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` has more than ``limit`` levels of lists/objects: level by level, no
    recursion, each container's children looked at once (at worst about one more parse's
    time, for a body of many small containers; only run for bodies with many brackets)."""
    level = [value] if type(value) in _CONTAINERS else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        children = chain.from_iterable(c.values() if c.__class__ is dict else c for c in level)
        level = [v for v in children if v.__class__ in _CONTAINERS]
    return False


_CONTAINERS = frozenset((list, dict))


def json_body(obj: Any) -> bytes:
    """Raises ValueError for NaN/Infinity (a msgpack/CBOR callee's result): they are not JSON."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def error_body(message: str, args: list | None = None, kwargs: dict | None = None) -> bytes:
    return json_body({"error": message, "args": args or [], "kwargs": kwargs or {}})


def request_headers(environ: dict) -> dict[str, str]:
    """HTTP request headers by their usual Title-Case names."""
    out = {}
    for k, v in environ.items():
        if k.startswith("HTTP_"):
            name = k[5:]
        elif k in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = k
        else:
            continue
        if v == "" and k in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            continue
        out["-".join(p.capitalize() for p in name.split("_"))] = v
    return out


class BridgeService:
    """Base WSGI app of a bridge path service; subclasses implement ``process``."""

    kind = "bridge"
    decode_json = True
    deny_type = "application/json; charset=UTF-8"

    def __init__(self, cfg: BridgeConfig, ctx: Any) -> None:
        self.key: str | None = cfg.key
        self.secret: str | None = cfg.secret
        limit = cfg.post_body_limit
        self.body_limit = min(limit, MAX_BODY) if limit else MAX_BODY
        # The transport's max_body_size bounds every path service that reads a body.
        transport_limit = (getattr(ctx, "transport_options", None) or {}).get("max_body_size")
        if transport_limit is not None:
            self.body_limit = min(self.body_limit, transport_limit)
        self.delta_limit = cfg.timestamp_delta_limit
        # each signed request is accepted once (signing.py: Crossbar accepts replays)
        self.replay_guard = (signing.replay_guard(self.key, self.secret, self.delta_limit)
                             if self.secret else None)
        self.require_tls = cfg.require_tls
        self.require_ip = cfg.require_ip
        self.tls = bool(getattr(ctx, "tls", False))
        # seconds the router may take (calls: the callee too) before the answer is 504
        self.timeout = cfg.timeout
        if getattr(ctx, "router", None) is not None:
            wamp.register_router(ctx.router)
        authid = cfg.authid or f"geonode-{self.kind}-{ctx.json_path if ctx else ''}"
        self.session = wamp.Session(cfg.realm, cfg.role, authid,
                                    router=getattr(ctx, "router", None),
                                    name=f"{self.kind}:{getattr(ctx, 'json_path', '')}")

    # -- WSGI --------------------------------------------------------------------------------------

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        headers = self._common_headers(environ)
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if method == "OPTIONS":
                headers += [("Allow", "POST,PUT,OPTIONS"),
                            ("Access-Control-Allow-Methods", "POST,PUT,OPTIONS"),
                            ("Content-Length", "0")]
                start_response(status_line(200), headers)
                return [b""]
            if method not in ("POST", "PUT"):
                headers.append(("Allow", "POST,PUT,OPTIONS"))
                raise Deny(405, f"method {method} not allowed, only POST, PUT")
            self._check_client(environ)
            body = self._read_body(environ)
            status, payload, ctype = self._handle(environ, body)
        except Deny as d:
            status, payload, ctype = d.status, self.deny_body(d), self.deny_type
            if d.status == 413:
                # The body is left unread: reading it to reach the next request would cost
                # what the limit is there to save.
                headers.append(("Connection", "close"))
            log.info("%s %s%s: %d %s", self.kind, environ.get("SCRIPT_NAME", ""),
                     environ.get("PATH_INFO", ""), d.status, d.message)
        headers += [("Content-Type", ctype), ("Content-Length", str(len(payload)))]
        start_response(status_line(status), headers)
        return [payload]

    def deny_body(self, d: Deny) -> bytes:
        return error_body(d.message)

    def _common_headers(self, environ: dict) -> list[tuple[str, str]]:
        origin = environ.get("HTTP_ORIGIN")
        if not origin or origin == "null":
            origin = "*"
        headers = [("Access-Control-Allow-Origin", origin),
                   ("Access-Control-Allow-Credentials", "true"),
                   ("Cache-Control", "no-store, no-cache, must-revalidate, max-age=0")]
        req_headers = environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS")
        if req_headers:
            headers.append(("Access-Control-Allow-Headers", req_headers))
        return headers

    def _check_client(self, environ: dict) -> None:
        if self.require_tls and not (self.tls or environ.get("wsgi.url_scheme") == "https"):
            raise Deny(403, "request denied: TLS required")
        if self.require_ip:
            try:
                ip = ipaddress.ip_address(environ.get("REMOTE_ADDR", ""))
            except ValueError:
                raise Deny(403, "request denied based on IP address") from None
            if not any(ip in net for net in self.require_ip):
                raise Deny(403, "request denied based on IP address")

    def _read_body(self, environ: dict) -> bytes:
        ctype = environ.get("CONTENT_TYPE", "")
        if ctype:
            parts = [p.strip().lower() for p in ctype.split(";")]
            if self.decode_json and parts[0] != "application/json":
                raise Deny(400, f"content type must be 'application/json', not '{parts[0]}'")
            for p in parts[1:]:
                name, _, value = p.partition("=")
                if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
                    raise Deny(400, "request encoding must be UTF-8")
        length_s = environ.get("CONTENT_LENGTH", "")
        stream = environ["wsgi.input"]
        if length_s:
            try:
                length = int(length_s)
            except ValueError:
                raise Deny(400, f"invalid Content-Length '{length_s}'") from None
            if length > self.body_limit:
                raise Deny(413, f"request too long: {length} is longer than accepted "
                                f"{self.body_limit}")
            body = stream.read(length) if length > 0 else b""
            if len(body) != length:
                raise Deny(400, "request body shorter than its Content-Length")
            return body
        # no Content-Length (chunked): read at most one byte over the limit
        chunks, total = [], 0
        while total <= self.body_limit:
            data = stream.read(min(_READ, self.body_limit + 1 - total))
            if not data:
                break
            chunks.append(data)
            total += len(data)
        if total > self.body_limit:
            raise Deny(413, f"request too long: longer than accepted {self.body_limit}")
        return b"".join(chunks)

    def _handle(self, environ: dict, body: bytes) -> tuple[int, bytes, str]:
        self.check_signature(environ, body)
        if self.secret:
            query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", ""),
                                                  keep_blank_values=True).items()}
            try:
                signing.verify(query, body, self.key, self.secret, self.delta_limit,
                               self.replay_guard)
            except signing.SignatureError as e:
                raise Deny(e.status, e.message) from None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise Deny(400, "request body is not UTF-8") from None
        if not self.decode_json:
            return self.process(environ, text)
        event = parse_json(text)
        if not isinstance(event, dict):
            raise Deny(400, "request body is valid JSON but not a JSON object")
        return self.process(environ, event)

    def check_signature(self, environ: dict, body: bytes) -> None:
        """Hook for webhook's GitHub signature."""

    def process(self, environ: dict, event: Any) -> tuple[int, bytes, str]:
        raise NotImplementedError

    # -- replies --------------------------------------------------------------------------------

    @staticmethod
    def wamp_error(e: wamp.ApplicationError) -> tuple[int, bytes, str]:
        """A WAMP error: 200 with {"error", "args", "kwargs"} like Crossbar; a timeout is 504 and
        no router in the process 503 (geonode)."""
        status = 200
        if e.error == TIMEOUT:
            status = 504
        elif e.error == NO_ROUTER:
            status = 503
        try:
            body = error_body(e.error, list(e.args), e.kwargs or {})
        except (TypeError, ValueError) as x:
            body = not_json("error", x)
        return status, body, "application/json; charset=UTF-8"


def not_json(what: str, e: Exception) -> bytes:
    """The reply for a WAMP payload with no JSON form (binary, NaN: a msgpack/CBOR peer's),
    as a WAMP JSON client would get it (transport/websocket.py)."""
    return error_body(INVALID_PAYLOAD, [f"{what} cannot be encoded as JSON: {e}"])


def wamp_request(event: dict, key: str) -> tuple[str, list | None, dict | None]:
    """The URI under ``key`` and the ``args``/``kwargs`` of a publisher/caller request body."""
    uri = event.get(key)
    if not isinstance(uri, str) or not uri:
        raise Deny(400, f"request body is missing the key '{key}' (a string)")
    return uri, check_type(event.get("args"), list, "args"), \
        check_type(event.get("kwargs"), dict, "kwargs")


def check_type(value: Any, kind: type, name: str) -> Any:
    if value is None:
        return None
    if not isinstance(value, kind):
        raise Deny(400, f"'{name}' must be a JSON {'array' if kind is list else 'object'}")
    return value
