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
import io
import logging
import sys
import tempfile
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from html import escape
from time import monotonic as _monotonic
from typing import Any

from geonode.config.imports import wsgi_object
from geonode.config.model import WsgiService
from geonode.httpstatus import status_line
from geonode.web.context import BuildContext
from geonode.web.limits import max_body_size

log = logging.getLogger("geonode.wsgi")

# Request bodies up to this size stay in memory; bigger ones go to a temporary file.
SPOOL_MAX = 1024 * 1024
_READ_SIZE = 65536

# The end markers of a request's chunk queue (see _Call).
_DONE = object()
_ERROR = object()
_HANDOFF = object()


class BadRequestBody(Exception):
    """The client sent a body that does not match its own framing."""

    status = status_line(400)


class BodyTimeout(BadRequestBody):
    """The body did not arrive in time (idle past client_timeout, or slower than MIN_BODY_RATE)."""

    status = status_line(408)


class BodyTooLarge(BadRequestBody):
    """The body is (or has become, chunk by chunk) larger than the path's ``max_body_size``."""

    status = status_line(413)

    def __init__(self, limit: int, length: int | None = None) -> None:
        size = f"of {length} bytes " if length is not None else ""
        super().__init__(f"request body {size}larger than max_body_size ({limit} bytes)")


def _declared_length(environ: dict) -> int | None:
    """The body's Content-Length as a number, None when chunked or unreadable."""
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        return None
    length = environ.get("CONTENT_LENGTH")
    return int(length) if length and length.isdigit() else None


class _LimitedInput:
    """``wsgi.input`` of a chunked body in greenlet mode: :class:`BodyTooLarge` past the limit.

    The app reads the connection itself there, so the count happens as it reads."""

    __slots__ = ("src", "left", "limit")

    def __init__(self, src: Any, limit: int) -> None:
        self.src = src
        self.limit = limit
        self.left = limit

    def _count(self, data: bytes) -> bytes:
        self.left -= len(data)
        if self.left < 0:
            raise BodyTooLarge(self.limit)
        return data

    def _want(self, n: int | None) -> int:
        # One byte over the limit is enough to know; never ask the socket for more.
        return self.left + 1 if n is None or n < 0 else min(n, self.left + 1)

    def read(self, n: int | None = -1) -> bytes:
        return self._count(self.src.read(self._want(n)))

    def readline(self, n: int | None = -1) -> bytes:
        return self._count(self.src.readline(self._want(n)))

    def readlines(self, hint: int | None = None) -> list[bytes]:
        return list(self)

    def __iter__(self):
        while line := self.readline():
            yield line


# With ``client_timeout`` a body must keep up this average rate after a grace of client_timeout:
# a client trickling bytes (each within the socket's idle timeout) cannot hold the request open.
MIN_BODY_RATE = 4096


def spool_body(environ: dict, max_size: int | None = None) -> None:
    """Read the whole request body on the hub and give the app a file it can read without I/O.

    :class:`BodyTooLarge` for a body over ``max_size``: before reading a byte of it when its
    Content-Length says so (no ``100 Continue`` is sent either), else as soon as the chunks
    read add up to more."""
    length = environ.get("CONTENT_LENGTH")
    chunked = environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
    if not chunked and not length:
        environ["wsgi.input"] = io.BytesIO()
        environ["wsgi.input_terminated"] = True
        return
    timeout = environ.get("geonode.client_timeout")
    src = environ["wsgi.input"]
    if timeout:
        src = _Budgeted(src, timeout)
    try:
        _spool(environ, src, length, chunked, max_size)
    except TimeoutError:
        raise BodyTimeout(f"request body not received within client_timeout "
                          f"({timeout} s idle)") from None
    except (OSError, ValueError) as e:
        # pywsgi raises these for an early EOF or broken chunk framing: the client's fault.
        raise BadRequestBody(f"unreadable request body: {e}") from None


class _Budgeted:
    """``wsgi.input`` whose reads share one deadline: ``timeout`` plus 1 s per MIN_BODY_RATE bytes."""

    __slots__ = ("src", "start", "timeout", "total")

    def __init__(self, src: Any, timeout: float) -> None:
        self.src = src
        self.start = _monotonic()
        self.timeout = timeout
        self.total = 0

    def read(self, want: int) -> bytes:
        from gevent import Timeout

        deadline = self.start + self.timeout + (self.total + want) / MIN_BODY_RATE
        budget = max(deadline - _monotonic(), 0.001)
        with Timeout(budget, BodyTimeout(f"request body slower than {MIN_BODY_RATE} bytes/s "
                                         "after client_timeout")):
            data = self.src.read(want)
        self.total += len(data)
        return data


