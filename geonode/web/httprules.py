"""RFC 9112 rules the request and response paths of ``geonode.web.handler`` enforce.

pywsgi is lenient where leniency lets a request be framed two ways (request smuggling): it
takes ``int()`` of ``Content-Length`` (``+5``, ``1_0``), ignores transfer codings other than
a lone ``chunked``, keeps the first of two ``Content-Length`` headers, and writes whatever
status line, header names and body length a WSGI app hands it. These functions say no
instead; the handler turns a :class:`RequestError` into a short answer with
``Connection: close``, because after a framing error the next byte's meaning is unknown.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["AbsoluteTarget", "RequestError", "check_field", "check_request_line",
           "check_response_headers", "check_status", "framing"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Field values: visible characters, obs-text, SP and HTAB; never CR, LF, NUL or other controls.
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")
_VERSION = re.compile(r"HTTP/([0-9])\.([0-9])\Z")
_STATUS = re.compile(r"[1-9][0-9][0-9]( [^\x00-\x08\x0a-\x1f\x7f]*)?\Z")
_DIGITS = re.compile(r"[0-9]{1,18}\Z")
_ABSOLUTE = re.compile(r"(?i)https?://([^/?#]+)([^#]*)\Z")


_COMMON_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"))
# App status lines and headers already found valid: apps send the same few again and again.
GOOD_STATUS: set[str] = set()
_GOOD_HEADERS: set[tuple[str, str]] = set()
_GOOD_MAX = 4096


class RequestError(ValueError):
    """A request geonode will not serve: ``status`` (4xx/5xx) and a one-line ``reason``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class AbsoluteTarget:
    """``GET http://host/path HTTP/1.1``: the host to use instead of the Host header."""

    __slots__ = ("host", "path")

    def __init__(self, host: str, path: str) -> None:
        self.host = host
        self.path = path


def check_request_line(line: str) -> tuple[str, str, str, AbsoluteTarget | None]:
    """``(method, target, version, absolute)`` of a request line, or :class:`RequestError`.

    Words may be separated by any run of whitespace (RFC 9112 3 allows that leniency; it
    cannot frame a request two ways). HTTP/1.x with x > 1 is answered as HTTP/1.1 (RFC 9110
    2.5); HTTP/0.9 (no version) and other major versions are refused.
    """
    words = line.split()
    if len(words) != 3:
        raise RequestError(400, f"malformed request line {line.strip()[:100]!r}")
    method, target, version = words
    if method not in _COMMON_METHODS and not _TOKEN.match(method):
        raise RequestError(400, f"invalid method {method[:40]!r}")
    if version != "HTTP/1.1" and version != "HTTP/1.0":
        m = _VERSION.match(version)
        if m is None or m.group(1) != "1":
            raise RequestError(400, f"HTTP version not supported: {version[:20]!r}")
        version = "HTTP/1.1"
    if _BAD_TARGET.search(target):
        raise RequestError(400, "control character in the request target")
    absolute = None
    if target[0] == "/":
        return method, target, version, None
    if target == "*":
        if method != "OPTIONS":
            raise RequestError(400, "'*' is a target for OPTIONS only")
    elif not target.startswith("/"):
        a = _ABSOLUTE.match(target)
        if a is None:
            raise RequestError(400, f"invalid request target {target[:100]!r}")
        path = a.group(2) or "/"
        if path.startswith("?"):
            path = "/" + path
        absolute = AbsoluteTarget(a.group(1), path)
        target = path
    return method, target, version, absolute


def check_field(name: str, value: str) -> None:
    """Raise :class:`RequestError` for a request header that is not a token and a clean value."""
    if not _TOKEN.match(name):
        raise RequestError(400, f"invalid header name {name[:60]!r}")
    if _BAD_VALUE.search(value):
        raise RequestError(400, f"control character in header {name[:60]!r}")


def framing(headers: Any, version: str) -> tuple[int | None, bool]:
    """``(content_length, chunked)`` of a request's body, refusing every ambiguous framing.

    ``headers`` is a ``geonode.web.handler.RequestHeaders`` (``get``, ``items``, ``dups``).
    Content-Length must be one run of ASCII digits, given once. Transfer-Encoding must be
    exactly ``chunked`` (other codings: 501), never next to a Content-Length, never in
    HTTP/1.0. One Host header at most.
    """
    dups = headers.dups
    if dups and "host" in dups:
        raise RequestError(400, "more than one Host header")
    length = headers.get("content-length")
    coding = headers.get("transfer-encoding")
    if coding is not None:
        codings = [t.strip().lower() for name, value in headers.items()
                   if name.lower() == "transfer-encoding" for t in value.split(",")]
        if length is not None:
            raise RequestError(400, "both Content-Length and Transfer-Encoding")
        if version == "HTTP/1.0":
            raise RequestError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if codings != ["chunked"]:
            if codings[-1] != "chunked" or codings.count("chunked") > 1:
                raise RequestError(400, "chunked is not the last transfer coding, or not the "
                                        "only chunked")
            raise RequestError(501, f"transfer coding not supported: {', '.join(codings)}")
        return None, True
    if length is None:
        return None, False
    if dups and "content-length" in dups:
        raise RequestError(400, "more than one Content-Length")
    if not _DIGITS.match(length):
        raise RequestError(400, f"invalid Content-Length {length[:30]!r}")
    return int(length), False


def check_status(status: str) -> None:
    """A WSGI app's status: three digits (100-999 grammar, 1xx refused: WSGI cannot send
    interim responses) and a reason without control characters."""
    if type(status) is str and status in GOOD_STATUS:
        return
    if not isinstance(status, str) or not _STATUS.match(status) or status[0] == "1":
        raise ValueError(f"invalid status line from the application: {status!r}")
    if len(GOOD_STATUS) < _GOOD_MAX:
        GOOD_STATUS.add(status)


def check_response_headers(headers: list[tuple[str, str]]) -> None:
    """A WSGI app's headers: token names, clean values, a digits-only Content-Length, and no
    Transfer-Encoding (hop-by-hop, PEP 3333: framing is the server's)."""
    good = _GOOD_HEADERS
    for header in headers:
        if type(header) is tuple:
            name, value = header
            if type(value) is str:
                if header in good:
                    continue
                if name == "Content-Length" and value.isdigit() and value.isascii():
                    continue
        else:
            name, value = header
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise ValueError(f"invalid response header name from the application: {name!r}")
        if not isinstance(value, str) or _BAD_VALUE.search(value):
            raise ValueError(f"invalid value for response header {name!r}: {value!r}")
        lname = name.lower()
        if lname == "content-length" and not _DIGITS.match(value):
            raise ValueError(f"invalid Content-Length from the application: {value!r}")
        if lname == "transfer-encoding":
            raise ValueError("the application set Transfer-Encoding (hop-by-hop; the server "
                             "frames the body)")
        if (len(good) < _GOOD_MAX and type(header) is tuple and lname != "content-length"
                and lname != "date"):
            good.add((name, value))  # (lengths and dates vary per response: not worth keeping)
