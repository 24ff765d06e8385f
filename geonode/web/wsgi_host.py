"""WSGI Host Service: an unmodified WSGI app on its own pool of native threads.

The split of work (why it looks like this):
- The app callable and every ``next()`` on its response run on the service's pool, so a
  blocking call in a view (``time.sleep``, a DB driver, CPU work) never stalls the hub.
- All socket I/O stays on the hub: the request body is read here first (spooled to memory, or
  to a temporary file above ``SPOOL_MAX``), which also keeps slow uploaders from holding a
  thread; response chunks are written by the hub's handler greenlet.
- A list/tuple response (or an iterator that finishes quickly) costs one pool round trip.
- The pool is this module's ``Pool``, not gevent's ``ThreadPool``: the hand-off is most of
  what a thread costs a request, and ``Pool`` batches it (see there; bench/README.md
  "Where a request's CPU goes").

``"threads": false`` runs the app directly in the handler greenlet (for gevent-aware apps).
"""

from __future__ import annotations

import errno
import io
import logging
import os
import sys
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from html import escape
from time import monotonic as _monotonic
from typing import Any

from greenlet import getcurrent

from geonode.config.imports import wsgi_object
from geonode.config.model import WsgiService
from geonode.handoff import Wakeup
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


class _Call:
    """One request's trip through the pool.

    The worker thread appends body chunks to ``queue`` and ends it with one marker: ``_DONE``,
    ``_ERROR`` (``error`` holds exc_info) or ``_HANDOFF`` (a long stream: the rest is pulled one
    chunk per pool round trip, which bounds the memory a fast producer can fill).
    ``task(call)`` is what a pool thread runs next for it; ``value`` is the answer of a pull.
    """

    __slots__ = ("status", "headers", "exc_info", "queue", "notify", "iterator", "result",
                 "error", "cancelled", "headers_seen", "submitted", "environ", "task", "value",
                 "notified", "waiter")

    def __init__(self, notify: Callable[[_Call], None], environ: dict) -> None:
        self.status: str | None = None
        self.headers: list | None = None
        self.exc_info: Any = None
        self.queue: deque = deque()
        self.notify = notify
        self.iterator: Any = None
        self.result: Any = None
        self.error: Any = None
        self.cancelled = False
        self.headers_seen = False
        self.submitted = 0.0
        # None once a pool thread took it (the call no longer holds the request)
        self.environ: dict | None = environ
        self.task: Callable[[_Call], None] | None = None
        self.value: Any = None
        # set by a pool thread when it puts the call in Pool.done, cleared by the hub
        self.notified = False
        # the greenlet waiting for this call (hub side), None while it is not waiting
        self.waiter: Any = None

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
            self.notify(self)


def _not_bytes(chunk: Any) -> None:
    """Raise for a body chunk that is not bytes (a common bug: yielding str)."""
    if not isinstance(chunk, (bytes, bytearray, memoryview)):
        raise TypeError(f"the WSGI application produced a {type(chunk).__name__} body chunk; "
                        "WSGI requires bytes")


def _close(result: Any) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


def _no_notify(call: _Call) -> None:
    """Greenlet mode's wake-up: the hub is running the app itself, nobody waits."""


# A request waiting this long for a thread makes the pool add one (wake a parked one, else
# start one; up to maxthreads) while fewer than FREE_THREADS are awake, and beyond that only
# when the threads it has are blocked: the node's threads used a CPU less than SATURATED of
# the time meanwhile (they wait in calls, not for the GIL), or none finished anything for
# STUCK_AFTER (one long call). STUCK_AFTER is twice Python's GIL switch interval: a thread
# running short CPU-bound calls that lost the GIL to the hub for one interval is not stuck.
# FREE_THREADS: a few threads waiting briefly on the hub (an acknowledged WAMP publish) let
# the hub batch that work even when the node is CPU-bound (bench/bridge flask-puback: one
# thread cost 20 % more CPU per request than four); more than that contend for the GIL.
GROW_AFTER = 0.005
# A thread beyond minthreads that had nothing to do for this long ends (a burst's threads are
# given back; minthreads stay ready). Waking is LIFO, so the threads a quiet node does not need
# are the ones that time out.
IDLE_TIMEOUT = 60.0
STUCK_AFTER = 0.010
SATURATED = 0.75
FREE_THREADS = 4
# The hand-offs above have no timeout: a wake-up lost to a bug (ours, gevent's or libev's)
# would hang every request of the pool for good. Once per WATCHDOG a hub timer looks for the
# two states that only a lost wake-up explains (a report nobody delivered, a queued call no
# parked thread was woken for, both unchanged for a whole period), logs it and repairs it.
# It failed once in a 20-minute busy-machine suite run (.ci/stress, 2026-12-07) and never
# reproduced since: this makes such a hang a logged one-second stall instead.
WATCHDOG = 1.0