def _spool(environ: dict, src: Any, length: str | None, chunked: bool,
           max_size: int | None) -> None:
    if not chunked:
        try:
            expected = int(length or "")
        except ValueError:
            raise BadRequestBody(f"invalid Content-Length {length!r}") from None
        if expected < 0:
            raise BadRequestBody(f"invalid Content-Length {length!r}")
        if max_size is not None and expected > max_size:
            raise BodyTooLarge(max_size, expected)
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
    try:
        total = 0
        while expected < 0 or total < expected:
            if expected >= 0:
                want = min(_READ_SIZE, expected - total)
            elif max_size is not None:
                # A chunked body: one byte past the limit is enough to refuse it.
                want = min(_READ_SIZE, max_size + 1 - total)
            else:
                want = _READ_SIZE
            data = src.read(want)
            if not data:
                break
            total += len(data)
            if expected < 0 and max_size is not None and total > max_size:
                raise BodyTooLarge(max_size)
            spool.write(data)
        if expected >= 0 and total != expected:
            raise BadRequestBody("request body shorter than its Content-Length")
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    environ["wsgi.input"] = spool
    environ["wsgi.input_terminated"] = True
    environ["CONTENT_LENGTH"] = str(total)
    # The app sees a plain body of known length: the chunked framing is gone.
    environ.pop("HTTP_TRANSFER_ENCODING", None)


def _simple_response(start_response: Callable, status: str, text: str,
                     extra: tuple = ()) -> list[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", "text/html; charset=utf-8"),
                            ("Content-Length", str(len(body))), *extra])
    return [body]


