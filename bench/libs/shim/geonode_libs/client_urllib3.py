"""geonode's two outgoing HTTP clients done by urllib3 (on gevent sockets: the node is
monkey-patched by its CLI, so urllib3's ``socket`` is gevent's).

- ``urllib3``: ``geonode.bridge.httpclient.request`` (forwarder, REST callee) with a
  ``PoolManager`` (kept-alive connections: what urllib3 is for), ``retries=False``, no
  redirects, the body read with a bound. The whole-exchange deadline stays a gevent.Timeout
  (urllib3's timeouts are per socket operation).
- ``urllib3-proxy``: the ``reverseproxy`` path service with an ``HTTPConnectionPool`` per path,
  request bodies streamed from ``wsgi.input``, responses streamed with ``preload_content=False``.
  The proxy's header policy (hop-by-hop removal, X-Forwarded-*) stays geonode's: it is reused
  from ``ReverseProxy._request_head``.
"""

from __future__ import annotations

import errno
import logging
from urllib.parse import urlsplit

import gevent
import urllib3
import urllib3.connection
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.exceptions import (
    HTTPError as U3Error,
)
from urllib3.util import SKIP_HEADER, Retry

log = logging.getLogger("geonode.web.services.reverseproxy")

_managers: dict[int, urllib3.PoolManager] = {}


def _manager(context) -> urllib3.PoolManager:
    key = id(context)
    pm = _managers.get(key)
    if pm is None:
        pm = _managers[key] = urllib3.PoolManager(num_pools=32, maxsize=8, retries=False,
                                                  ssl_context=context)
    return pm


