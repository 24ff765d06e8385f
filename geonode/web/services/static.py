"""``static`` path service: files from a directory or a package resource.

Path safety is the whole point of this module: the request path is decoded once (the server
already percent-decoded it, so ``%252e`` stays the literal ``%2e``), split into segments, and any
``..``, backslash, NUL or drive-like segment is refused before the file system is touched. The
joined path is then resolved (symlinks included) and must still lie inside the resolved root,
so a symlink pointing outside is never followed.
"""

from __future__ import annotations

import errno
import html
import logging
import mimetypes
import os
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gevent
from werkzeug.http import http_date, parse_date, parse_etags, parse_range_header

from geonode.config.imports import static_root
from geonode.config.model import StaticService
from geonode.httpstatus import status_line
from geonode.web.context import BuildContext
from geonode.web.services.plain import text_response as _error

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
INDEX_FILES = ("index.html", "index.htm")
DEFAULT_CACHE_TIMEOUT = 43200
_ALLOW = [("Allow", "GET, HEAD")]
_COMPRESSED = {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
               "xz": "application/x-xz", "br": "application/octet-stream",
               "compress": "application/x-compress"}

_OK, _PARTIAL, _NOT_MODIFIED = status_line(200), status_line(206), status_line(304)


class FileIter:
    """Streams ``length`` bytes of an open file (or any object with ``read``, ``close`` and
    ``name``: an archive's member) in 64 KiB chunks; closes it when done."""

    def __init__(self, f: Any, length: int) -> None:
        self.f = f
        self.remaining = length

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self.remaining <= 0:
            self.close()
            raise StopIteration
        data = self.f.read(min(CHUNK, self.remaining))
        if not data:
            # The file shrank under us after Content-Length went out: failing makes the server
            # drop the connection, so the client sees a truncated answer instead of a
            # desynchronised keep-alive stream.
            self.close()
            log.warning("%s shrank while being served", self.f.name)
            # ECONNRESET: the server closes quietly on it; the log line above is the record.
            raise ConnectionResetError(errno.ECONNRESET, "file shrank while being served")
        self.remaining -= len(data)
        return data

    def close(self) -> None:
        self.f.close()


def stream(f: Any, length: int) -> Iterable[bytes]:
    """The body of a response of ``length`` bytes read from ``f`` (positioned at its start),
    which is closed once read: small ones (the common case) in one read, the file closed
    before any I/O to the client; larger ones as a :class:`FileIter`."""
    if length <= CHUNK:
        try:
            return [f.read(length)]
        finally:
            f.close()
    return FileIter(f, length)


def not_modified(environ: dict, etag: str, mtime: int | None = None) -> bool:
    """Whether a conditional GET/HEAD is answered 304 for a resource with ``etag`` (quoted)
    and ``mtime`` (seconds; None: the resource has no modification time)."""
    inm = environ.get("HTTP_IF_NONE_MATCH")
    if inm is not None:
        # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
        return parse_etags(inm).contains_weak(etag.strip('"'))
    if mtime is None:
        return False
    ims = parse_date(environ.get("HTTP_IF_MODIFIED_SINCE"))
    return ims is not None and mtime <= int(ims.timestamp())


def _segments(path_info: str) -> list[str] | int:
    """Safe path segments of PATH_INFO, or an HTTP status code when the path is refused."""
    try:
        # PEP 3333: PATH_INFO is the raw bytes as latin-1; file names are UTF-8.
        path = path_info.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return 400
    if "\x00" in path:
        return 400
    out: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == ".." or "\\" in seg or (len(seg) >= 2 and seg[1] == ":" and os.sep == "\\"):
            return 404
        out.append(seg)
    return out


def _inside(root: str, candidate: str) -> bool:
    prefix = root if root.endswith(os.sep) else root + os.sep
    return candidate == root or candidate.startswith(prefix)