# A stream pushes at most this much by itself before the hub takes over pulling.
_PUSH_CHUNKS = 64
_PUSH_BYTES = 1024 * 1024

# What a pull's ``value`` is until its thread answered.
_PENDING = object()

_pools: Any = None  # the WeakSet of every Pool, for the fork handler (made by the first Pool)


def _forget_threads_after_fork() -> None:
    for pool in list(_pools):
        pool._after_fork()


class _Demand:
    """CPU time used by some threads (Linux schedstat, one ``pread`` per thread: the hub's
    own clock would not see the pool's threads). A thread waiting for the GIL, or blocked in a
    call (a sleep, a socket, a lock), uses none. Without /proc: the process's CPU time.

    Time spent runnable but not running (a machine busy with other processes) is left out on
    purpose: counted, it makes blocked threads on a busy machine look CPU-bound, and a pool
    that grows too little serialises blocking calls; one that grows a little too much only
    costs some GIL turns."""

    def __init__(self) -> None:
        self.tids: list[int] = []
        self.fds: dict[int, int] = {}
        self.gone: deque[int] = deque()  # threads that ended (appended by them, read by ns)
        self.proc = os.path.isdir("/proc/self/task")

    def ns(self) -> int:
        if not self.proc:
            return time.process_time_ns()
        while self.gone:
            tid = self.gone.popleft()
            try:
                self.tids.remove(tid)
                os.close(self.fds.pop(tid))
            except (ValueError, KeyError, OSError):
                pass
        total = 0
        for tid in self.tids:
            try:
                fd = self.fds.get(tid)
                if fd is None:
                    fd = self.fds[tid] = os.open(f"/proc/self/task/{tid}/schedstat", os.O_RDONLY)
                total += int(os.pread(fd, 128, 0).split(None, 1)[0])
            except (OSError, ValueError):
                pass
        return total

    def forget(self) -> None:
        """After a fork: these were the parent's threads."""
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()
        self.tids.clear()
        self.gone.clear()


