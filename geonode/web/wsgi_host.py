"""WSGI Host Service: an unmodified WSGI app on its own gevent ThreadPool.

The split of work (why it looks like this):
- The app callable and every ``next()`` on its response run on the service's pool, so a
  blocking call in a view (``time.sleep``, a DB driver, CPU work) never stalls the hub.
- All socket I/O stays on the hub: the request body is read here first (spooled to memory, or
  to a temporary file above ``SPOOL_MAX``), which also keeps slow uploaders from holding a
  thread; response chunks are written by the hub's handler greenlet.
- A list/tuple response (or an iterator that finishes quickly) costs one pool round trip.

``"threads": false`` runs the app directly in the handler greenlet (for gevent-aware apps).
"""

from __future__ import annotations

import errno
import importlib
import io
import logging
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterable
from html import escape
from typing import Any

from geonode.web.context import BuildContext

log = logging.getLogger("geonode.wsgi")

# Request bodies up to this size stay in memory; bigger ones go to a temporary file.
SPOOL_MAX = 1024 * 1024
_READ_SIZE = 65536
_DONE = object()

try:
    from geonode.config import ConfigError
except ImportError:  # config package not written yet: same shape as its contract
    class ConfigError(Exception):  # type: ignore[no-redef]
        def __init__(self, errors: list[str]):
            super().__init__("\n".join(errors))
            self.errors = errors


class BadRequestBody(Exception):
    """The client sent a body that does not match its own framing."""


def load_object(cfg: dict, ctx: BuildContext) -> Callable:
    """Import ``module`` and return its attribute ``object``; config errors name the key path."""
    module_name = cfg.get("module")
    object_name = cfg.get("object")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # any import-time failure of user code is a config problem
        raise ConfigError([
            f"{ctx.json_path}.module: cannot import WSGI module {module_name!r}: "
            f"{type(e).__name__}: {e}\n  sys.path = {sys.path!r}"
        ]) from e
    obj: Any = module
    for part in str(object_name).split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError([
                f"{ctx.json_path}.object: module {module_name!r} "
                f"({getattr(module, '__file__', '?')}) has no attribute {object_name!r}"
            ]) from None
    if not callable(obj):
        raise ConfigError([f"{ctx.json_path}.object: {module_name}.{object_name} is not callable"])
    return obj


def spool_body(environ: dict) -> None:
    """Read the whole request body on the hub and give the app a file it can read without I/O."""
    length = environ.get("CONTENT_LENGTH")
    chunked = environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
    if not chunked and not length:
        environ["wsgi.input"] = io.BytesIO()
        environ["wsgi.input_terminated"] = True
        return
    src = environ["wsgi.input"]
    if not chunked:
        try:
            expected = int(length)
        except ValueError:
            raise BadRequestBody(f"invalid Content-Length {length!r}") from None
        if expected < 0:
            raise BadRequestBody(f"invalid Content-Length {length!r}")
        if expected <= _READ_SIZE:
            data = src.read(expected)
            if len(data) != expected:
                raise BadRequestBody("request body shorter than its Content-Length")
            environ["wsgi.input"] = io.BytesIO(data)
            environ["wsgi.input_terminated"] = True
            return
    else:
        expected = -1
    spool: Any = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX)
    total = 0
    while expected < 0 or total < expected:
        want = _READ_SIZE if expected < 0 else min(_READ_SIZE, expected - total)
        data = src.read(want)
        if not data:
            break
        spool.write(data)
        total += len(data)
    if expected >= 0 and total != expected:
        spool.close()
        raise BadRequestBody("request body shorter than its Content-Length")
    spool.seek(0)
    environ["wsgi.input"] = spool
    environ["wsgi.input_terminated"] = True
    environ["CONTENT_LENGTH"] = str(total)
    # The app sees a plain body of known length: the chunked framing is gone.
    environ.pop("HTTP_TRANSFER_ENCODING", None)