class StaticApp:
    def __init__(self, root: Path, options: dict) -> None:
        self.root = os.path.realpath(root)
        self.listing = bool(options.get("enable_directory_listing", False))
        self.cache_timeout = options.get("cache_timeout", DEFAULT_CACHE_TIMEOUT)
        self.mime_types = {
            ("." + k.lstrip(".")).lower(): v for k, v in (options.get("mime_types") or {}).items()
        }
        self.default_file = options.get("default_file")
        self._types: dict[str, str] = {}

    # -- resolution ---------------------------------------------------------------------------

    def _resolve(self, segments: list[str]) -> tuple[str, os.stat_result] | None:
        """Real path and stat of these segments; None when missing or outside the root.

        The root is already resolved and the segments hold no "..", "." or empty names, so
        without symlinks the joined path is canonical: one lstat per segment proves it. A
        symlink anywhere falls back to a full realpath and the containment check.
        """
        path = self.root
        st = None
        try:
            for seg in segments:
                path = os.path.join(path, seg)
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    real = os.path.realpath(os.path.join(self.root, *segments))
                    if not _inside(self.root, real):
                        return None
                    return real, os.stat(real)
            return path, st if st is not None else os.stat(path)
        except (OSError, ValueError):
            return None

    def _default(self) -> str | None:
        if not self.default_file:
            return None
        segs = _segments(self.default_file)
        if isinstance(segs, int):
            return None
        found = self._resolve(segs)
        return found[0] if found and stat.S_ISREG(found[1].st_mode) else None

    # -- WSGI ---------------------------------------------------------------------------------

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return _error(start_response, 405,
                          f"method {method} not allowed here", _ALLOW)
        segs = _segments(environ.get("PATH_INFO", ""))
        if isinstance(segs, int):
            if segs == 400:
                return _error(start_response, 400, "bad path", head=head)
            return _error(start_response, 404, "not found", head=head)

        found = self._resolve(segs)
        if found is not None and stat.S_ISDIR(found[1].st_mode):
            if not environ.get("PATH_INFO", "").endswith("/"):
                return self._slash_redirect(environ, segs, start_response)
            for name in INDEX_FILES:
                # Resolved like any other name: an index symlinked outside is not served.
                index = self._resolve([*segs, name])
                if index is not None and stat.S_ISREG(index[1].st_mode):
                    return self._file(environ, start_response, index[0], head)
            if self.listing:
                return self._list(environ, start_response, found[0], segs, head)
            if segs:
                # An existing directory without index is not a "missing name" for the SPA
                # fallback: answer 404 unless it is the root.
                return _error(start_response, 404, "not found", head=head)
            found = None
        # "a.txt/" names a folder that does not exist (the file system says ENOTDIR too).
        if (found is not None and stat.S_ISREG(found[1].st_mode)
                and not environ.get("PATH_INFO", "").endswith("/")):
            return self._file(environ, start_response, found[0], head)
        default = self._default()
        if default is None:
            return _error(start_response, 404, "not found", head=head)
        return self._file(environ, start_response, default, head)

    def _slash_redirect(self, environ: dict, segs: list[str], start_response):
        # Built from the cleaned segments: a path like "//evil.example" must never become a
        # protocol-relative Location.
        mount = environ.get("SCRIPT_NAME", "").rstrip("/")
        location = quote(mount.encode("latin-1"), safe="/") + "/"
        if segs:
            location += "/".join(quote(s.encode("utf-8"), safe="") for s in segs) + "/"
        if environ.get("QUERY_STRING"):
            location += "?" + environ["QUERY_STRING"]
        return _error(start_response, 301, "moved to " + location,
                      [("Location", location)], head=environ.get("REQUEST_METHOD") == "HEAD")

    def _content_type(self, path: str) -> str:
        ext = os.path.splitext(path)[1].lower()
        ctype = self._types.get(ext)
        if ctype is None:
            ctype = self._guess_type(path)
            if len(self._types) < 1024:  # bounded: extensions come from request paths
                self._types[ext] = ctype
        return ctype

    def _guess_type(self, path: str) -> str:
        ext = os.path.splitext(path)[1].lower()
        if ext in self.mime_types:
            return self.mime_types[ext]
        ctype, encoding = mimetypes.guess_type(path, strict=False)
        if encoding:
            # Serving foo.txt.gz as Content-Encoding would make clients unpack it silently.
            return _COMPRESSED.get(encoding, "application/octet-stream")
        if ctype is None:
            return "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "image/svg+xml"):
            return ctype + "; charset=utf-8"
        return ctype

    def _cache_headers(self) -> list[tuple[str, str]]:
        if self.cache_timeout is None:
            return []
        t = int(self.cache_timeout)
        return [("Cache-Control", f"public, max-age={t}"), ("Expires", http_date(time.time() + t))]

    def _file(self, environ: dict, start_response, path: str, head: bool):
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by FileIter or below
        except OSError:
            return _error(start_response, 404, "not found", head=head)
        try:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                f.close()
                return _error(start_response, 404, "not found", head=head)
            size = st.st_size
            etag = f'"{st.st_mtime_ns:x}-{size:x}"'
            mtime = int(st.st_mtime)
            headers = [("ETag", etag), ("Last-Modified", http_date(mtime)),
                       ("Accept-Ranges", "bytes")] + self._cache_headers()

            if not_modified(environ, etag, mtime):
                f.close()
                start_response(_NOT_MODIFIED, headers)
                return []

            ctype = self._content_type(path)
            start, length, status = 0, size, _OK
            rng = self._range(environ, etag, mtime)
            if rng is not None:
                bounds = rng.range_for_length(size) if len(rng.ranges) == 1 else None
                if len(rng.ranges) == 1 and bounds is None:
                    f.close()
                    return _error(start_response, 416,
                                  "range not satisfiable",
                                  [("Content-Range", f"bytes */{size}")] + headers, head=head)
                if bounds is not None:
                    start, end = bounds
                    length = end - start
                    status = _PARTIAL
                    headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
            headers += [("Content-Type", ctype), ("Content-Length", str(length))]
            start_response(status, headers)
            if head or length == 0:
                f.close()
                return []
            if start:
                f.seek(start)
            return stream(f, length)
        except BaseException:
            f.close()
            raise

    @staticmethod
    def _range(environ: dict, etag: str, mtime: int) -> Any:
        if environ.get("REQUEST_METHOD") != "GET" or "HTTP_RANGE" not in environ:
            return None
        if_range = environ.get("HTTP_IF_RANGE")
        if if_range:
            date = parse_date(if_range)
            if date is not None:
                if int(date.timestamp()) != mtime:
                    return None
            elif if_range.strip() != etag:
                return None
        # Malformed or non-byte ranges are ignored: the whole file is the answer.
        rng = parse_range_header(environ["HTTP_RANGE"])
        return rng if rng is not None and rng.units == "bytes" else None

    def _list(self, environ: dict, start_response, real: str, segs: list[str], head: bool):
        # A big folder means thousands of stat calls: done on the hub's thread pool so the
        # other connections keep moving meanwhile.
        body = gevent.get_hub().threadpool.apply(self._render_listing, (real, segs))
        if body is None:
            return _error(start_response, 404, "not found", head=head)
        start_response(_OK, [("Content-Type", "text/html; charset=utf-8"),
                                  ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-cache")])
        return [] if head else [body]

    def _render_listing(self, real: str, segs: list[str]) -> bytes | None:
        try:
            names = sorted(os.listdir(real))
        except OSError:
            return None
        title = html.escape("/" + "/".join(segs) + ("/" if segs else ""))
        rows = [] if not segs else ['<li><a href="../">../</a></li>']
        for name in names:
            # Entries whose target lies outside the root are not shown (nor served).
            target = os.path.realpath(os.path.join(real, name))
            if not _inside(self.root, target):
                continue
            suffix = "/" if os.path.isdir(target) else ""
            href = quote(name.encode("utf-8", "surrogateescape"), safe="") + suffix
            rows.append(f'<li><a href="{html.escape(href)}">{html.escape(name + suffix)}</a></li>')
        return (
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n<ul>\n"
            + "\n".join(rows) + "\n</ul></body></html>\n"
        ).encode("utf-8", "surrogateescape")


def build(cfg: StaticService, ctx: BuildContext) -> StaticApp:
    """The WSGI app serving a ``static`` path."""
    return StaticApp(static_root(cfg, ctx.config_dir), cfg.options)