class Pool:
    """A WSGI host's native threads, and the hub's side of talking to them.

    gevent's ``ThreadPool`` costs a request an ``AsyncResult``, a libev async watcher and a
    semaphore slot, a Python-level condition variable around every queue operation, and one
    watcher callback per request on the hub. Here:

    - hub → thread: the call is appended to ``pending``; if a thread is parked, the lock it
      sleeps on is released (the only system call). A thread takes the next pending call before
      it parks, so under load it runs call after call without sleeping;
    - thread → hub: a finished call (or a streamed chunk) is appended to ``done`` and the
      pool's ``geonode.handoff.Wakeup`` is sent (the node's one thread-to-hub mechanism:
      ``loop.run_callback_threadsafe`` once per burst). Sends coalesce until the hub runs, and
      one callback resumes every waiting greenlet of the batch directly: a busy hub wakes
      once per batch, not once per request.

    ``deque``/``list`` appends and pops are atomic under the GIL, so no other lock is needed.
    Threads start on demand (``minthreads`` up front), never more than ``maxthreads``; those
    beyond ``minthreads`` end after ``idle_timeout`` s with nothing to do. The hub owns every
    watcher and timer.
    """

    def __init__(self, maxsize: int, minsize: int = 0,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        global _pools
        import weakref

        from gevent.monkey import get_original

        self._start_new_thread, self._allocate_lock, self._native_id = get_original(
            "_thread", ["start_new_thread", "allocate_lock", "get_native_id"])
        self.maxsize = max(int(maxsize), 1)
        self.minsize = min(int(minsize), self.maxsize)
        self.size = 0  # threads started and not ended
        self.idle_timeout = idle_timeout
        # ``size`` changes on the hub (a thread started) and on a thread (it ends): a += is
        # not atomic between threads. Held for a few bytecodes, and rarely.
        self._size_lock = self._allocate_lock()
        self.pending: deque[_Call] = deque()
        self.done: deque[_Call] = deque()
        self.idle: list[Any] = []  # the park locks of threads with nothing to do
        self.waiting = 0  # greenlets waiting for a call of this pool
        self.last_done = 0.0  # monotonic time a thread last finished a task
        self._wake_scheduled = False
        # the hub's and the threads' CPU time, sampled by the backlog timer
        self._demand = _Demand()
        self._tick_at = 0.0
        self._tick_demand = 0
        self._slack = False  # last verdict: calls waited while the threads were blocked
        self.hub: Any = None
        self.keepalive: Any = None
        self.wakeup: Wakeup | None = None
        self.send: Callable[[], None] = _no_send
        self._grow_timer: Any = None
        self._watchdog: Any = None
        self._seen_done: _Call | None = None  # done[0] and pending[0] at the last look
        self._seen_pending: _Call | None = None
        self.rescued = 0  # lost wake-ups the watchdog repaired
        self._deliveries = 0  # runs of _deliver (the watchdog compares two looks)
        self._seen_deliveries = 0
        if _pools is None:
            _pools = weakref.WeakSet()
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_forget_threads_after_fork)
        _pools.add(self)
        for _ in range(self.minsize):
            self._start_thread()

    def use(self) -> tuple[int, int, int]:
        """(calls running on a thread, calls waiting for one, maxthreads): the metrics' view."""
        queued = len(self.pending)
        return max(0, self.waiting - queued), queued, self.maxsize

    def _after_fork(self) -> None:
        # Only the forking thread survives a fork: the others, and what they held, are gone.
        # (A running backlog timer stops itself once nothing is pending.)
        self.size = 0
        self._size_lock = self._allocate_lock()  # a parent's thread may have held it
        self.pending.clear()
        self.done.clear()
        self.idle.clear()
        self.waiting = 0
        self._wake_scheduled = False
        if self.wakeup is not None:
            self.wakeup.reset()
        self._demand.forget()
        if self.hub is not None:
            self._demand.tids.append(self._native_id())  # the forking thread: the hub

    def _bind(self) -> None:
        """The hub of the thread that first submits (the node's hub) is the one told."""
        from gevent import get_hub

        self.hub = get_hub()
        self._demand.tids.append(self._native_id())
        # The wake-up's callback keeps the loop running only once scheduled: while a thread
        # runs a call, this (never sent) watcher does, but only while a greenlet waits.
        self.keepalive = self.hub.loop.async_()
        self.keepalive.start(_no_send)
        self.keepalive.ref = False
        self.wakeup = Wakeup(self.hub.loop, self._deliver)
        self.send = self.wakeup.send
        # never keeps the loop alive by itself (a waiting greenlet does: ``keepalive``)
        self._watchdog = self.hub.loop.timer(WATCHDOG, WATCHDOG, ref=False)
        self._watchdog.start(self._watch)

    # ---- hub side ---------------------------------------------------------------------
    def submit(self, call: _Call, task: Callable[[_Call], None]) -> None:
        """Queue ``task(call)`` for a thread.

        Parked threads are woken for it only when no thread is awake, when the awake ones
        have finished nothing for ``STUCK_AFTER``, or when the last look found them blocked
        (see ``_check_backlog``): a CPU-bound app then runs on one thread, call after call,
        instead of several threads taking turns at the GIL. The wake-up itself waits for the
        end of the hub's loop iteration (``run_callback``), so the requests that arrived
        together go to the pool as one batch, and its thread takes the GIL while the hub
        sleeps in epoll instead of at the hub's every socket call.
        """
        if self.hub is None:
            self._bind()
        call.task = task
        now = call.submitted = _monotonic()
        pending = self.pending
        pending.append(call)
        if self._wake_scheduled:
            return
        idle = self.idle
        if idle and (len(idle) == self.size or self._slack
                     or now - self.last_done >= STUCK_AFTER):
            self._wake_scheduled = True
            self.hub.loop.run_callback(self._wake)
        elif self.size < max(self.minsize, 1):
            self._start_thread()
        elif self._grow_timer is None and (idle or self.size < self.maxsize):
            self._watch_backlog()  # the call waits for an awake thread: keep an eye on it

    def _wake(self) -> None:
        self._wake_scheduled = False
        pending, idle = self.pending, self.idle
        woken = 0
        while len(pending) > woken and (not woken or self._slack) and self._wake_one():
            woken += 1
        if len(pending) > woken and self._grow_timer is None and (
                idle or self.size < self.maxsize):
            self._watch_backlog()  # more calls than threads woken: they may block

    def wait(self, call: _Call) -> None:
        """Park this greenlet until a thread reports on ``call`` (spurious wake-ups possible).

        Killed meanwhile (shutdown past its grace), the call is marked cancelled: its thread
        finishes alone and stops at the next chunk."""
        call.waiter = getcurrent()
        if not self.waiting:
            self.keepalive.ref = True  # a waiting greenlet keeps the loop alive
        self.waiting += 1
        try:
            self.hub.switch()
        except BaseException:
            call.cancelled = True
            raise
        finally:
            call.waiter = None
            self.waiting -= 1
            if not self.waiting:
                self.keepalive.ref = False

    def _deliver(self) -> None:
        """The wake-up's callback: resume the greenlet of every call reported so far."""
        done = self.done
        self._deliveries += 1
        try:
            # Calls reported while this runs come with a send of their own: the next callback.
            for _ in range(len(done)):
                call = done.popleft()
                call.notified = False  # before the greenlet looks: a later report sends again
                waiter = call.waiter
                if waiter is not None:
                    waiter.switch()
        finally:
            if done:
                self.send()

    def _wake_one(self) -> bool:
        """Release one parked thread; False when none is parked (a thread that found work
        while parking takes itself off ``idle``: pop, never look-then-pop)."""
        try:
            park = self.idle.pop()
        except IndexError:
            return False
        park.release()
        return True

    def _watch_backlog(self) -> None:
        """Every ``GROW_AFTER`` while calls wait: add a thread (wake a parked one, else start
        one) while fewer than ``FREE_THREADS`` are awake or the awake ones are blocked.

        Growing whenever requests queue (what ``ThreadPool.spawn`` does, and queueing is the
        normal state of a busy CPU-bound app) puts 20 threads on a CPU-bound app: they take
        turns at the GIL and every turn costs a context switch (about a third more CPU per
        request than with two threads), for nothing. Threads that are *blocked* (sleeping,
        waiting on a database or on the hub) leave the CPU unwanted while calls wait, which is
        what this looks for; so is a thread busy with one long call that holds up the calls
        behind it (nothing finished for ``STUCK_AFTER``).
        """
        self._tick_at = _monotonic()
        self._tick_demand = self._demand.ns()
        timer = self._grow_timer = self.hub.loop.timer(GROW_AFTER, GROW_AFTER)
        timer.start(self._check_backlog)

    def _check_backlog(self) -> None:
        pending = self.pending
        if pending and (self.idle or self.size < self.maxsize):
            if self._wake_scheduled:
                return  # threads are parked only until this loop iteration ends: not stuck
            now = _monotonic()
            window = now - self._tick_at
            if window < GROW_AFTER:
                return  # an overdue timer fires again at once: judge whole periods only
            demand = self._demand.ns()  # system calls: the threads may take calls meanwhile
            self._slack = demand - self._tick_demand < SATURATED * window * 1e9
            self._tick_at, self._tick_demand = now, demand
            try:
                head = pending[0]
            except IndexError:
                return
            if now - head.submitted >= GROW_AFTER and (
                    self._slack or now - self.last_done >= STUCK_AFTER
                    or self.size - len(self.idle) < FREE_THREADS):
                if not self._wake_one():
                    self._start_thread()
            return
        timer, self._grow_timer = self._grow_timer, None
        if timer is not None:
            timer.stop()
            timer.close()

    def _watch(self) -> None:
        """The watchdog's tick (see ``WATCHDOG``): cheap, once a second, on the hub."""
        done, pending = self.done, self.pending
        head_done = done[0] if done else None
        head_pending = pending[0] if pending else None
        # a report waiting a whole period with no delivery run meanwhile
        lost_report = (head_done is not None and head_done is self._seen_done
                       and self._deliveries == self._seen_deliveries)
        # a call queued for a whole period while threads sat parked, none finished anything
        # and no wake-up was on its way: the backlog timer wakes one within GROW_AFTER
        lost_call = (head_pending is not None and head_pending is self._seen_pending
                     and bool(self.idle) and not self._wake_scheduled
                     and _monotonic() - self.last_done >= WATCHDOG)
        self._seen_done, self._seen_pending = head_done, head_pending
        self._seen_deliveries = self._deliveries
        if not (lost_report or lost_call):
            return
        self.rescued += 1
        log.warning("WSGI pool: a lost wake-up repaired after ~%.0f s (%s; %d threads, %d parked, "
                    "%d queued, %d reported, %d waiting)", WATCHDOG,
                    "a finished call was not delivered" if lost_report
                    else "a queued call woke no thread",
                    self.size, len(self.idle), len(pending), len(done), self.waiting)
        self._seen_done = self._seen_pending = None
        if lost_call and not self._wake_one():
            self._start_thread()
        if lost_report:
            if self.wakeup is not None:
                self.wakeup.reset()  # its flag may be stuck set with no callback on the way
            self._deliver()

    def _start_thread(self) -> None:
        park = self._allocate_lock()
        park.acquire()
        with self._size_lock:
            self.size += 1
        try:
            self._start_new_thread(self._work, (park,))
        except BaseException:
            with self._size_lock:
                self.size -= 1
            raise

    # ---- thread side ------------------------------------------------------------------
    def notify(self, call: _Call) -> None:
        """Report on ``call`` to the hub (from a pool thread): at most once until delivered."""
        if not call.notified:
            call.notified = True
            self.done.append(call)
            self.send()

    def _work(self, park: Any) -> None:
        """A pool thread: run pending calls, park (on its own lock) when there are none."""
        import threading

        tid = self._native_id()
        self._demand.tids.append(tid)
        pending = self.pending
        idle = self.idle
        take = pending.popleft
        notify = self.notify
        monotonic = _monotonic
        while True:
            try:
                call = take()
            except IndexError:
                idle.append(park)
                if pending:
                    # Submitted after our look and before we were listed: take it ourselves,
                    # unless the hub already picked us to wake (then eat its release).
                    try:
                        idle.remove(park)
                    except ValueError:
                        park.acquire()
                    continue
                # Until the hub releases it; beyond minthreads, at most idle_timeout.
                if park.acquire(True, self.idle_timeout if self.size > self.minsize else -1):
                    continue
                try:
                    idle.remove(park)
                except ValueError:
                    park.acquire()  # the hub picked this thread meanwhile: its release comes
                    continue
                with self._size_lock:
                    leave = self.size > self.minsize and not pending
                    if leave:
                        self.size -= 1
                if leave:
                    self._demand.gone.append(tid)
                    return
                continue
            # As gevent's pool does: threading.settrace/setprofile hooks (debuggers, coverage)
            # apply to what the task runs.
            trace, profile = threading._trace_hook, threading._profile_hook  # type: ignore[attr-defined]
            if trace is not None or profile is not None:
                _run_hooked(call, trace, profile)
            else:
                try:
                    call.task(call)  # type: ignore[misc]
                except BaseException:  # noqa: B036 - tasks report their own errors; never die
                    log.exception("WSGI pool task failed")
            self.last_done = monotonic()
            notify(call)