def make_request(httpclient, pool: bool = True):
    HTTPError, Response = httpclient.HTTPError, httpclient.Response

    def request(method, url, body=None, headers=None, timeout=httpclient.DEFAULT_TIMEOUT,
                max_body=httpclient.MAX_BODY, context=None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HTTPError(f"unsupported URL {url!r}")
        if parts.scheme == "https" and context is None:
            context = httpclient.tls_context()
        hdrs = dict(headers.items() if isinstance(headers, dict) else headers or ())
        hdrs.setdefault("User-Agent", SKIP_HEADER)
        if body is not None or method in ("POST", "PUT", "PATCH"):
            hdrs["Content-Length"] = str(len(body or b""))
        pm = _manager(context if parts.scheme == "https" else None)
        if not pool:
            return _one_shot(parts, method, url, body, hdrs, timeout, max_body, context,
                             HTTPError, Response)
        try:
            with gevent.Timeout(timeout,
                                HTTPError(f"{method} {url}: no answer within {timeout} s")):
                resp = pm.request(method, url, body=body, headers=hdrs, redirect=False,
                                  retries=False, preload_content=False, decode_content=False,
                                  timeout=urllib3.Timeout(connect=timeout, read=timeout))
                try:
                    data = resp.read(max_body + 1, decode_content=False)
                    if len(data) > max_body:
                        raise HTTPError(f"{method} {url}: response body over {max_body} bytes")
                    return Response(resp.status, resp.reason or "",
                                    list(resp.headers.iteritems()), data)
                finally:
                    resp.release_conn()
        except HTTPError:
            raise
        except (OSError, U3Error) as e:
            raise HTTPError(f"{method} {url}: {type(e).__name__}: {e}") from e

    return request


def _one_shot(parts, method, url, body, hdrs, timeout, max_body, context, HTTPError, Response):
    """One connection per request, like geonode's client: urllib3's HTTP(S)Connection."""
    if parts.scheme == "https":
        conn = urllib3.connection.HTTPSConnection(parts.hostname, parts.port or 443,
                                                  timeout=timeout, ssl_context=context)
    else:
        conn = urllib3.connection.HTTPConnection(parts.hostname, parts.port or 80,
                                                 timeout=timeout)
    path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    try:
        with gevent.Timeout(timeout, HTTPError(f"{method} {url}: no answer within {timeout} s")):
            conn.request(method, path, body=body, headers=hdrs, preload_content=False,
                         decode_content=False)
            resp = conn.getresponse()
            data = resp.read(max_body + 1, decode_content=False)
            if len(data) > max_body:
                raise HTTPError(f"{method} {url}: response body over {max_body} bytes")
            return Response(resp.status, resp.reason or "", list(resp.headers.iteritems()),
                            data)
    except HTTPError:
        raise
    except (OSError, U3Error) as e:
        raise HTTPError(f"{method} {url}: {type(e).__name__}: {e}") from e
    finally:
        conn.close()


class _LimitedInput:
    """``wsgi.input`` as a file for urllib3 (which reads it in blocks)."""

    def __init__(self, stream, length: int) -> None:
        self.stream, self.left = stream, length

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        data = self.stream.read(self.left if n < 0 else min(n, self.left))
        if not data:
            raise ValueError("request body shorter than its Content-Length")
        self.left -= len(data)
        return data


def make_proxy(rp):
    class Urllib3Proxy(rp.ReverseProxy):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            self.pool = urllib3.HTTPConnectionPool(
                self.host, self.port, maxsize=rp.MAX_IDLE, block=False, retries=False,
                timeout=urllib3.Timeout(connect=rp.CONNECT_TIMEOUT, read=self.timeout))

        def __call__(self, environ, start_response):
            method = environ.get("REQUEST_METHOD", "GET")
            head = method == "HEAD"
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return rp.text_response(start_response, 400, "bad Content-Length", head=head)
            if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
                mode = "chunked"
            else:
                mode = "length" if length > 0 else "none"
            lines = self._request_head(environ, mode, length).decode("latin-1").split("\r\n")
            hdrs = urllib3.HTTPHeaderDict()
            for line in lines[1:]:
                if line:
                    k, _, v = line.partition(": ")
                    hdrs.add(k, v)
            if "user-agent" not in hdrs:
                hdrs["User-Agent"] = SKIP_HEADER
            if "accept-encoding" not in hdrs:
                hdrs["Accept-Encoding"] = SKIP_HEADER
            stream = environ["wsgi.input"]
            if mode == "chunked":
                del hdrs["Transfer-Encoding"]
                body = iter(lambda: stream.read(rp.CHUNK), b"")
            elif mode == "length":
                body = _LimitedInput(stream, length)
            else:
                body = None
            # geonode retries a body-less GET/HEAD/OPTIONS once when its pooled connection
            # turned out dead: urllib3's Retry says the same (one read retry, those methods).
            retries = (Retry(total=1, connect=0, read=1, redirect=False, status=0,
                             other=0, allowed_methods=rp._RETRYABLE_METHODS)
                       if body is None else False)
            try:
                resp = self.pool.urlopen(method, self._target(environ), body=body,
                                         headers=hdrs, retries=retries, redirect=False,
                                         assert_same_host=False, preload_content=False,
                                         decode_content=False, chunked=mode == "chunked")
            except ValueError as e:
                return rp.text_response(start_response, 400, f"bad request: {e}", head=head)
            except NewConnectionError as e:   # (a subclass of ConnectTimeoutError)
                log.warning("reverseproxy: %s:%s unreachable: %s", self.host, self.port, e)
                return rp.text_response(start_response, 502, "bad gateway: upstream "
                                        "unreachable", head=head)
            except (ConnectTimeoutError, ReadTimeoutError, TimeoutError) as e:
                log.warning("reverseproxy: %s:%s: %s", self.host, self.port, e)
                return rp.text_response(start_response, 504, f"gateway timeout: {e}",
                                        head=head)
            except (MaxRetryError, U3Error, OSError) as e:
                reason = getattr(e, "reason", None) or e
                log.warning("reverseproxy: %s:%s: %s", self.host, self.port, e)
                if isinstance(reason, (ConnectTimeoutError, ReadTimeoutError)) and \
                        not isinstance(reason, NewConnectionError):
                    return rp.text_response(start_response, 504, "gateway timeout: "
                                            + type(reason).__name__, head=head)
                # (cut: a NewConnectionError's text repeats the whole connection object)
                return rp.text_response(start_response, 502,
                                        f"bad gateway: {str(reason)[-120:]}", head=head)
            headers = list(resp.headers.iteritems())
            tokens = rp._connection_tokens(", ".join(v for k, v in headers
                                                     if k.lower() == "connection"))
            drop = rp.HOP_BY_HOP | tokens
            out = [(k, v) for k, v in headers if k.lower() not in drop]
            if any(k.lower() == "transfer-encoding" for k, _ in headers):
                out = [(k, v) for k, v in out if k.lower() != "content-length"]
            start_response(f"{resp.status} {resp.reason or rp.phrase(resp.status)}", out)
            if head or resp.status in (204, 304):
                resp.release_conn()
                return []
            return self._body(resp)

        def _body(self, resp):
            try:
                yield from resp.stream(rp.CHUNK, decode_content=False)
            except (U3Error, OSError) as e:
                log.warning("reverseproxy: %s:%s: response body aborted: %s",
                            self.host, self.port, e)
                resp.close()
                raise ConnectionResetError(errno.ECONNRESET, str(e)) from None
            finally:
                resp.release_conn()

    def build(cfg, ctx):
        p = original_build(cfg, ctx)
        return Urllib3Proxy(p.host, p.port, p.prefix, p.forwarded_port, p.forwarded_proto,
                            p.timeout)

    original_build = rp.build
    return build


def install(module, variant: str) -> None:
    if variant in ("urllib3", "urllib3-nopool"):
        module.request = make_request(module, pool=variant == "urllib3")
    else:
        module.build = make_proxy(module)
