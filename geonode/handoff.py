"""Handing work to the gevent hub: the one mechanism geonode uses, from greenlets and threads.

``Pump(handler, loop)`` is a queue drained by one greenlet on the hub, which calls
``handler(item)`` for each item in order. Greenlets on the hub queue with ``put``; native threads
(a WSGI app's pool, the in-process WAMP session's callers) with ``put_threadsafe``: the only
thing a thread ever does to the hub is ``loop.run_callback_threadsafe``, once per burst, not
per item. Draining in a dedicated greenlet (never in the hub greenlet itself, never inside the
caller's stack) means the handler may switch greenlets freely and is never re-entered. A thread
that produces faster than the hub takes waits (that thread only, never the hub) with
``wait_for_room``, so memory stays bounded.

``admit()`` bounds the other direction: how much work that woke at once (a thousand
handshakes, HELLOs, SUBSCRIBEs) one pass of the hub's loop runs before it polls again.

``Wakeup(loop, callback)`` is that mechanism alone, for a hub-side consumer that is not a
handler greenlet: threads call ``send()`` after queueing their item, and ``callback()`` runs
on the hub once per burst (the WSGI host's pool resumes the waiting request greenlets from it
directly, saving the drain greenlet's switch per request). ``Pump`` is built on it.

Users: ``geonode.transport.inprocess`` (the in-process Peer: router -> session),
``geonode.wamp`` (session callers -> the router, handlers and endpoints),
``geonode.websocket.connection`` (sends, pings and closes from other threads) and, through
``Wakeup`` alone, ``geonode.web.wsgi_host.Pool`` (calls finished by the WSGI pool's threads).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
from gevent import get_hub, monkey
from greenlet import getcurrent

log = logging.getLogger("geonode.inprocess")

# The real OS thread id even when threading is monkey-patched (patched get_ident returns
# greenlet ids, which cannot tell the hub thread from a worker thread).
real_get_ident: Callable[[], int] = monkey.get_original("_thread", "get_ident")
real_allocate_lock: Callable[[], Any] = monkey.get_original("_thread", "allocate_lock")
real_sleep: Callable[[float], None] = monkey.get_original("time", "sleep")

_STOP = object()


class Wakeup:
    """``callback()`` on the hub once per burst of ``send()`` calls from any threads.

    A sender queues its item first and sends after. The callback clears the flag *before*
    calling ``callback``, so an item queued after the flag was seen set is still seen by that
    call (or by the next one, which its own send schedules)."""

    __slots__ = ("_loop", "_callback", "_scheduled")

    def __init__(self, loop: Any, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._scheduled = False

    def send(self) -> None:
        """From any thread (the hub's included)."""
        if not self._scheduled:
            self._scheduled = True
            self._loop.run_callback_threadsafe(self._run)

    def reset(self) -> None:
        """After a fork in the child (the scheduled callback belonged to the parent's loop), or
        when a watchdog found the callback lost."""
        self._scheduled = False

    def _run(self) -> None:
        self._scheduled = False
        self._callback()
# items a pump handles before it lets other greenlets run (unless made with fair_share=0)
FAIR_SHARE = 64
# how long a thread waiting for room sleeps between looks at the queue
ROOM_POLL = 0.001


class Pump:
    """Items in, one greenlet out: ``handler(item)`` is called in order on the hub.

    The greenlet starts with the first item and lives until ``stop()``; a handler's exception
    is logged and the next item handled. It yields to other greenlets every ``fair_share``
    items; 0: only when the handler blocks."""

    __slots__ = ("_handler", "_loop", "_queue", "_event", "_greenlet", "_wakeup", "_stopped",
                 "_fair_share", "stopping", "name")

    def __init__(self, handler: Callable[[Any], None], loop: Any, name: str = "pump",
                 fair_share: int = FAIR_SHARE) -> None:
        self._handler = handler
        self._fair_share = fair_share
        self._loop = loop
        self._queue: deque = deque()
        self._event: Any = None  # a gevent Event, made with the greenlet (on the hub)
        self._greenlet: gevent.Greenlet | None = None
        self._wakeup = Wakeup(loop, self._wake)
        self._stopped = False
        #: stop() was called: what is queued before it is still handled, nothing after it
        self.stopping = False
        self.name = name

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, item: Any) -> None:
        """Queue from the hub thread (any greenlet, or a loop callback)."""
        if self.stopping:
            return
        self._queue.append(item)
        self._wake()

    def put_front(self, items: list) -> None:
        """Queue ahead of everything else (hub thread): used to replay a backlog in order."""
        if self.stopping:
            return
        self._queue.extendleft(reversed(items))
        self._wake()

    def put_threadsafe(self, item: Any) -> None:
        """Queue from any native thread. Costs one loop wake-up per burst, not per item."""
        if self.stopping:
            return
        self._queue.append(item)
        self._wakeup.send()

    def wait_for_room(self, limit: int, timeout: float | None = None) -> bool:
        """From a native thread (never the hub's): wait while ``limit`` or more items are
        queued. False when ``timeout`` seconds passed first; True at once once stopping."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self._queue) >= limit and not self.stopping:
            if deadline is not None and time.monotonic() > deadline:
                return False
            real_sleep(ROOM_POLL)
        return True

    def stop(self) -> None:
        """Handle what is queued, then end the greenlet (hub thread)."""
        if self.stopping:
            return
        self._queue.append(_STOP)
        self._wake()
        self.stopping = True

    def _wake(self) -> None:
        if self._stopped:
            return
        if self._greenlet is None:
            self._event = gevent.event.Event()
            self._greenlet = gevent.spawn(self._run)
        self._event.set()

    def _run(self) -> None:
        queue, event, handler, fair_share = self._queue, self._event, self._handler, \
            self._fair_share
        handled = 0
        while True:
            event.wait()
            event.clear()
            while queue:
                handled += 1
                if fair_share and handled % fair_share == 0:
                    # a flood from one producer must not starve every other greenlet
                    gevent.sleep(0)
                item = queue.popleft()
                if item is _STOP:
                    self._stopped = True
                    queue.clear()
                    return
                try:
                    handler(item)
                except Exception:
                    log.exception("%s: handler failed on %r", self.name, item)


# ---- bounded passes of the hub's loop -----------------------------------------------------
# libev runs every watcher that became ready before it polls again. When 1,000 connections'
# handshakes (or their HELLOs) arrive at once, one pass ran all of them, ~100 ms, and a request
# on any other connection waited that long (HTTP p99 166 ms while 19,000 sessions arrived).
# Work that comes in such bursts calls ``admit()`` when it wakes: once the pass has run
# ``SLICE`` seconds since its first admitted greenlet, later ones wait, in order, for the next
# pass. There the io watchers (an HTTP request that arrived meanwhile) run before the timer
# that resumes them; each pass resumes waiters for one slice, at least one.
SLICE = 0.003

_waiting: deque = deque()         # greenlets waiting for the next pass, oldest first
_slice_pass = -2                  # the loop pass (libev iteration) the slice belongs to
_slice_end = 0.0                  # perf_counter() at which the pass's slice is used up
_release: Any = None              # the timer that resumes waiters, while one is due


def admit() -> None:
    """Called by a greenlet that just woke for work that may come in bursts: returns at once
    while this pass of the loop has time left, else at the next pass (first come, first
    served). Costs ~0.3 µs when it returns at once."""
    global _slice_pass, _slice_end
    hub = get_hub()
    current = getcurrent()
    if current is hub:
        return
    it = hub.loop.iteration
    if not _waiting:
        if it != _slice_pass:
            if it == -1:
                return   # libuv counts no passes: no slices there
            _slice_pass = it
            _slice_end = time.perf_counter() + SLICE
            return
        if time.perf_counter() < _slice_end:
            return
    _waiting.append(current)
    _schedule_release(hub.loop)
    try:
        hub.switch()
    except BaseException:
        # killed or timed out while waiting: it must not be resumed later by _resume_waiting
        try:
            _waiting.remove(current)
        except ValueError:
            pass
        raise


def slice_end() -> float:
    """The ``time.perf_counter()`` at which this pass's slice is used up (a slice starts with
    the first call in a pass): for hub-side work that bounds itself (the transports' shared
    writer), so that it and the admitted greenlets share one slice per pass."""
    global _slice_pass, _slice_end
    it = get_hub().loop.iteration
    if it != _slice_pass:
        _slice_pass = it
        _slice_end = time.perf_counter() + SLICE
    return _slice_end


def _schedule_release(loop: Any) -> None:
    global _release
    if _release is None:
        _release = loop.timer(0)
        _release.start(_resume_waiting)


def _resume_waiting() -> None:
    global _release, _slice_pass, _slice_end
    loop = get_hub().loop
    _release.close()
    _release = None
    it = loop.iteration
    if it != _slice_pass:
        _slice_pass = it
        _slice_end = time.perf_counter() + SLICE
    first = True
    try:
        while _waiting and (first or time.perf_counter() < _slice_end):
            first = False
            g = _waiting.popleft()
            if not g.dead:
                try:
                    g.switch()      # runs until it waits again (back here through the hub)
                except Exception:   # a raw greenlet's error ends it, not the others' turn
                    log.exception("a greenlet failed after its turn came")
    finally:
        if _waiting:
            _schedule_release(loop)
