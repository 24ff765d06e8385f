"""``reverseproxy`` path service: HTTP/1.1 to an upstream server over gevent sockets.

A small client of our own: bodies stream both ways in 64 KiB pieces (never buffered whole),
and everything is socket I/O on the hub. ``gevent.socket`` is used explicitly so the service
behaves the same whether or not the process is monkey-patched.

Upstream connections are kept alive and reused, but only where that cannot change what a
client sees: a pooled connection is taken only by body-less GET/HEAD/OPTIONS requests (which
may be retried once on a fresh connection if the pooled one turns out to be dead), and a
connection goes back to the pool only after a response that was framed exactly (length or
chunked), fully read, with nothing left over in our buffer.

Not ``http.client`` (as ``geonode.bridge.httpclient``, the bridge's one-shot client): it
shows neither an early upstream answer after a failed upload nor the leftover bytes that make
a pooled connection unsafe to reuse; this module's own parser sees both.

No request leaves the configured upstream ``path``: the part of the URL below the mount
(percent-decoded once by the server) has its dot-segments resolved inside the mount, and a
``..`` that would climb out of it is a 400, as is anything an upstream might still read as a
dot-segment after our resolution (``%2e%2e`` sent double-encoded, ``..\\``, Tomcat's ``..;``)
or cut the path at (a control character such as NUL). Empty segments (``//``) are merged, so
the target never starts with ``//`` (which some upstreams read as a host).

A request body longer than ``max_body_size`` (the path's, else the transport's; see
``geonode.web.limits``) is refused with 413: before the upstream is contacted when its
Content-Length says so, else when the chunks forwarded add up to more (the upstream
connection is then dropped, so it never sees the request complete).
"""

from __future__ import annotations

import errno
import logging
import re
import time
from collections.abc import Iterable, Iterator
from urllib.parse import quote, unquote

from gevent import socket

from geonode.config.model import DEFAULT_PROXY_TIMEOUT, ReverseProxyService
from geonode.endpoints import set_nodelay
from geonode.httpstatus import phrase
from geonode.web.context import BuildContext
from geonode.web.limits import max_body_size
from geonode.web.services.plain import text_response

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
MAX_LINE = 64 * 1024
MAX_HEADERS = 100
CONNECT_TIMEOUT = 10.0
DEFAULT_TIMEOUT = DEFAULT_PROXY_TIMEOUT
MAX_IDLE = 32          # pooled upstream connections per reverseproxy path
IDLE_TTL = 4.0         # seconds; below common upstream keep-alive timeouts (gunicorn: 2-5 s)

# RFC 9110 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
# Set by the proxy itself; what the client sent for them is replaced.
_OWN = frozenset({"host", "x-forwarded-host", "x-forwarded-port", "x-forwarded-proto",
                  "x-real-ip", "x-forwarded-for", "expect", "content-length", "content-type"})
_RETRYABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# Control characters (C0, DEL): a C upstream may end the path at a NUL, a logger at a newline.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What an upstream may take as a path separator inside one of our segments.
_SEPARATORS = re.compile(r"[/\\]")


class PathRefused(ValueError):
    """A request path the proxy will not forward (400)."""


class BodyTooLarge(ValueError):
    """A chunked request body went past ``max_body_size`` while being forwarded (413)."""


