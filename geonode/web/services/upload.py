"""``upload`` path service: resumable chunked uploads (the Resumable.js protocol, Crossbar's
upload service, its keys and its progress events).

A client POSTs a file in chunks, each a ``multipart/form-data`` request whose fields are named
by ``form_fields`` (Resumable.js: ``resumableChunkNumber``, ``resumableTotalSize``, …, the
bytes in ``file``), and may first ask with a GET carrying the same fields in its query
whether a chunk is already there (200: skip it; 404: send it). That GET is what makes an
interrupted upload resume: after a lost connection or a node restart the client re-sends only
the chunks the node does not have.

How it is kept bounded and safe:

- A chunk is never held in memory: its body is parsed as it arrives (werkzeug's sans-I/O
  multipart decoder, 64 KiB reads) and written with ``pwrite`` at its place,
  ``(chunk_number - 1) * chunk_size``, into the upload's one data file in
  ``temp_directory`` (a chunk whose fields come after its bytes is spooled to a temporary
  file there first). When its last byte is written an empty marker ``chunk_<n>`` records it;
  the markers and a ``meta.json`` are what a restarted node resumes from. The last chunk
  completes the upload: the data file is renamed into ``directory`` (one atomic rename on one
  file system, else a copy to a hidden name in ``directory`` then a rename), so a watcher of
  ``directory`` never sees a partial file. No merge pass over chunk files, as Crossbar had.
- Refused, each with one log line and nothing written outside ``temp_directory``: a file
  name that is not a plain name (``/``, ``\\``, ``..``, a leading dot, a control
  character): 400; a chunk number outside ``1..total_chunks``, a chunk whose size does not
  match its place, totals that do not add up: 400; a file larger than
  ``options.max_file_size``: 413; an extension not in ``options.file_types``: 415; a chunk
  of the same file name with other totals while an upload is pending: 409; more than
  ``MAX_PENDING`` uploads pending at once: 503.
- Progress events as Crossbar publishes them (``id``, ``chunk``, ``name``, ``total``,
  ``remaining``, ``status`` started/progress/finished, ``progress``, ``chunk_extra``,
  ``finish_extra``) on the topic the client names in the ``on_progress`` field, through an
  in-process session joined as ``role`` on ``realm`` (its permissions apply); only to the
  session in the ``session`` field when there is one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import gevent
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from geonode import wamp
from geonode.config import ConfigError
from geonode.config.services import UploadService, temp_folder
from geonode.uri import valid_uri
from geonode.web.context import BuildContext
from geonode.web.limits import max_body_size
from geonode.web.services.plain import text_response

log = logging.getLogger(__name__)

READ = 64 * 1024
#: uploads pending at once (each holds a folder in temp_directory until it completes)
MAX_PENDING = 1000
#: a form field other than the content (names, numbers, extras) is at most this long
MAX_FIELD = 64 * 1024
MAX_PARTS = 64
_META = "meta.json"
_ALLOW = [("Allow", "GET, POST")]


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def plain_name(name: str) -> bool:
    """A file name that stays in its folder: no separators, no dot-names, no controls."""
    return (0 < len(name) <= 255 and not name.startswith(".") and "/" not in name
            and "\\" not in name and not any(ord(c) < 32 or ord(c) == 127 for c in name))


class Upload:
    """One pending upload: its totals, the chunks written, its folder in temp_directory."""

    def __init__(self, folder: Path, name: str, total_size: int, chunk_size: int,
                 total_chunks: int) -> None:
        self.folder = folder
        self.name = name
        self.total_size = total_size
        self.chunk_size = chunk_size
        self.total_chunks = total_chunks
        self.received: set[int] = set()
        self.received_bytes = 0
        self.done = False

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def chunk_length(self, number: int) -> int:
        """Bytes chunk ``number`` carries: ``chunk_size``, the last one the rest."""
        if number < self.total_chunks:
            return self.chunk_size
        return self.total_size - (self.total_chunks - 1) * self.chunk_size

    def same(self, total_size: int, chunk_size: int, total_chunks: int) -> bool:
        return (self.total_size, self.chunk_size, self.total_chunks) == \
            (total_size, chunk_size, total_chunks)


class UploadApp:
    def __init__(self, svc: UploadService, ctx: BuildContext) -> None:
        # (its folders were looked at by geonode.config.load: folder_errors)
        self.json_path = ctx.json_path
        self.directory = Path(ctx.config_dir, svc.directory).resolve()
        self.temp = temp_folder(svc, ctx.config_dir)
        try:
            self.temp.mkdir(parents=True, exist_ok=True)
        except OSError as e:   # changed since it was checked
            raise ConfigError(f"{ctx.json_path}.temp_directory: cannot create "
                              f"{str(self.temp)!r}: {e}") from None
        self.fields: dict[str, str] = svc.form_fields
        self.max_file_size: int = svc.max_file_size
        self.file_types = svc.file_types
        self.file_permissions = svc.file_permissions
        self.body_limit = max_body_size(svc.extra, ctx)
        self.uploads: dict[str, Upload] = {}
        self._resume_pending()
        if ctx.router is not None:
            wamp.register_router(ctx.router)
        self.session = wamp.Session(svc.realm, svc.role,
                                    svc.authid or f"geonode-upload-{ctx.json_path}",
                                    router=ctx.router, name=f"upload:{ctx.json_path}")

    # -- start-up: what a previous run left in temp_directory ----------------------------------

    def _resume_pending(self) -> None:
        for entry in os.scandir(self.temp):
            path = Path(entry.path)
            try:
                if entry.is_dir(follow_symlinks=False):
                    meta = json.loads((path / _META).read_text())
                    up = Upload(path, meta["name"], int(meta["total_size"]),
                                int(meta["chunk_size"]), int(meta["total_chunks"]))
                    if not plain_name(up.name) or path.name != _folder_name(up.name):
                        raise ValueError("not ours")
                    for marker in os.listdir(path):
                        if marker.startswith("chunk_"):
                            n = int(marker[6:])
                            if 1 <= n <= up.total_chunks:
                                up.received.add(n)
                                up.received_bytes += up.chunk_length(n)
                    self.uploads[up.name] = up
                elif entry.name.startswith(".spool-"):
                    path.unlink()   # a chunk spooled by a request the last run never finished
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("upload %s: %s in temp_directory is no pending upload (%s): "
                            "removed", self.json_path, path.name, e)
                shutil.rmtree(path, ignore_errors=True)
        if self.uploads:
            log.info("upload %s: %d pending upload(s) can be resumed", self.json_path,
                     len(self.uploads))

    # -- WSGI ----------------------------------------------------------------------------------

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if method in ("GET", "HEAD"):
                return self._test_chunk(environ, start_response, method == "HEAD")
            if method == "POST":
                return self._post(environ, start_response)
            return text_response(start_response, 405, f"method {method} not allowed here",
                                 _ALLOW)
        except Refused as e:
            log.info("upload %s: %s refused: %s", self.json_path,
                     environ.get("REMOTE_ADDR", "?"), e)
            # The rest of a refused body is not read: the connection cannot be reused.
            headers = [("Connection", "close")] if method == "POST" else []
            return text_response(start_response, e.status, str(e), headers,
                                 head=method == "HEAD")

    def _test_chunk(self, environ: dict, start_response, head: bool) -> list[bytes]:
        from urllib.parse import parse_qsl

        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        name = self._name(query.get(self.fields["file_name"]))
        number = _int(query, self.fields["chunk_number"], "chunk number")
        up = self.uploads.get(name)
        if up is not None and number in up.received:
            return text_response(start_response, 200, "chunk of file already uploaded",
                                 head=head)
        return text_response(start_response, 404, "chunk of file not yet uploaded", head=head)

    def _name(self, name: str | None) -> str:
        if name is None:
            raise Refused(400, f"missing field {self.fields['file_name']!r}")
        if not plain_name(name):
            raise Refused(400, f"file name {name[:100]!r} is not a plain file name")
        return name

    def _post(self, environ: dict, start_response) -> list[bytes]:  # noqa: C901 - one multipart stream: each event of the decoder and each refusal, in order
        ctype, params = parse_options_header(environ.get("CONTENT_TYPE", ""))
        if ctype != "multipart/form-data" or not params.get("boundary"):
            raise Refused(400, "a chunk is sent as multipart/form-data")
        length = environ.get("CONTENT_LENGTH")
        if length and self.body_limit is not None and int(length) > self.body_limit:
            raise Refused(413, f"request body over {self.body_limit} bytes")
        stream = environ["wsgi.input"]
        decoder = MultipartDecoder(params["boundary"].encode("latin-1"), max_parts=MAX_PARTS)
        values: dict[str, str] = {}
        part: str | None = None           # the field being read, or "" for the content
        buf = bytearray()
        target: _ChunkWriter | None = None
        spool: Any = None
        read = 0
        try:
            finished = False
            while not finished:
                try:
                    data = stream.read(READ)
                except OSError as e:
                    raise Refused(400, f"unreadable request body: {e}") from None
                read += len(data)
                if self.body_limit is not None and read > self.body_limit:
                    raise Refused(413, f"request body over {self.body_limit} bytes")
                decoder.receive_data(data or None)
                while True:
                    try:
                        event = decoder.next_event()
                    except ValueError as e:   # werkzeug: malformed multipart
                        raise Refused(400, f"malformed multipart body: {e}") from None
                    if isinstance(event, NeedData):
                        if not data:
                            raise Refused(400, "multipart body ends too early")
                        break
                    if isinstance(event, Epilogue):
                        finished = True
                        break
                    if isinstance(event, File) and event.name == self.fields["content"]:
                        part = ""
                        if _has_all(values, self.fields):
                            target = self._writer(values)
                        else:
                            spool = tempfile.TemporaryFile(dir=self.temp, prefix=".spool-")
                    elif isinstance(event, Field | File):
                        part = event.name
                        buf.clear()
                    elif isinstance(event, Data):
                        if part == "":
                            if target is not None:
                                target.write(event.data)
                            elif spool is not None:
                                spool.write(event.data)
                        elif part is not None:
                            buf += event.data
                            if len(buf) > MAX_FIELD:
                                raise Refused(400, f"form field {part[:100]!r} is over "
                                                   f"{MAX_FIELD} bytes")
                            if not event.more_data:
                                values[part] = buf.decode("utf-8", "replace")
                        if not event.more_data:
                            part = None
            if target is None:
                if spool is None:
                    raise Refused(400, f"missing field {self.fields['content']!r}")
                if not _has_all(values, self.fields):
                    missing = [f for k, f in self.fields.items()
                               if k in _REQUIRED and f not in values]
                    raise Refused(400, f"missing field(s) {missing}")
                target = self._writer(values)
                spool.seek(0)
                while piece := spool.read(READ):
                    target.write(piece)
            return self._chunk_done(target, values, start_response)
        finally:
            if spool is not None:
                spool.close()
            if target is not None:
                target.close()

    def _writer(self, values: dict[str, str]) -> _ChunkWriter:
        """Checks one chunk's fields against the upload it belongs to (made on its first
        chunk) and opens its place in the data file."""
        f = self.fields
        name = self._name(values.get(f["file_name"]))
        total_size = _int(values, f["total_size"], "total size")
        chunk_size = _int(values, f["chunk_size"], "chunk size")
        total_chunks = _int(values, f["total_chunks"], "total chunks")
        number = _int(values, f["chunk_number"], "chunk number")
        if total_size > self.max_file_size:
            raise Refused(413, f"size {total_size} of file {name!r} exceeds maximum "
                               f"{self.max_file_size}")
        if self.file_types and os.path.splitext(name)[1] not in self.file_types:
            raise Refused(415, f"type {os.path.splitext(name)[1]!r} of file {name!r} is not "
                               f"among the allowed types {self.file_types}")
        if chunk_size < 1 or total_chunks < 1:
            raise Refused(400, "chunk size and total chunks must be at least 1")
        # Resumable.js: floor(total / chunk) chunks (the last one takes the rest), or
        # ceil with forceChunkSize; an empty file is one empty chunk.
        floor, ceil = max(total_size // chunk_size, 1), max(-(-total_size // chunk_size), 1)
        if total_chunks not in (floor, ceil):
            raise Refused(400, f"{total_chunks} chunks of {chunk_size} bytes do not make "
                               f"{total_size} bytes")
        if not 1 <= number <= total_chunks:
            raise Refused(400, f"chunk {number} out of range 1..{total_chunks}")
        for extra in ("chunk_extra", "finish_extra"):
            _json_field(values, f.get(extra))   # refused before anything is written
        up = self.uploads.get(name)
        if up is not None and not up.same(total_size, chunk_size, total_chunks):
            raise Refused(409, f"another upload of {name!r} (other totals) is pending")
        if up is None:
            if len(self.uploads) >= MAX_PENDING:
                raise Refused(503, f"{MAX_PENDING} uploads pending: try again later")
            up = self._start(name, total_size, chunk_size, total_chunks, values)
        return _ChunkWriter(up, number)

    def _start(self, name: str, total_size: int, chunk_size: int, total_chunks: int,
               values: dict[str, str]) -> Upload:
        folder = self.temp / _folder_name(name)
        shutil.rmtree(folder, ignore_errors=True)   # a leftover without meta: not resumable
        folder.mkdir()
        up = Upload(folder, name, total_size, chunk_size, total_chunks)
        with open(up.data, "wb") as data:
            data.truncate(total_size)   # sparse: the chunks fill it in any order
        meta = {"name": name, "total_size": total_size, "chunk_size": chunk_size,
                "total_chunks": total_chunks}
        tmp = folder / (_META + ".tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, folder / _META)
        self.uploads[name] = up
        self._publish(values, up, 0, "started", up.total_size, 0.0)
        return up

    def _chunk_done(self, target: _ChunkWriter, values: dict[str, str],
                    start_response) -> list[bytes]:
        up, number = target.upload, target.number
        if target.written != up.chunk_length(number):
            raise Refused(400, f"chunk {number} of {up.name!r} has {target.written} bytes, "
                               f"its place takes {up.chunk_length(number)}")
        if up.done:   # a repeated chunk after the upload completed: nothing left to do
            return text_response(start_response, 200, "ok")
        target.close()
        if number not in up.received:
            (up.folder / f"chunk_{number}").touch()
            up.received.add(number)
            up.received_bytes += target.written
        remaining = up.total_size - up.received_bytes
        # every chunk's "progress", then "finished" after the last one (as Crossbar)
        self._publish(values, up, number, "progress", remaining,
                      round(up.received_bytes / up.total_size, 3) if up.total_size else 1.0)
        if len(up.received) < up.total_chunks:
            return text_response(start_response, 200, "ok")
        up.done = True
        try:
            self._finish(up)
        except OSError as e:
            log.error("upload %s: completing %r failed: %s", self.json_path, up.name, e)
            self.uploads.pop(up.name, None)
            shutil.rmtree(up.folder, ignore_errors=True)
            return text_response(start_response, 500, "could not store the uploaded file")
        self._publish(values, up, number, "finished", 0, 1.0, finished=True)
        return text_response(start_response, 200, "ok")

    def _finish(self, up: Upload) -> None:
        final = self.directory / up.name
        if self.file_permissions is not None:
            os.chmod(up.data, self.file_permissions)
        try:
            os.replace(up.data, final)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            # Another file system: copied (in the hub's thread pool: it may be large) to a
            # hidden name beside the target, then renamed, so the target appears whole.
            hidden = self.directory / f".{up.name}.part"
            gevent.get_hub().threadpool.apply(shutil.copyfile, (up.data, hidden))
            if self.file_permissions is not None:
                os.chmod(hidden, self.file_permissions)
            os.replace(hidden, final)
        self.uploads.pop(up.name, None)
        shutil.rmtree(up.folder, ignore_errors=True)
        log.info("upload %s: %s complete (%d bytes)", self.json_path, final, up.total_size)

    def _publish(self, values: dict[str, str], up: Upload, chunk: int, status: str,
                 remaining: int, progress: float, finished: bool = False) -> None:
        f = self.fields
        topic = values.get(f.get("on_progress", "\0"))
        if not topic:
            return
        if not valid_uri(topic):
            log.info("upload %s: progress topic %r is not a URI: no events", self.json_path,
                     topic[:100])
            return
        payload: dict[str, Any] = {
            "id": up.name, "chunk": chunk, "name": up.name, "total": up.total_size,
            "remaining": remaining, "status": status, "progress": progress,
            "chunk_extra": _json_field(values, f.get("chunk_extra")),
        }
        if finished:
            payload["finish_extra"] = _json_field(values, f.get("finish_extra"))
        options: dict[str, Any] = {}
        session = values.get(f.get("session", "\0"))
        if session and session.isdigit():
            options["eligible"] = [int(session)]
        try:
            self.session.publish(topic, payload, options=options)
        except (ValueError, wamp.ApplicationError) as e:
            log.info("upload %s: progress event on %r not published: %s", self.json_path,
                     topic, e)


class _ChunkWriter:
    """Writes one chunk's bytes at its place in the upload's data file, never past it."""

    def __init__(self, up: Upload, number: int) -> None:
        self.upload = up
        self.number = number
        self.offset = (number - 1) * up.chunk_size
        self.limit = up.chunk_length(number)
        self.written = 0
        self.fd: int | None = None
        if not up.done:
            try:
                self.fd = os.open(up.data, os.O_WRONLY)
            except FileNotFoundError:
                raise Refused(409, f"upload of {up.name!r} is no longer pending") from None

    def write(self, data: bytes) -> None:
        if self.written + len(data) > self.limit:
            raise Refused(400, f"chunk {self.number} of {self.upload.name!r} is longer than "
                               f"its place ({self.limit} bytes)")
        # Page-cache writes of at most 64 KiB: short enough to do on the hub. Once the upload
        # completed (its file renamed into place) a repeated chunk writes nothing.
        if self.fd is not None and not self.upload.done:
            os.pwrite(self.fd, data, self.offset + self.written)
        self.written += len(data)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


_REQUIRED = ("file_name", "total_size", "chunk_number", "chunk_size", "total_chunks")


def _has_all(values: dict[str, str], fields: dict[str, str]) -> bool:
    return all(fields[k] in values for k in _REQUIRED)


def _int(values: dict[str, str], field: str, what: str) -> int:
    raw = values.get(field)
    if raw is None:
        raise Refused(400, f"missing field {field!r} ({what})")
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 19:
        raise Refused(400, f"{what} {raw[:40]!r} is not a non-negative integer")
    return int(raw)


def _json_field(values: dict[str, str], field: str | None) -> Any:
    if not field or field not in values:
        return {}
    try:
        return json.loads(values[field])
    except ValueError:
        raise Refused(400, f"field {field!r} is not JSON") from None


def _folder_name(name: str) -> str:
    # The upload's folder in temp_directory: named by a hash, so no file name (whatever its
    # characters) ever becomes part of a path there.
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def build(svc: UploadService, ctx: BuildContext) -> UploadApp:
    """The WSGI app serving an ``upload`` path."""
    return UploadApp(svc, ctx)