def _run_hooked(call: _Call, trace: Any, profile: Any) -> None:
    if profile is not None:
        sys.setprofile(profile)
    if trace is not None:
        sys.settrace(trace)
    try:
        call.task(call)  # type: ignore[misc]
    except BaseException:  # noqa: B036
        log.exception("WSGI pool task failed")
    finally:
        sys.setprofile(None)
        sys.settrace(None)


def _no_send() -> None:
    """The send before the pool has a wake-up (nothing can be waiting yet)."""


class WSGIHost:
    """The hub-side WSGI app wrapping one hosted app; ``pool=None`` is greenlet mode."""

    def __init__(self, app: Callable, pool: Pool | None, *, display_tracebacks: bool = False,
                 environ_hook: Callable | None = None, name: str = "",
                 max_body_size: int | None = None) -> None:
        self.app = app
        self.pool = pool
        self.max_body_size = max_body_size
        self.display_tracebacks = display_tracebacks
        self.environ_hook = environ_hook
        self.name = name
        self._notify = pool.notify if pool is not None else _no_notify

    # ---- runs on the pool -------------------------------------------------------------
    def _produce(self, call: _Call) -> None:
        """Call the app and iterate its response, pushing chunks to the hub as they come.

        On the pool a stream pushes up to ``_PUSH_CHUNKS``/``_PUSH_BYTES`` by itself; in
        greenlet mode (run inline) it stops after the first chunk, which decides the headers.
        The pool thread reports the end (the queue's last marker) once this returns.
        """
        q = call.queue
        if call.cancelled:
            q.append(_DONE)  # its greenlet was killed before a thread got to it
            return
        notify = call.notify
        push_chunks, push_bytes = (_PUSH_CHUNKS, _PUSH_BYTES) if self.pool else (1, 1)
        environ = call.environ
        call.environ = None
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
                    if call.cancelled:
                        break
                    chunks += 1
                    size += len(chunk)
                    if chunks >= push_chunks or size >= push_bytes:
                        call.iterator, call.result = it, result
                        q.append(_HANDOFF)
                        return
                    notify(call)
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
    def _pull(call: _Call) -> None:
        call.value = WSGIHost._next(call)

    @staticmethod
    def _finish(call: _Call) -> None:
        result, call.result = call.result, None
        call.iterator = None
        try:
            _close(result)
        except BaseException:  # noqa: B036
            log.warning("close() of a WSGI response failed", exc_info=True)

    @staticmethod
    def _finish_task(call: _Call) -> None:
        WSGIHost._finish(call)
        call.value = None

    # ---- runs on the hub --------------------------------------------------------------
    def _apply(self, task: Callable[[_Call], None], call: _Call) -> Any:
        """``task(call)`` where the app's code runs (on the pool, or here in greenlet mode);
        the ``value`` it left."""
        pool = self.pool
        call.value = _PENDING
        if pool is None:
            task(call)
            return call.value
        pool.submit(call, task)
        while call.value is _PENDING:
            pool.wait(call)
        return call.value

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:  # noqa: C901 - the per-request hand-off to the pool, inlined on the hot path (bench/http)
        environ["wsgi.multiprocess"] = False
        pool = self.pool
        if pool is None:
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
            call = _Call(_no_notify, environ)
            self._produce(call)
            q = call.queue
        else:
            if environ.get("CONTENT_LENGTH") or environ.get("HTTP_TRANSFER_ENCODING"):
                try:
                    spool_body(environ, self.max_body_size)
                except BadRequestBody as e:
                    return self._refuse_body(start_response, e)
            else:
                environ["wsgi.input"] = io.BytesIO()
                environ["wsgi.input_terminated"] = True
            environ["wsgi.multithread"] = True
            call = _Call(self._notify, environ)
            q = call.queue
            pool.submit(call, self._produce)
            while not q:
                pool.wait(call)
        first = q.popleft()
        if first is _ERROR:
            if pool is None and isinstance(call.error[1], BodyTooLarge):
                # Greenlet mode: the chunks the app read went past max_body_size.
                return self._refuse_body(start_response, call.error[1])
            if pool is None and _client_body_error(call.error[1]):
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
            if first is not _DONE:
                self._abandon(call)
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
                self._abandon(call)
            return self._error_page(environ, start_response, (type(e), e, e.__traceback__))
        if chunks is not None:
            return chunks
        return self._stream(call, first, environ)

    def _refuse_body(self, start_response: Callable, e: BadRequestBody) -> list[bytes]:
        """The answer to a body that was not (or not all) read: the connection cannot carry
        another request, since where this one's body ends is unknown or unread."""
        log.warning("%s: %s", self.name, e)
        return _simple_response(start_response, e.status,
                                f"<h1>{e.status}</h1><p>{escape(str(e))}</p>\n",
                                (("Connection", "close"),))

    def _drain(self, call: _Call) -> None:
        """Wait (on the hub) until the request's producer is done with it (greenlet mode: it is)."""
        q = call.queue
        while True:
            while not q:
                self.pool.wait(call)  # type: ignore[union-attr]
            item = q.popleft()
            if item is _DONE or item is _ERROR or item is _HANDOFF:
                return

    def _abandon(self, call: _Call) -> None:
        """Stop a producer whose output will not be sent, and wait until it let go."""
        call.cancelled = True
        self._drain(call)
        if call.result is not None:
            self._apply(self._finish_task, call)

    def _stream(self, call: _Call, first: Any, environ: dict) -> Iterable[bytes]:
        q = call.queue
        pool = self.pool
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
                    pool.wait(call)  # type: ignore[union-attr]  # greenlet mode ends on a marker
                item = q.popleft()
            # A long stream (or any stream in greenlet mode): pull it one chunk at a time.
            apply = self._apply
            pull = self._pull
            while True:
                chunk = apply(pull, call)
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
                    self._drain(call)
                elif call.value is _PENDING and pool is not None:
                    # A pull is still out (the greenlet was killed waiting for it): let it
                    # end first, a generator must not run on two threads at once.
                    while call.value is _PENDING:
                        pool.wait(call)
                if call.result is not None:
                    self._apply(self._finish_task, call)

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
    pool = Pool(cfg.maxthreads, cfg.minthreads)
    return WSGIHost(app, pool, display_tracebacks=display, environ_hook=hook, name=name,
                    max_body_size=limit)