def _simple_response(start_response: Callable, status: str, text: str,
                     content_type: str = "text/html; charset=utf-8") -> list[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


class _Call:
    """One request's trip through the pool: what the app said and produced so far."""

    __slots__ = ("status", "headers", "exc_info", "chunks", "iterator", "result", "error")

    def __init__(self) -> None:
        self.status: str | None = None
        self.headers: list | None = None
        self.exc_info: Any = None
        self.chunks: list[bytes] = []
        self.iterator: Any = None
        self.result: Any = None
        self.error: Any = None

    def start_response(self, status: str, headers: list, exc_info: Any = None) -> Callable:
        if exc_info is not None and self.iterator is not None:
            # Headers may already be on the wire: PEP 3333 says re-raise.
            raise exc_info[1].with_traceback(exc_info[2])
        self.status = status
        self.headers = headers
        self.exc_info = exc_info
        return self.chunks.append


def _close(result: Any) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


class WSGIHost:
    """The hub-side WSGI app wrapping one hosted app."""

    def __init__(self, app: Callable, pool: Any, *, display_tracebacks: bool = False,
                 environ_hook: Callable | None = None, name: str = "") -> None:
        self.app = app
        self.pool = pool
        self.display_tracebacks = display_tracebacks
        self.environ_hook = environ_hook
        self.name = name

    # ---- runs on the pool -------------------------------------------------------------
    def _begin(self, environ: dict) -> _Call:
        call = _Call()
        try:
            if self.environ_hook is not None:
                self.environ_hook(environ)
            result = self.app(environ, call.start_response)
            call.result = result
            if type(result) is list or type(result) is tuple:
                call.chunks.extend(result)
                _close(result)
                call.result = None
                return call
            it = iter(result)
            # Headers may be decided lazily (start_response inside a generator): pull until the
            # first non-empty chunk, or the end.
            for chunk in it:
                if chunk:
                    call.chunks.append(chunk)
                    call.iterator = it
                    return call
            _close(result)
            call.result = None
        except BaseException:  # noqa: B036 - even SystemExit in a view is that request's 500
            call.error = sys.exc_info()
            if call.result is not None:
                try:
                    _close(call.result)
                except Exception:
                    pass
                call.result = None
        return call

    @staticmethod
    def _next(call: _Call) -> Any:
        try:
            return next(call.iterator)
        except StopIteration:
            call.iterator = None
            result, call.result = call.result, None
            _close(result)
            return _DONE

    @staticmethod
    def _finish(call: _Call) -> None:
        result, call.result = call.result, None
        call.iterator = None
        _close(result)

    # ---- runs on the hub --------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            spool_body(environ)
        except BadRequestBody as e:
            return _simple_response(start_response, "400 Bad Request",
                                    f"<h1>400 Bad Request</h1><p>{escape(str(e))}</p>\n")
        environ["wsgi.multithread"] = True
        environ["wsgi.multiprocess"] = False
        call = self.pool.apply(self._begin, (environ,))
        if call.error is not None:
            return self._error_page(environ, start_response, call.error)
        if call.status is None:
            return self._error_page(environ, start_response, (
                RuntimeError, RuntimeError("the application did not call start_response()"), None))
        start_response(call.status, call.headers, call.exc_info)
        if call.iterator is None:
            return call.chunks
        return self._stream(call, environ)

    def _stream(self, call: _Call, environ: dict) -> Iterable[bytes]:
        try:
            yield from call.chunks
            call.chunks = []
            apply = self.pool.apply
            next_ = self._next
            while True:
                chunk = apply(next_, (call,))
                if chunk is _DONE:
                    return
                if chunk:
                    yield chunk
        except Exception:
            # Headers are already sent: all we can do is log and drop the connection
            # (pywsgi closes it when iteration fails after the response started).
            log.error("%s: error while streaming the response to %s %s", self.name,
                      environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), exc_info=True)
            raise _StreamAborted(errno.ECONNRESET, "response aborted by the application") from None
        finally:
            if call.result is not None:
                self.pool.apply(self._finish, (call,))

    def _error_page(self, environ: dict, start_response: Callable, exc_info: Any) -> list[bytes]:
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        log.error("%s: exception in WSGI app for %s %s", self.name,
                  environ.get("REQUEST_METHOD"), path, exc_info=exc_info)
        text = "<!DOCTYPE html><html><head><title>500 Internal Server Error</title></head><body>" \
               "<h1>500 Internal Server Error</h1><p>The application failed to answer " \
               f"<code>{escape(path)}</code>.</p>"
        if self.display_tracebacks:
            tb = "".join(traceback.format_exception(*exc_info))
            text += f"<pre>{escape(tb)}</pre>"
        text += "</body></html>\n"
        return _simple_response(start_response, "500 Internal Server Error", text)


class _StreamAborted(ConnectionAbortedError):
    """Raised into the server when a response fails midway: pywsgi then closes quietly."""


class GreenletHost(WSGIHost):
    """``"threads": false``: the app runs in the handler greenlet (it must be gevent-aware)."""

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        environ["wsgi.multithread"] = False
        environ["wsgi.multiprocess"] = False
        call = self._begin(environ)
        if call.error is not None:
            return self._error_page(environ, start_response, call.error)
        if call.status is None:
            return self._error_page(environ, start_response, (
                RuntimeError, RuntimeError("the application did not call start_response()"), None))
        start_response(call.status, call.headers, call.exc_info)
        if call.iterator is None:
            return call.chunks
        return self._stream_here(call, environ)

    def _stream_here(self, call: _Call, environ: dict) -> Iterable[bytes]:
        try:
            yield from call.chunks
            call.chunks = []
            while True:
                chunk = self._next(call)
                if chunk is _DONE:
                    return
                if chunk:
                    yield chunk
        except Exception:
            log.error("%s: error while streaming the response to %s %s", self.name,
                      environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), exc_info=True)
            raise _StreamAborted(errno.ECONNRESET, "response aborted by the application") from None
        finally:
            if call.result is not None:
                self._finish(call)


def _environ_hook(cfg: dict, ctx: BuildContext) -> Callable | None:
    """In-process WAMP for the app (``"wamp": {...}``), when geonode.wamp exists."""
    wamp_cfg = cfg.get("wamp")
    if not wamp_cfg:
        return None
    try:
        from geonode import wamp
    except ImportError:
        log.warning("%s.wamp: in-process WAMP is not available in this build; ignored",
                    ctx.json_path)
        return None
    return wamp.environ_hook(wamp_cfg, ctx)


def build(cfg: dict, ctx: BuildContext) -> Callable:
    """Build the WSGI Host Service ``{"type": "wsgi", "module": ..., "object": ...}``."""
    app = load_object(cfg, ctx)
    display = bool(ctx.transport_options.get("display_tracebacks", False))
    name = f"{cfg.get('module')}:{cfg.get('object')}"
    hook = _environ_hook(cfg, ctx)
    if cfg.get("threads", True) is False:
        return GreenletHost(app, None, display_tracebacks=display, environ_hook=hook, name=name)
    from gevent.threadpool import ThreadPool

    maxthreads = int(cfg.get("maxthreads", 20))
    minthreads = min(int(cfg.get("minthreads", 0)), maxthreads)
    pool = ThreadPool(maxsize=maxthreads)
    if minthreads:
        pool.size = minthreads
    return WSGIHost(app, pool, display_tracebacks=display, environ_hook=hook, name=name)
