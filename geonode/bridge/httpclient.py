"""A small outgoing HTTP client over gevent sockets, for the forwarder and the REST callee.

``http.client`` does the protocol; the socket is explicitly a gevent socket (and TLS a gevent
SSLContext), so a request only ever blocks its own greenlet whether or not the process is
monkey-patched. One connection per request; the whole exchange is bounded by ``timeout``
(gevent.Timeout) and the response body by ``max_body``.

Not the reverse proxy's client (``geonode.web.services.reverseproxy``): that one streams
bodies both ways and pools connections but speaks no TLS; this one needs https (``tls_ca``)
and whole, bounded bodies for small one-shot requests, which ``http.client`` already does.
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.socket
import gevent.ssl

DEFAULT_TIMEOUT = 10.0
MAX_BODY = 16 * 1024 * 1024


class HTTPError(Exception):
    """The request could not be made or answered (connection, timeout, size, bad URL)."""


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header_lists(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in self.headers:
            out.setdefault(k, []).append(v)
        return out

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class _Conn(http.client.HTTPConnection):
    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self._create_connection = gevent.socket.create_connection


class _TLSConn(http.client.HTTPSConnection):
    def __init__(self, *a, **kw) -> None:
        if kw.get("context") is None:
            kw["context"] = tls_context()
        super().__init__(*a, **kw)
        self._create_connection = gevent.socket.create_connection


def config_path(config: Any, path: str | None) -> str | None:
    """``path`` from a component's extra, relative to the node config's folder."""
    if not path:
        return None
    base = getattr(config, "config_dir", None)
    return str(Path(base) / path) if base is not None else path


def tls_context(ca_file: str | None = None) -> gevent.ssl.SSLContext:
    """A verifying client context (gevent's, so the handshake is cooperative); ``ca_file``
    (PEM) replaces the system CAs, e.g. for a private CA or a self-signed server."""
    if ca_file:
        return gevent.ssl.create_default_context(cafile=ca_file)
    return gevent.ssl.create_default_context()


def request(method: str, url: str, body: bytes | None = None,
            headers: dict[str, str] | list[tuple[str, str]] | None = None,
            timeout: float = DEFAULT_TIMEOUT, max_body: int = MAX_BODY,
            context: gevent.ssl.SSLContext | None = None) -> Response:
    """Make one HTTP request; raise HTTPError when it fails or takes over ``timeout`` s."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HTTPError(f"unsupported URL {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = _TLSConn(parts.hostname, parts.port,
                                                    timeout=timeout, context=context)
    else:
        conn = _Conn(parts.hostname, parts.port, timeout=timeout)
    try:
        with gevent.Timeout(timeout, HTTPError(f"{method} {url}: no answer within {timeout} s")):
            conn.putrequest(method, path, skip_accept_encoding=True)
            for k, v in (headers.items() if isinstance(headers, dict) else headers or ()):
                conn.putheader(k, v)
            if body is not None or method in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body or b"")))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read(max_body + 1)
            if len(data) > max_body:
                raise HTTPError(f"{method} {url}: response body over {max_body} bytes")
            return Response(resp.status, resp.reason, list(resp.getheaders()), data)
    except HTTPError:
        raise
    except (OSError, http.client.HTTPException) as e:
        raise HTTPError(f"{method} {url}: {type(e).__name__}: {e}") from e
    finally:
        conn.close()
