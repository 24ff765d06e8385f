"""``archive`` path service: static files served out of a ZIP archive (Crossbar's keys).

``archive`` is the ZIP file (relative to the config's folder). When it is missing and
``download`` is true, it is fetched once from ``origin`` at start (written to a temporary name
and renamed, so a half download is never taken for the archive); ``hashes`` (SHA-256, hex)
pin its content. ``object_prefix`` is the folder inside the archive that is served,
``default_object`` the member a path ending in ``/`` names, ``options.default_file`` the
member answered for names the archive does not hold (single-page apps), ``mime_types``
extra extension → type entries, ``cache`` keeps members read once in memory (bounded).

Member names are checked once, when the archive is opened: a name that is absolute, holds a
``..`` segment, a backslash or a NUL (a member that would escape its folder if unpacked) is
left out with one log line, and request paths are cleaned the same way, so no request reaches
such a member or climbs out of ``object_prefix``. A request costs a dict lookup and a stream
of the member in 64 KiB pieces: the archive is never read whole.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import posixpath
import threading
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from werkzeug.http import parse_etags

from geonode.config import ConfigError
from geonode.config.model import Service
from geonode.config.services import archive_problem
from geonode.httpstatus import status_line
from geonode.web.context import BuildContext
from geonode.web.services.plain import text_response

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
#: memory ``cache: true`` may hold per archive; members past it are streamed each time
CACHE_BUDGET = 64 * 1024 * 1024
#: the largest archive ``download`` fetches from ``origin``
MAX_DOWNLOAD = 1024 * 1024 * 1024
DOWNLOAD_TIMEOUT = 60.0
_ALLOW = [("Allow", "GET, HEAD")]
_OK, _NOT_MODIFIED = status_line(200), status_line(304)


def safe_name(name: str) -> str | None:
    """``name`` (a member's or a request's path) as clean ``a/b/c`` segments, or None when it
    would leave its folder (absolute, ``..``, backslash, NUL, a drive letter)."""
    if "\x00" in name or "\\" in name:
        return None
    if name.startswith("/") or (len(name) >= 2 and name[1] == ":"):
        return None
    parts = []
    for seg in name.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            return None
        parts.append(seg)
    return "/".join(parts)


class _MemberIter:
    """One member streamed in pieces; the member file (and its lock on the archive) closed at
    the end or when the server drops the response."""

    def __init__(self, member: Any, length: int) -> None:
        self.member = member
        self.remaining = length

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self.remaining <= 0:
            self.close()
            raise StopIteration
        data = self.member.read(min(CHUNK, self.remaining))
        if not data:
            self.close()
            raise ConnectionResetError("archive member shorter than its directory entry")
        self.remaining -= len(data)
        return data

    def close(self) -> None:
        self.member.close()


class ArchiveApp:
    def __init__(self, path: Path, cfg: dict) -> None:
        self.path = path
        self.zip = zipfile.ZipFile(path)
        prefix = safe_name(cfg.get("object_prefix") or "")
        self.prefix = prefix + "/" if prefix else ""
        self.default_object = cfg.get("default_object")
        self.default_file = (cfg.get("options") or {}).get("default_file")
        self.mime_types = {("." + k.lstrip(".")).lower(): v
                           for k, v in (cfg.get("mime_types") or {}).items()}
        self.cache_on = bool(cfg.get("cache", False))
        self.cache: dict[str, bytes] = {}
        self.cached_bytes = 0
        self.cache_lock = threading.Lock()
        # name -> ZipInfo, once: each request is one lookup, never a scan of the directory
        self.members: dict[str, zipfile.ZipInfo] = {}
        refused = 0
        for info in self.zip.infolist():
            if info.is_dir():
                continue
            clean = safe_name(info.filename)
            if clean is None:
                refused += 1
                log.warning("archive %s: member %r escapes its folder: not served",
                            path, info.filename)
                continue
            self.members.setdefault(clean, info)
        log.info("archive %s: %d members%s", path, len(self.members),
                 f" ({refused} refused)" if refused else "")

    def _lookup(self, path_info: str) -> zipfile.ZipInfo | None:
        try:
            path = path_info.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return None
        if (path == "" or path.endswith("/")) and self.default_object:
            path += self.default_object
        # a request path is relative to the mount: its leading "/" is no absolute name
        clean = safe_name(path.lstrip("/"))
        if clean is None:
            return None
        return self.members.get(self.prefix + clean)

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return text_response(start_response, 405, f"method {method} not allowed here",
                                 _ALLOW)
        info = self._lookup(environ.get("PATH_INFO", ""))
        if info is None and self.default_file:
            info = self._lookup(self.default_file)
        if info is None:
            return text_response(start_response, 404, "not found", head=head)
        etag = f'"{info.CRC:08x}-{info.file_size:x}"'
        headers = [("ETag", etag)]
        inm = environ.get("HTTP_IF_NONE_MATCH")
        if inm is not None and parse_etags(inm).contains_weak(etag.strip('"')):
            start_response(_NOT_MODIFIED, headers)
            return []
        headers += [("Content-Type", self._content_type(info.filename)),
                    ("Content-Length", str(info.file_size))]
        if head:
            start_response(_OK, headers)
            return []
        data = self.cache.get(info.filename)
        if data is not None:
            start_response(_OK, headers)
            return [data]
        try:
            member = self.zip.open(info)
        except (OSError, zipfile.BadZipFile, NotImplementedError) as e:
            log.warning("archive %s: cannot read %r: %s", self.path, info.filename, e)
            return text_response(start_response, 500, "archive member unreadable")
        start_response(_OK, headers)
        if info.file_size <= CHUNK or (self.cache_on and self._fits(info.file_size)):
            try:
                data = member.read()
            finally:
                member.close()
            if self.cache_on:
                self._remember(info.filename, data)
            return [data]
        return _MemberIter(member, info.file_size)

    def _fits(self, size: int) -> bool:
        return self.cached_bytes + size <= CACHE_BUDGET

    def _remember(self, name: str, data: bytes) -> None:
        with self.cache_lock:
            if name not in self.cache and self._fits(len(data)):
                self.cache[name] = data
                self.cached_bytes += len(data)

    def _content_type(self, name: str) -> str:
        ext = posixpath.splitext(name)[1].lower()
        if ext in self.mime_types:
            return self.mime_types[ext]
        ctype, encoding = mimetypes.guess_type(name, strict=False)
        if encoding or ctype is None:
            return "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "image/svg+xml"):
            return ctype + "; charset=utf-8"
        return ctype


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _download(url: str, target: Path, json_path: str) -> None:
    """``url`` to ``target``, bounded in size and time; written under a temporary name and
    renamed, so an interrupted download never passes for the archive."""
    import urllib.request

    part = target.with_name(target.name + ".part")
    got = 0
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as resp, \
                open(part, "wb") as out:
            while block := resp.read(1 << 20):
                got += len(block)
                if got > MAX_DOWNLOAD:
                    raise ConfigError(f"{json_path}.origin: {url} is larger than "
                                      f"{MAX_DOWNLOAD} bytes")
                out.write(block)
        os.replace(part, target)
    except OSError as e:
        raise ConfigError(f"{json_path}.origin: cannot download {url}: {e}") from None
    finally:
        part.unlink(missing_ok=True)
    log.info("archive: %s downloaded from %s (%d bytes)", target, url, got)


def build(svc: Service, ctx: BuildContext) -> ArchiveApp:
    """The WSGI app serving an ``archive`` path."""
    cfg = svc.extra  # its keys are its own (the config model keeps them as written)
    problem = archive_problem(cfg, ctx.config_dir, ctx.json_path)
    if problem:
        raise ConfigError(problem)
    path = Path(ctx.config_dir, cfg["archive"])
    if not path.exists():
        _download(cfg["origin"], path, ctx.json_path)
    hashes = [h.lower() for h in cfg.get("hashes") or []]
    if hashes:
        digest = _sha256(path)
        if digest not in hashes:
            raise ConfigError(f"{ctx.json_path}.hashes: archive {str(path)!r} (SHA-256 "
                              f"{digest}) matches none of the configured hashes")
    try:
        return ArchiveApp(path, cfg)
    except (OSError, zipfile.BadZipFile) as e:
        raise ConfigError(f"{ctx.json_path}.archive: {str(path)!r} is not a readable ZIP "
                          f"archive: {e}") from None