class _Channel:
    """Thread → hub wake-ups for one request: a libev async watcher, reused across requests.

    ``send()`` is safe from any thread and coalesces (a second send before the hub ran is
    free), so a response whose chunks are all produced at once still wakes the hub once.
    """

    __slots__ = ("watcher", "waiter", "hub")

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.waiter: Any = None
        self.watcher = hub.loop.async_()
        self.watcher.start(self._fire)

    def _fire(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            w.switch(None)

    def wait(self) -> None:
        """Block this greenlet until the next send (spurious wake-ups are possible)."""
        from gevent.hub import Waiter

        w = self.waiter = Waiter(self.hub)
        try:
            w.get()
        finally:
            self.waiter = None


class _Call:
    """One request's trip through the pool.

    The worker thread appends body chunks to ``queue`` and ends it with one marker: ``_DONE``,
    ``_ERROR`` (``error`` holds exc_info) or ``_HANDOFF`` (a long stream: the rest is pulled one
    chunk per pool round trip, which bounds the memory a fast producer can fill).
    """

    __slots__ = ("status", "headers", "exc_info", "queue", "send", "iterator", "result",
                 "error", "cancelled", "headers_seen", "submitted")

    def __init__(self, send: Callable[[], None]) -> None:
        self.status: str | None = None
        self.headers: list | None = None
        self.exc_info: Any = None
        self.queue: deque = deque()
        self.send = send
        self.iterator: Any = None
        self.result: Any = None
        self.error: Any = None
        self.cancelled = False
        self.headers_seen = False
        self.submitted = 0.0

    def start_response(self, status: str, headers: list, exc_info: Any = None) -> Callable:
        if exc_info is not None and self.headers_seen:
            # Headers may already be on the wire: PEP 3333 says re-raise.
            raise exc_info[1].with_traceback(exc_info[2])
        self.status = status
        self.headers = headers
        self.exc_info = exc_info
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333's legacy ``write()``: queued like a yielded chunk."""
        if data:
            self.headers_seen = True
            self.queue.append(data)
            self.send()


def _not_bytes(chunk: Any) -> None:
    """Raise for a body chunk that is not bytes (a common bug: yielding str)."""
    if not isinstance(chunk, (bytes, bytearray, memoryview)):
        raise TypeError(f"the WSGI application produced a {type(chunk).__name__} body chunk; "
                        "WSGI requires bytes")


def _close(result: Any) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


class _NoResult:
    """The pool's per-task result slot, unused: each request reports through its channel."""

    __slots__ = ()

    def set(self, value: Any) -> None:
        pass

    def handle_error(self, context: Any, exc_info: Any) -> None:
        log.error("WSGI pool task failed", exc_info=exc_info)


_NO_RESULT = _NoResult()


def _drain(call: _Call, ch: _Channel | None) -> None:
    """Wait (on the hub) until the request's producer is done with it (greenlet mode: it is)."""
    q = call.queue
    while True:
        while not q:
            ch.wait()  # type: ignore[union-attr]
        item = q.popleft()
        if item is _DONE or item is _ERROR or item is _HANDOFF:
            return


# A request waiting this long for a thread makes the pool start another one (up to maxthreads).
GROW_AFTER = 0.005

# A stream pushes at most this much by itself before the hub takes over pulling.
_PUSH_CHUNKS = 64
_PUSH_BYTES = 1024 * 1024


class WSGIHost:
    """The hub-side WSGI app wrapping one hosted app; ``pool=None`` is greenlet mode."""

    def __init__(self, app: Callable, pool: Any, *, display_tracebacks: bool = False,
                 environ_hook: Callable | None = None, name: str = "",
                 max_body_size: int | None = None) -> None:
        self.app = app
        self.pool = pool
        self.max_body_size = max_body_size
        self.display_tracebacks = display_tracebacks
        self.environ_hook = environ_hook
        self.name = name
        self._channels: list[_Channel] = []
        self._grow_timer: Any = None

    # ---- runs on the pool -------------------------------------------------------------
    def _produce(self, call: _Call, environ: dict) -> None:
        """Call the app and iterate its response, pushing chunks to the hub as they come.

        On the pool a stream pushes up to ``_PUSH_CHUNKS``/``_PUSH_BYTES`` by itself; in
        greenlet mode (run inline) it stops after the first chunk, which decides the headers.
        """
        q = call.queue
        send = call.send
        push_chunks, push_bytes = (_PUSH_CHUNKS, _PUSH_BYTES) if self.pool else (1, 1)
        result = None
        try:
            if self.environ_hook is not None:
                self.environ_hook(environ)
            result = self.app(environ, call.start_response)
            if type(result) is list or type(result) is tuple:
                for chunk in result:
                    if type(chunk) is not bytes:
                        _not_bytes(chunk)
                q.extend(result)
            else:
                it = iter(result)
                chunks = size = 0
                for chunk in it:
                    if type(chunk) is not bytes:
                        _not_bytes(chunk)
                    if not chunk:
                        continue
                    call.headers_seen = True
                    q.append(chunk)
                    send()
                    if call.cancelled:
                        break
                    chunks += 1
                    size += len(chunk)
                    if chunks >= push_chunks or size >= push_bytes:
                        call.iterator, call.result = it, result
                        q.append(_HANDOFF)
                        send()
                        return
            result, r = None, result
            _close(r)
            q.append(_DONE)
        except BaseException:  # noqa: B036 - even SystemExit in a view is that request's 500
            call.error = sys.exc_info()
            if result is not None:
                try:
                    _close(result)
                except Exception:
                    log.debug("close() after an app error failed", exc_info=True)
            q.append(_ERROR)
        send()

    @staticmethod
    def _next(call: _Call) -> Any:
        """The next non-empty chunk, ``_DONE`` (response closed) or ``_ERROR``."""
        try:
            for chunk in call.iterator:
                if type(chunk) is not bytes:
                    _not_bytes(chunk)
                if chunk:
                    return chunk
        except BaseException:  # noqa: B036
            call.error = sys.exc_info()
            WSGIHost._finish(call)
            return _ERROR
        WSGIHost._finish(call)
        return _DONE

    @staticmethod
    def _finish(call: _Call) -> None:
        result, call.result = call.result, None
        call.iterator = None
        try:
            _close(result)
        except BaseException:  # noqa: B036
            log.warning("close() of a WSGI response failed", exc_info=True)

    # ---- runs on the hub --------------------------------------------------------------
    def _apply(self, func: Callable, call: _Call) -> Any:
        """``func(call)`` where the app's code runs: on the pool, or here in greenlet mode."""
        if self.pool is None:
            return func(call)
        return self.pool.apply(func, (call,))

    def _submit(self, call: _Call, environ: dict) -> None:
        """Queue ``_produce(call, environ)`` for a pool thread.

        ``ThreadPool.spawn`` builds an AsyncResult, a semaphore slot and a libev async watcher
        per task; the request already has its own wake-up channel, so this feeds the pool's
        task queue directly (what spawn does underneath) and only starts threads as needed.
        """
        pool = self.pool
        queue = pool.task_queue
        call.submitted = _monotonic()
        queue.put((self._produce, (call, environ), {}, _NO_RESULT))
        size = pool.size
        if size == 0:
            pool.size = 1
        elif queue.unfinished_tasks > size < pool.maxsize and self._grow_timer is None:
            self._watch_backlog()

    def _watch_backlog(self) -> None:
        """Start another thread only when queued requests wait ``GROW_AFTER`` or longer.

        Growing on every busy moment (what ``ThreadPool.spawn`` does) puts 20 threads on a
        CPU-bound app: they take turns at the GIL and every turn costs a context switch (about
        a third more CPU per request than with two threads). Threads that are *blocked*
        (sleeping, waiting on a database) leave requests waiting in the queue, which is what
        the timer looks for: then the pool grows by one thread per ``GROW_AFTER``.
        """
        from gevent import get_hub

        timer = self._grow_timer = get_hub().loop.timer(GROW_AFTER, GROW_AFTER)
        timer.start(self._check_backlog)

    def _check_backlog(self) -> None:
        pool = self.pool
        waiting = pool.task_queue._queue  # (func, args, kwargs, result) tuples, oldest first
        # (None: a thread-exit sentinel, the pool is being shrunk or killed)
        if waiting and waiting[0] is not None and pool.size < pool.maxsize:
            call = waiting[0][1][0]  # every task on this pool takes the request's _Call first
            if _monotonic() - call.submitted >= GROW_AFTER:
                pool.size = pool.size + 1
            return
        timer, self._grow_timer = self._grow_timer, None
        timer.stop()
        timer.close()

    def _channel(self) -> _Channel:
        if self._channels:
            ch = self._channels.pop()
            ch.watcher.ref = True
            return ch
        from gevent import get_hub

        return _Channel(get_hub())

    def _release(self, ch: _Channel | None) -> None:
        if ch is not None:
            # Idle watchers must not keep the loop alive.
            ch.watcher.ref = False
            self._channels.append(ch)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:  # noqa: C901 - the per-request hand-off to the pool, inlined on the hot path (bench/http)
        environ["wsgi.multiprocess"] = False
        q: deque
        if self.pool is None:
            # Greenlet mode: the app reads wsgi.input itself, runs here up to its first chunk.
            limit = self.max_body_size
            if limit is not None and (environ.get("CONTENT_LENGTH")
                                      or environ.get("HTTP_TRANSFER_ENCODING")):
                length = _declared_length(environ)
                if length is None:
                    environ["wsgi.input"] = _LimitedInput(environ["wsgi.input"], limit)
                elif length > limit:
                    return self._refuse_body(start_response, BodyTooLarge(limit, length))
            environ["wsgi.multithread"] = False
            ch = None
            call = _Call(_nothing)
            self._produce(call, environ)
            q = call.queue
        else:
            try:
                spool_body(environ, self.max_body_size)
            except BadRequestBody as e:
                return self._refuse_body(start_response, e)
            environ["wsgi.multithread"] = True
            ch = self._channel()
            call = _Call(ch.watcher.send)
            q = call.queue
            self._submit(call, environ)
            try:
                while not q:
                    ch.wait()
            except BaseException:
                # Killed while the app runs (shutdown past its grace): the thread finishes alone.
                call.cancelled = True
                ch.watcher.ref = False
                raise
        first = q.popleft()
        if first is _ERROR:
            self._release(ch)
            if self.pool is None and isinstance(call.error[1], BodyTooLarge):
                # Greenlet mode: the chunks the app read went past max_body_size.
                return self._refuse_body(start_response, call.error[1])
            if self.pool is None and _client_body_error(call.error[1]):
                # Greenlet mode: the app read a body the client framed wrongly. That is a
                # 400 (no traceback), and the handler closes the connection.
                log.warning("%s: bad request body for %s %s: %s", self.name,
                            environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"),
                            call.error[1])
                return _simple_response(start_response, status_line(400),
                                        "<h1>400 Bad Request</h1><p>unreadable request body</p>\n",
                                        (("Connection", "close"),))
            return self._error_page(environ, start_response, call.error)
        if call.status is None:
            if first is _DONE:
                self._release(ch)
            else:
                self._abandon(call, ch)
            return self._error_page(environ, start_response, (
                RuntimeError, RuntimeError("the application did not call start_response()"), None))
        chunks: list | None
        if first is _DONE:
            chunks = []
        elif q and q[-1] is _DONE:
            # The whole response is here already (the usual case): one list, Content-Length known.
            q.pop()
            chunks = [first, *q] if q else [first]
        else:
            chunks = None  # still producing: stream it
        try:
            start_response(call.status, call.headers, call.exc_info)
        except (TypeError, ValueError, UnicodeError, AssertionError) as e:
            # Bad status or headers from the app (pywsgi validates them): that request's 500.
            if chunks is None:
                self._abandon(call, ch)
            else:
                self._release(ch)
            return self._error_page(environ, start_response, (type(e), e, e.__traceback__))
        if chunks is not None:
            self._release(ch)
            return chunks
        return self._stream(call, ch, first, environ)

    def _refuse_body(self, start_response: Callable, e: BadRequestBody) -> list[bytes]:
        """The answer to a body that was not (or not all) read: the connection cannot carry
        another request, since where this one's body ends is unknown or unread."""
        log.warning("%s: %s", self.name, e)
        return _simple_response(start_response, e.status,
                                f"<h1>{e.status}</h1><p>{escape(str(e))}</p>\n",
                                (("Connection", "close"),))

    def _abandon(self, call: _Call, ch: _Channel | None) -> None:
        """Stop a producer whose output will not be sent, and wait until it let go."""
        call.cancelled = True
        _drain(call, ch)
        if call.result is not None:
            self._apply(self._finish, call)
        self._release(ch)

    def _stream(self, call: _Call, ch: _Channel | None, first: Any,
                environ: dict) -> Iterable[bytes]:
        q = call.queue
        finished = False
        try:
            item = first
            while item is not _HANDOFF:
                if item is _DONE:
                    finished = True
                    return
                if item is _ERROR:
                    finished = True
                    self._abort(environ, call.error)
                yield item
                while not q:
                    ch.wait()  # type: ignore[union-attr]  # greenlet mode always ends on a marker
                item = q.popleft()
            # A long stream (or any stream in greenlet mode): pull it one chunk at a time.
            apply = self._apply
            next_ = self._next
            while True:
                chunk = apply(next_, call)
                if chunk is _DONE:
                    finished = True
                    return
                if chunk is _ERROR:
                    finished = True
                    self._abort(environ, call.error)
                yield chunk
        finally:
            if not finished:
                # The client went away (or the node is stopping): stop the producer.
                call.cancelled = True
                if item is not _HANDOFF:
                    _drain(call, ch)
                if call.result is not None:
                    self._apply(self._finish, call)
            self._release(ch)

    def _abort(self, environ: dict, exc_info: Any) -> None:
        # Headers are already sent: all that is left is to log and drop the connection
        # (pywsgi closes it quietly on a reset-type socket error).
        log.error("%s: error while producing the response to %s %s", self.name,
                  environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), exc_info=exc_info)
        raise _StreamAborted(errno.ECONNRESET, "response aborted by the application")

    def _error_page(self, environ: dict, start_response: Callable, exc_info: Any) -> list[bytes]:
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        log.error("%s: exception in WSGI app for %s %s", self.name,
                  environ.get("REQUEST_METHOD"), path, exc_info=exc_info)
        status = status_line(500)
        text = f"<!DOCTYPE html><html><head><title>{status}</title></head><body>" \
               f"<h1>{status}</h1><p>The application failed to answer " \
               f"<code>{escape(path)}</code>.</p>"
        if self.display_tracebacks:
            tb = "".join(traceback.format_exception(*exc_info))
            text += f"<pre>{escape(tb)}</pre>"
        text += "</body></html>\n"
        return _simple_response(start_response, status, text)


