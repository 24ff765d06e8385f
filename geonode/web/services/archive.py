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

import logging
import mimetypes
import os
import posixpath
import threading
import zipfile
from collections.abc import Iterable
from pathlib import Path

from geonode.config import ConfigError
from geonode.config.services import ArchiveService, archive_file_problem, archive_problem
from geonode.httpstatus import status_line
from geonode.web.context import BuildContext
from geonode.web.services.plain import text_response
from geonode.web.services.static import not_modified, stream

log = logging.getLogger(__name__)

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


class ArchiveApp:
    def __init__(self, path: Path, svc: ArchiveService) -> None:
        self.path = path
        self.zip = zipfile.ZipFile(path)
        prefix = safe_name(svc.object_prefix)
        self.prefix = prefix + "/" if prefix else ""
        self.default_object = svc.default_object
        self.default_file = svc.default_file
        self.mime_types = svc.mime_types
        self.cache_on = svc.cache
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
        if not_modified(environ, etag):
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
        if self.cache_on and self._fits(info.file_size):
            try:
                data = member.read()
            finally:
                member.close()
            self._remember(info.filename, data)
            return [data]
        return stream(member, info.file_size)

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


def build(svc: ArchiveService, ctx: BuildContext) -> ArchiveApp:
    """The WSGI app serving an ``archive`` path."""
    path = Path(ctx.config_dir, svc.archive)
    if not path.exists():
        # (a file that was there has been read by geonode.config.load: its hash, its ZIP)
        problem = archive_problem(svc, ctx.config_dir)
        if problem is None and svc.origin is not None:
            _download(svc.origin, path, ctx.json_path)
            problem = archive_file_problem(svc, path)
        if problem:
            raise ConfigError(problem)
    try:
        return ArchiveApp(path, svc)
    except (OSError, zipfile.BadZipFile) as e:   # changed since it was checked
        raise ConfigError(f"{ctx.json_path}.archive: {str(path)!r} is not a readable ZIP "
                          f"archive: {e}") from None
