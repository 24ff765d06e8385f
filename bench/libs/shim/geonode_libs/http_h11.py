"""geonode's request checks (``geonode.web.httprules`` + ``StrictHTTP.read_request``) done by h11.

The request head (request line and header section) is read by pywsgi's loop as before, then
handed whole to an ``h11.Connection(h11.SERVER)``: its ``Request`` event gives the method,
target, version and headers, its ``RemoteProtocolError`` (with ``error_status_hint``) becomes
geonode's ``RequestError``, so the refusal is answered the same way (short text, then close).
h11 validates the request line, header names and values, Host (required in HTTP/1.1, at most
one), Content-Length (digits, no conflicting copies) and Transfer-Encoding (``chunked`` only,
else 501). The app's status and headers are checked by building an ``h11.Response`` with them.

Kept from geonode because h11 has no notion of it: the head deadline (``client_timeout``), the
header-count and size bounds on reading, ``OPTIONS *`` answered by the server, an absolute-form
target's authority replacing Host, and the keep-alive decision pywsgi needs.
"""

from __future__ import annotations

import h11

from geonode.web.httprules import RequestError

_MAX_HEAD = 65536 + 8192
_MAX_LINES = 101


def _read_head(rfile, first: bytes) -> bytes:
    """The request line and header section up to the blank line, bounded like geonode's."""
    parts = [first]
    total = len(first)
    for _ in range(_MAX_LINES):
        line = rfile.readline(65537)
        total += len(line)
        if total > _MAX_HEAD:
            raise RequestError(400, "request headers larger than 65536 bytes")
        if not line.endswith(b"\n"):
            raise RequestError(400, "connection closed inside the request headers")
        parts.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(parts)
    raise RequestError(400, "more than 100 headers")


def make_read_request(strict_module, handler_module):
    RequestHeaders = handler_module.RequestHeaders
    options_star = strict_module._OptionsStar

    def read_request(self, raw_requestline: str) -> bool:
        def head() -> bytes:
            return _read_head(self.rfile, raw_requestline.encode("latin-1"))

        if self._head_deadline is None:
            data = head()
        else:
            try:
                with self._head_clock("headers"):
                    data = head()
            except TimeoutError as e:
                raise RequestError(408, str(e)) from None
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        conn.receive_data(data)
        try:
            ev = conn.next_event()
        except h11.RemoteProtocolError as e:
            raise RequestError(e.error_status_hint, str(e)) from None
        if type(ev) is not h11.Request:
            raise RequestError(400, "incomplete request head")
        method = ev.method.decode("ascii")
        target = ev.target.decode("latin-1")
        version = "HTTP/" + ev.http_version.decode("ascii")
        if version[5] == "1" and version not in ("HTTP/1.0", "HTTP/1.1"):
            version = "HTTP/1.1"   # RFC 9110 2.5 (a mapping, not a check: h11 has none)
        self.requestline = raw_requestline.rstrip()
        items = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in ev.headers.raw_items()]
        absolute = None
        low = target[:8].lower()
        if low.startswith(("http://", "https://")):
            rest = target.split("://", 1)[1]
            slash = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=-1)
            absolute, target = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
            if target.startswith("?"):
                target = "/" + target
        self.command, self.path, self.request_version = method, target, version
        if absolute is not None:
            self._absolute_host = absolute
        elif self._absolute_host is not None:
            self._absolute_host = None
        if target == "*":
            raise options_star(200, "OPTIONS *")
        headers = RequestHeaders(items)
        self.headers = headers
        length = headers.get("content-length")
        self.content_length = int(length) if length is not None else None
        if self.content_length and method == "HEAD":
            raise RequestError(400, "HEAD request with a body")
        conn_hdr = headers.get("connection")
        if conn_hdr is None:
            self.close_connection = version == "HTTP/1.0"
        else:
            tokens = {t.strip().lower() for t in conn_hdr.split(",")}
            if version == "HTTP/1.1":
                self.close_connection = "close" in tokens
            else:
                self.close_connection = "keep-alive" not in tokens
        return True

    return read_request


def check_status(status: str) -> None:
    # (splitting the WSGI status string is glue: h11 takes the code as an int)
    code, _, reason = status.partition(" ") if isinstance(status, str) else ("", "", "")
    if not code.isdigit():
        raise ValueError(f"invalid status line from the application: {status!r}")
    try:
        h11.Response(status_code=int(code), headers=[], reason=reason)
    except (h11.LocalProtocolError, TypeError, ValueError, UnicodeError) as e:
        raise ValueError(f"invalid status line from the application: {status!r}: {e}") \
            from None


def check_response_headers(headers) -> None:
    try:
        h11.Response(status_code=200, headers=headers)
    except (h11.LocalProtocolError, TypeError, ValueError, UnicodeError) as e:
        raise ValueError(f"invalid response headers from the application: {e}") from None


def install(handler_module, variant: str) -> None:
    import geonode.web.strict as strict

    handler_module.Handler.read_request = make_read_request(strict, handler_module)
    strict.check_status = check_status
    strict.check_response_headers = check_response_headers
    # (GOOD_STATUS is geonode's cache of statuses its own check passed: empty it for good)
    strict.GOOD_STATUS = frozenset()