def _client_body_error(exc: BaseException) -> bool:
    """Did pywsgi's ``wsgi.input`` raise this for the client's broken body framing or early EOF?"""
    from gevent import pywsgi

    bad_input = getattr(pywsgi, "_InvalidClientInput", ())
    return isinstance(exc, bad_input) or (
        type(exc) is OSError and str(exc).startswith("unexpected end of file"))


def _nothing() -> None:
    """Greenlet mode's wake-up: the hub is running the app itself, nobody waits."""


class _StreamAborted(ConnectionAbortedError):
    """Raised into the server when a response fails midway: pywsgi then closes quietly."""


def build(cfg: WsgiService, ctx: BuildContext) -> Callable:
    """Build the WSGI Host Service ``{"type": "wsgi", "module": ..., "object": ...}``.

    ``"threads": false`` (greenlet mode, gevent-aware apps) runs the app in the connection's
    greenlet: no pool, no thread hop, and the body is read by the app as it wants.
    """
    app = wsgi_object(cfg)
    display = bool(ctx.transport_options.get("display_tracebacks", False))
    name = f"{cfg.module}:{cfg.object}"
    hook = None
    if cfg.wamp:
        from geonode import wamp

        hook = wamp.environ_hook(cfg.wamp, ctx)
    limit = max_body_size(cfg.extra, ctx)
    if not cfg.threads:
        return WSGIHost(app, None, display_tracebacks=display, environ_hook=hook, name=name,
                        max_body_size=limit)
    from gevent.threadpool import ThreadPool

    pool = ThreadPool(maxsize=cfg.maxthreads)
    if cfg.minthreads:
        pool.size = cfg.minthreads
    return WSGIHost(app, pool, display_tracebacks=display, environ_hook=hook, name=name,
                    max_body_size=limit)
