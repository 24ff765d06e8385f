"""``reverseproxy`` path service: HTTP/1.1 to an upstream server over gevent sockets.

A deliberately small client: one upstream connection per request (``Connection: close``), so
the response body ends either at its framing or at the upstream's close, and nothing is
pooled that could leak state between clients. Bodies stream both ways in 64 KiB pieces; the
request body is never buffered whole, nor is the response. Everything here is socket I/O, so
it runs on the hub; ``gevent.socket`` is used explicitly so the service behaves the same
whether or not the process is monkey-patched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from urllib.parse import quote

from gevent import socket

from geonode.config import ConfigError
from geonode.web.context import BuildContext

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
MAX_LINE = 64 * 1024
MAX_HEADERS = 100
CONNECT_TIMEOUT = 10.0
DEFAULT_TIMEOUT = 60.0

# RFC 9110 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
# Set by the proxy itself; what the client sent for them is replaced.
_OWN = frozenset({"host", "x-forwarded-host", "x-forwarded-port", "x-forwarded-proto",
                  "x-real-ip", "x-forwarded-for", "expect"})



class UpstreamError(Exception):
    """The upstream broke the exchange; ``status`` is what the client gets (502 or 504)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _plain(start_response, status: int, text: str, head: bool = False) -> list[bytes]:
    body = (text + "\n").encode()
    start_response(f"{status} {HTTPStatus(status).phrase}",
                   [("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(body)))])
    return [] if head else [body]


def _clean(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ") if "\r" in value or "\n" in value else value


def _connection_tokens(value: str | None) -> set[str]:
    return {t.strip().lower() for t in (value or "").split(",") if t.strip()}


class _Reader:
    """Buffered reads from the upstream socket, with timeouts mapped to UpstreamError."""

    def __init__(self, sock) -> None:
        self.f = sock.makefile("rb", buffering=CHUNK)

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except TimeoutError:
            raise UpstreamError(504, "upstream timed out") from None
        except OSError as e:
            raise UpstreamError(502, f"upstream connection failed: {e.strerror or e}") from None

    def line(self) -> bytes:
        data = self._guard(self.f.readline, MAX_LINE + 1)
        if len(data) > MAX_LINE:
            raise UpstreamError(502, "upstream sent an over-long line")
        return data

    def read(self, n: int) -> bytes:
        return self._guard(self.f.read1, n)

    def read_exact(self, n: int) -> bytes:
        data = self._guard(self.f.read, n)
        if len(data) != n:
            raise UpstreamError(502, "upstream closed the connection early")
        return data

    def close(self) -> None:
        self.f.close()


def _read_head(reader: _Reader) -> tuple[int, str, list[tuple[str, str]]]:
    """Status line and headers of the next response, skipping 1xx interim responses."""
    while True:
        line = reader.line()
        if not line:
            raise UpstreamError(502, "upstream closed the connection without a response")
        parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise UpstreamError(502, "upstream sent an invalid status line")
        code = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers: list[tuple[str, str]] = []
        while True:
            line = reader.line()
            if line in (b"\r\n", b"\n"):
                break
            if not line:
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
        return code, reason, headers


class _Body:
    """The upstream response body as a WSGI iterable; closes the upstream socket at the end."""

    def __init__(self, sock, reader: _Reader, mode: str, length: int) -> None:
        self.sock = sock
        self.reader = reader
        self.mode = mode          # "length" | "chunked" | "eof" | "none"
        self.remaining = length

    def __iter__(self) -> Iterator[bytes]:
        try:
            if self.mode == "length":
                while self.remaining > 0:
                    data = self.reader.read(min(CHUNK, self.remaining))
                    if not data:
                        raise UpstreamError(502, "upstream closed the connection early")
                    self.remaining -= len(data)
                    yield data
            elif self.mode == "eof":
                while data := self.reader.read(CHUNK):
                    yield data
            elif self.mode == "chunked":
                yield from self._chunks()
        except UpstreamError as e:
            # Headers are out already: the only honest signal left is a broken connection.
            log.warning("reverseproxy: response body aborted: %s", e)
            raise
        finally:
            self.close()

    def _chunks(self) -> Iterator[bytes]:
        while True:
            size_line = self.reader.line().split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise UpstreamError(502, "upstream sent a bad chunk size") from None
            if size == 0:
                # Trailers are hop-by-hop here: read and drop them.
                while self.reader.line() not in (b"\r\n", b"\n", b""):
                    pass
                return
            while size > 0:
                data = self.reader.read(min(CHUNK, size))
                if not data:
                    raise UpstreamError(502, "upstream closed the connection in a chunk")
                size -= len(data)
                yield data
            if self.reader.line() not in (b"\r\n", b"\n"):
                raise UpstreamError(502, "upstream sent a malformed chunk")

    def close(self) -> None:
        if self.sock is not None:
            self.reader.close()
            self.sock.close()
            self.sock = None


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
            if name.lower() in drop or name.lower() in ("content-length", "content-type"):
                continue
            # obs-folded values arrive with line breaks: never forward those raw.
            lines.append(f"{name}: {_clean(value)}")
        if environ.get("CONTENT_TYPE"):
            lines.append(f"Content-Type: {environ['CONTENT_TYPE']}")
        if body_mode == "length":
            lines.append(f"Content-Length: {length}")
        elif body_mode == "chunked":
            lines.append("Transfer-Encoding: chunked")
        remote = environ.get("REMOTE_ADDR", "")
        xff = environ.get("HTTP_X_FORWARDED_FOR")
        lines += [
            f"X-Forwarded-Host: {environ.get('HTTP_HOST', environ.get('SERVER_NAME', ''))}",
            f"X-Forwarded-For: {xff + ', ' + remote if xff else remote}",
            f"X-Forwarded-Port: {self.forwarded_port or environ.get('SERVER_PORT', '')}",
            f"X-Forwarded-Proto: {self.forwarded_proto or environ.get('wsgi.url_scheme', 'http')}",
            f"X-Real-IP: {remote}",
            "Connection: close",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send_body(self, sock, environ: dict, mode: str, length: int) -> None:
        stream = environ["wsgi.input"]
        if mode == "length":
            while length > 0:
                data = stream.read(min(CHUNK, length))
                if not data:
                    raise ValueError("request body shorter than its Content-Length")
                length -= len(data)
                sock.sendall(data)
        elif mode == "chunked":
            while data := stream.read(CHUNK):
                sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
            sock.sendall(b"0\r\n\r\n")

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        head = method == "HEAD"
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return _plain(start_response, 400, "bad Content-Length", head)
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            body_mode = "chunked"
        else:
            body_mode = "length" if length > 0 else "none"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        except TimeoutError:
            return _plain(start_response, 504, "gateway timeout: upstream did not accept", head)
        except OSError as e:
            log.warning("reverseproxy: %s:%s unreachable: %s", self.host, self.port, e)
            return _plain(start_response, 502, "bad gateway: upstream unreachable", head)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.timeout)
            reader = _Reader(sock)
            try:
                sock.sendall(self._request_head(environ, body_mode, length))
                self._send_body(sock, environ, body_mode, length)
            except TimeoutError:
                sock.close()
                return _plain(start_response, 504, "gateway timeout: upstream stalled", head)
            except OSError:
                # The upstream may have answered early (e.g. 413) and closed: read that answer.
                pass
            except ValueError as e:
                sock.close()
                return _plain(start_response, 400, f"bad request: {e}", head)
            code, reason, headers = _read_head(reader)
        except UpstreamError as e:
            sock.close()
            log.warning("reverseproxy: %s:%s: %s", self.host, self.port, e)
            word = "gateway timeout" if e.status == 504 else "bad gateway"
            return _plain(start_response, e.status, f"{word}: {e}", head)
        except BaseException:
            sock.close()
            raise

        drop = HOP_BY_HOP | _connection_tokens(
            ", ".join(v for k, v in headers if k.lower() == "connection"))
        chunked = any(k.lower() == "transfer-encoding" and "chunked" in v.lower()
                      for k, v in headers)
        out = [(k, v) for k, v in headers if k.lower() not in drop
               and not (chunked and k.lower() == "content-length")]
        lengths = {v.strip() for k, v in out if k.lower() == "content-length"}
        if len(lengths) > 1 or (lengths and not next(iter(lengths)).isdigit()):
            # Ambiguous framing is how responses get smuggled: refuse it.
            sock.close()
            log.warning("reverseproxy: %s:%s sent an invalid Content-Length", self.host, self.port)
            return _plain(start_response, 502, "bad gateway: upstream sent an invalid "
                          "Content-Length", head)
        clen = next(iter(lengths), None)
        if head or code in (204, 304):
            mode, n = "none", 0
        elif chunked:
            mode, n = "chunked", 0
        elif clen is not None:
            mode, n = "length", int(clen)
        else:
            mode, n = "eof", 0
        start_response(f"{code} {reason or _phrase(code)}", out)
        body = _Body(sock, reader, mode, n)
        if mode == "none":
            body.close()
            return []
        return body


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


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
