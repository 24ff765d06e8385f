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
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Iterable, Iterator
from urllib.parse import quote

from gevent import socket

from geonode.config import ConfigError
from geonode.web.context import BuildContext
from geonode.web.services.plain import phrase, text_response

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
MAX_LINE = 64 * 1024
MAX_HEADERS = 100
CONNECT_TIMEOUT = 10.0
DEFAULT_TIMEOUT = 60.0
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
                 forwarded_proto: str | None, timeout: float) -> None:
        self.host = host
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
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (e.g. an odd resolver answer): fine without it
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
        rest = environ.get("PATH_INFO", "").encode("latin-1")
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

    @staticmethod
    def _send_body(conn: _Conn, environ: dict, mode: str, length: int) -> None:
        stream = environ["wsgi.input"]
        if mode == "length":
            while length > 0:
                data = stream.read(min(CHUNK, length))
                if not data:
                    raise ValueError("request body shorter than its Content-Length")
                length -= len(data)
                conn.sock.sendall(data)
        elif mode == "chunked":
            while data := stream.read(CHUNK):
                conn.sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
            conn.sock.sendall(b"0\r\n\r\n")

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
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
        request_head = self._request_head(environ, body_mode, length)
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


def build(cfg: dict, ctx: BuildContext) -> ReverseProxy:
    """The WSGI app for a ``reverseproxy`` path."""
    host = cfg.get("host")
    if not isinstance(host, str) or not host:
        raise ConfigError(f"{ctx.json_path}.host: a host name is required")
    port = cfg.get("port", 80)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{ctx.json_path}.port: must be a port number 1-65535")
    path = cfg.get("path", "") or ""
    timeout = cfg.get("timeout", DEFAULT_TIMEOUT)
    return ReverseProxy(host, port, path, cfg.get("forwarded_port"),
                        cfg.get("forwarded_proto"), float(timeout))