class ClientBodyError(Exception):
    """Reading the client's request body failed (its fault, not the upstream's)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _read_body(stream, n: int) -> bytes:
    """``stream.read(n)``, a failure of it being the client's: a stalled body is a 408 (not a
    504 blaming the upstream, as a timeout while sending to it is), a broken one a 400."""
    try:
        return stream.read(n)
    except TimeoutError:
        raise ClientBodyError(408, "request body not received within client_timeout") from None
    except OSError as e:
        raise ClientBodyError(400, f"unreadable request body: {e}") from None


def _looks_like_dots(segment: str) -> bool:
    """Whether an upstream could still read ``segment`` (no ``/`` in it) as ``.``/``..``.

    After one percent-decoding (the server's) these remain: a backslash that some upstreams
    (IIS, some Java servers) take for a slash, a ``;params`` suffix that Tomcat and Spring
    strip before resolving, and a second percent-encoding layer (``%252e%252e``) that an
    upstream decoding twice would unwrap. Windows drops trailing dots and spaces from a
    name, so a piece of nothing but dots and spaces (``...``, ``.. ``) counts too."""
    for form in (segment, unquote(segment)):
        for piece in _SEPARATORS.split(form):
            name = piece.split(";", 1)[0]
            if "." in name and not name.strip(". "):
                return True
    return False


def resolve_path(path: str) -> str:
    """``PATH_INFO`` below the mount with its dot-segments resolved inside the mount (RFC 3986
    5.2.4) and ``//`` merged: ``""``, or ``/`` followed by the rest. :class:`PathRefused` for
    a path that climbs above the mount or that an upstream could read differently."""
    if _CONTROL.search(path) or ("%" in path and _CONTROL.search(unquote(path))):
        raise PathRefused("control character in the path")
    if not path:
        return ""
    out: list[str] = []
    segments = path.split("/")
    for segment in segments:
        if segment == "" or segment == ".":
            continue
        if segment == "..":
            if not out:
                raise PathRefused("the path climbs above the proxied path")
            out.pop()
            continue
        if ("." in segment or "%" in segment or "\\" in segment) and _looks_like_dots(segment):
            raise PathRefused("dot-segment the upstream could resolve differently")
        out.append(segment)
    # A path ending in "/", "/." or "/.." names a directory: keep its trailing slash.
    trailing = segments[-1] in ("", ".", "..") and bool(out)
    return "/" + "/".join(out) + ("/" if trailing else "")


class UpstreamError(Exception):
    """The upstream broke the exchange; ``status`` is what the client gets (502 or 504)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _clean(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ") if "\r" in value or "\n" in value else value


def _connection_tokens(value: str | None) -> set[str]:
    return {t.strip().lower() for t in (value or "").split(",") if t.strip()}


class _Conn:
    """One upstream connection with its own read buffer (so leftovers are visible)."""

    __slots__ = ("sock", "buf", "idle_since")

    def __init__(self, sock) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.idle_since = 0.0

    def _recv(self, n: int) -> bytes:
        try:
            return self.sock.recv(n)
        except TimeoutError:
            raise UpstreamError(504, "upstream timed out") from None
        except OSError as e:
            raise UpstreamError(502, f"upstream connection failed: {e.strerror or e}") from None

    def line(self) -> bytes:
        """The next line including its end, or what is left (maybe b"") at EOF."""
        start = 0
        while True:
            i = self.buf.find(b"\n", start)
            if i >= 0:
                out = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return out
            if len(self.buf) > MAX_LINE:
                raise UpstreamError(502, "upstream sent an over-long line")
            start = len(self.buf)
            data = self._recv(CHUNK)
            if not data:
                out = bytes(self.buf)
                self.buf.clear()
                return out
            self.buf += data

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; b"" at EOF."""
        if self.buf:
            out = bytes(self.buf[:n])
            del self.buf[:n]
            return out
        return self._recv(n)

    def reusable(self) -> bool:
        """True when the idle connection is still open and silent."""
        if self.buf or time.monotonic() - self.idle_since > IDLE_TTL:
            return False
        try:
            # gevent keeps the OS-level socket (``_sock``) non-blocking: this never waits.
            self.sock._sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False  # it returned: b"" (closed by the upstream) or unsolicited bytes

    def close(self) -> None:
        self.sock.close()


def _read_head(conn: _Conn) -> tuple[str, int, str, list[tuple[str, str]]]:
    """Version, status, reason and headers of the next response, skipping 1xx responses."""
    while True:
        line = conn.line()
        if not line:
            raise UpstreamError(502, "upstream closed the connection without a response")
        parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise UpstreamError(502, "upstream sent an invalid status line")
        version, code = parts[0], int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers: list[tuple[str, str]] = []
        while True:
            line = conn.line()
            if line in (b"\r\n", b"\n"):
                break
            if not line.endswith(b"\n"):
                raise UpstreamError(502, "upstream closed the connection in the headers")
            text = line.decode("latin-1").rstrip("\r\n")
            if text[0] in " \t" and headers:
                # obs-fold: a continuation of the previous header.
                headers[-1] = (headers[-1][0], headers[-1][1] + " " + text.strip())
                continue
            name, sep, value = text.partition(":")
            if not sep or not name or name != name.strip():
                raise UpstreamError(502, "upstream sent an invalid header line")
            headers.append((name, value.strip()))
            if len(headers) > MAX_HEADERS:
                raise UpstreamError(502, "upstream sent too many headers")
        if 100 <= code < 200:
            if code == 101:
                raise UpstreamError(502, "upstream switched protocols unasked")
            continue
        if not 200 <= code <= 999:
            raise UpstreamError(502, "upstream sent an invalid status code")
        return version, code, reason, headers


class _Body:
    """The upstream response body as a WSGI iterable; gives the connection back when done."""

    def __init__(self, proxy: ReverseProxy, conn: _Conn, mode: str, length: int,
                 keep: bool) -> None:
        self.proxy = proxy
        self.conn: _Conn | None = conn
        self.mode = mode          # "length" | "chunked" | "eof"
        self.remaining = length
        self.keep = keep
        self.done = False

    def __iter__(self) -> Iterator[bytes]:
        conn = self.conn
        assert conn is not None
        try:
            if self.mode == "length":
                while self.remaining > 0:
                    data = conn.read(min(CHUNK, self.remaining))
                    if not data:
                        raise UpstreamError(502, "upstream closed the connection early")
                    self.remaining -= len(data)
                    yield data
            elif self.mode == "eof":
                while data := conn.read(CHUNK):
                    yield data
            else:
                yield from self._chunks(conn)
            self.done = True
        except UpstreamError as e:
            # Headers are out already: the only honest signal left is a broken connection.
            # ECONNRESET is the error the server closes on quietly (no traceback): the one
            # log line is ours.
            log.warning("reverseproxy: %s:%s: response body aborted: %s",
                        self.proxy.host, self.proxy.port, e)
            raise ConnectionResetError(errno.ECONNRESET, str(e)) from None
        finally:
            self.close()

    @staticmethod
    def _chunks(conn: _Conn) -> Iterator[bytes]:
        while True:
            size_line = conn.line()
            if not size_line.endswith(b"\n"):
                raise UpstreamError(502, "upstream closed the connection in a chunked body")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise UpstreamError(502, "upstream sent a bad chunk size") from None
            if size == 0:
                # Trailers are hop-by-hop here: read and drop them.
                while True:
                    line = conn.line()
                    if not line.endswith(b"\n"):
                        raise UpstreamError(502, "upstream closed the connection in trailers")
                    if line in (b"\r\n", b"\n"):
                        return
            while size > 0:
                data = conn.read(min(CHUNK, size))
                if not data:
                    raise UpstreamError(502, "upstream closed the connection in a chunk")
                size -= len(data)
                yield data
            if conn.line() not in (b"\r\n", b"\n"):
                raise UpstreamError(502, "upstream sent a malformed chunk")

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        if self.done and self.keep:
            self.proxy.release(conn)
        else:
            conn.close()


class ReverseProxy:
    def __init__(self, host: str, port: int, path: str, forwarded_port: int | None,
                 forwarded_proto: str | None, timeout: float,
                 max_body_size: int | None = None) -> None:
        self.host = host
        self.max_body_size = max_body_size
        self.port = port
        self.prefix = ("/" + path.strip("/")) if path.strip("/") else ""
        self.forwarded_port = forwarded_port
        self.forwarded_proto = forwarded_proto
        self.timeout = timeout
        bracket = f"[{host}]" if ":" in host else host
        self.host_header = bracket if port == 80 else f"{bracket}:{port}"
        self.idle: list[_Conn] = []

    # -- connections -----------------------------------------------------------------------

    def _connect(self) -> _Conn:
        sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        set_nodelay(sock)
        sock.settimeout(self.timeout)
        return _Conn(sock)

    def _take(self) -> _Conn | None:
        while self.idle:
            conn = self.idle.pop()  # most recent first: the least likely to be timed out
            if conn.reusable():
                return conn
            conn.close()
        return None

    def release(self, conn: _Conn) -> None:
        if len(self.idle) >= MAX_IDLE or conn.buf:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    # -- request ---------------------------------------------------------------------------

    def _target(self, environ: dict) -> str:
        """The upstream request target; :class:`PathRefused` when it would leave ``path``."""
        rest = resolve_path(environ.get("PATH_INFO", "")).encode("latin-1")
        target = self.prefix + quote(rest, safe="/:@!$&'()*+,;=~")
        if not target.startswith("/"):
            target = "/" + target
        if environ.get("QUERY_STRING"):
            target += "?" + environ["QUERY_STRING"]
        return target

    def _request_head(self, environ: dict, body_mode: str, length: int) -> bytes:
        drop = HOP_BY_HOP | _OWN | _connection_tokens(environ.get("HTTP_CONNECTION"))
        lines = [f"{environ['REQUEST_METHOD']} {self._target(environ)} HTTP/1.1",
                 f"Host: {self.host_header}"]
        for key, value in environ.items():
            if not key.startswith("HTTP_"):
                continue
            name = key[5:].replace("_", "-").title()
            if name.lower() in drop:
                continue
            # obs-folded values arrive with line breaks: never forward those raw.
            lines.append(f"{name}: {_clean(value)}")
        if environ.get("CONTENT_TYPE"):
            lines.append(f"Content-Type: {_clean(environ['CONTENT_TYPE'])}")
        if body_mode == "length":
            lines.append(f"Content-Length: {length}")
        elif body_mode == "chunked":
            lines.append("Transfer-Encoding: chunked")
        remote = environ.get("REMOTE_ADDR", "")
        xff = environ.get("HTTP_X_FORWARDED_FOR")
        host = environ.get("HTTP_HOST", environ.get("SERVER_NAME", ""))
        lines += [
            f"X-Forwarded-Host: {_clean(host)}",
            f"X-Forwarded-For: {_clean(xff) + ', ' + remote if xff else remote}",
            f"X-Forwarded-Port: {self.forwarded_port or environ.get('SERVER_PORT', '')}",
            f"X-Forwarded-Proto: {self.forwarded_proto or environ.get('wsgi.url_scheme', 'http')}",
            f"X-Real-IP: {remote}",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send_body(self, conn: _Conn, environ: dict, mode: str, length: int) -> None:
        stream = environ["wsgi.input"]
        if mode == "length":
            while length > 0:
                data = _read_body(stream, min(CHUNK, length))
                if not data:
                    raise ValueError("request body shorter than its Content-Length")
                length -= len(data)
                conn.sock.sendall(data)
        elif mode == "chunked":
            limit = self.max_body_size
            left = -1 if limit is None else limit
            while data := _read_body(stream, CHUNK if limit is None else min(CHUNK, left + 1)):
                if limit is not None:
                    left -= len(data)
                    if left < 0:
                        raise BodyTooLarge(f"request body larger than max_body_size "
                                           f"({limit} bytes)")
                conn.sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
            conn.sock.sendall(b"0\r\n\r\n")

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:  # noqa: C901 - one request's exchange with the upstream; a branch per failure and its status
        method = environ.get("REQUEST_METHOD", "GET")
        head = method == "HEAD"
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return text_response(start_response, 400, "bad Content-Length", head=head)
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            body_mode = "chunked"
        else:
            body_mode = "length" if length > 0 else "none"
            if self.max_body_size is not None and length > self.max_body_size:
                return self._refuse(start_response, 413, f"request body of {length} bytes "
                                    f"larger than max_body_size ({self.max_body_size} bytes)",
                                    environ, head)
        try:
            request_head = self._request_head(environ, body_mode, length)
        except PathRefused as e:
            return self._refuse(start_response, 400, str(e), environ, head)
        retryable = method in _RETRYABLE_METHODS and body_mode == "none"
        conn = self._take() if retryable else None

        while True:
            reused = conn is not None
            if conn is None:
                try:
                    conn = self._connect()
                except TimeoutError:
                    return text_response(start_response, 504,
                                  "gateway timeout: upstream did not accept", head=head)
                except OSError as e:
                    log.warning("reverseproxy: %s:%s unreachable: %s", self.host, self.port, e)
                    return text_response(start_response, 502, "bad gateway: upstream unreachable",
                                         head=head)
            sent = False
            try:
                try:
                    conn.sock.sendall(request_head)
                    self._send_body(conn, environ, body_mode, length)
                    sent = True
                except TimeoutError:
                    raise UpstreamError(504, "upstream stalled reading the request") from None
                except OSError:
                    # The upstream may have answered early (e.g. 413) and closed: read that.
                    pass
                version, code, reason, headers = _read_head(conn)
                break
            except UpstreamError as e:
                conn.close()
                if reused and e.status == 502:
                    # A pooled connection the upstream dropped meanwhile: once more, fresh.
                    conn = None
                    continue
                log.warning("reverseproxy: %s:%s: %s", self.host, self.port, e)
                word = "gateway timeout" if e.status == 504 else "bad gateway"
                return text_response(start_response, e.status, f"{word}: {e}", head=head)
            except BodyTooLarge as e:
                conn.close()  # the upstream never sees the request complete
                return self._refuse(start_response, 413, str(e), environ, head)
            except ClientBodyError as e:
                conn.close()
                return self._refuse(start_response, e.status, str(e), environ, head)
            except ValueError as e:
                conn.close()
                return text_response(start_response, 400, f"bad request: {e}", head=head)
            except BaseException:
                conn.close()
                raise

        tokens = _connection_tokens(", ".join(v for k, v in headers if k.lower() == "connection"))
        chunked = any(k.lower() == "transfer-encoding" and "chunked" in v.lower()
                      for k, v in headers)
        out = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP | tokens
               and not (chunked and k.lower() == "content-length")]
        lengths = {v.strip() for k, v in out if k.lower() == "content-length"}
        if len(lengths) > 1 or (lengths and not next(iter(lengths)).isdigit()):
            # Ambiguous framing is how responses get smuggled: refuse it.
            conn.close()
            log.warning("reverseproxy: %s:%s sent an invalid Content-Length", self.host, self.port)
            return text_response(start_response, 502, "bad gateway: upstream sent an invalid "
                          "Content-Length", head=head)
        clen = next(iter(lengths), None)
        keep = sent and version == "HTTP/1.1" and "close" not in tokens
        start_response(f"{code} {reason or phrase(code)}", out)
        if head or code in (204, 304):
            if keep:
                self.release(conn)
            else:
                conn.close()
            return []
        if chunked:
            return _Body(self, conn, "chunked", 0, keep)
        if clen is not None:
            return _Body(self, conn, "length", int(clen), keep)
        return _Body(self, conn, "eof", 0, False)


    def _refuse(self, start_response, status: int, reason: str, environ: dict,
                head: bool) -> list[bytes]:
        """A request not forwarded: the client's fault, one log line. The connection closes,
        since a request body may be left unread."""
        log.warning("reverseproxy: %s %s%s refused: %s", environ.get("REQUEST_METHOD"),
                    environ.get("SCRIPT_NAME", ""), _CONTROL.sub("?", environ.get("PATH_INFO", "")),
                    reason)
        return text_response(start_response, status, f"{phrase(status)}: {reason}",
                             [("Connection", "close")], head=head)


def build(cfg: ReverseProxyService, ctx: BuildContext) -> ReverseProxy:
    """The WSGI app for a ``reverseproxy`` path."""
    return ReverseProxy(cfg.host, cfg.port, cfg.path, cfg.forwarded_port, cfg.forwarded_proto,
                        cfg.timeout, max_body_size(cfg.extra, ctx))
