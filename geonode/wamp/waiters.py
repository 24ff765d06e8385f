"""Waiting for an answer from the hub: a greenlet on the hub waits cooperatively (a gevent
Event), a native thread on a real lock. The session picks the right one for its caller."""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Any

import gevent.event

from geonode.handoff import real_allocate_lock
from geonode.wamp.registry import in_hub_thread

log = logging.getLogger("geonode.wamp")


class Waiter:
    """One answer, awaited either by a greenlet on the hub or by a native thread."""

    __slots__ = ("_event", "_lock", "value", "error")

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        if in_hub_thread():
            self._event: Any = gevent.event.Event()
            self._lock: Any = None
        else:
            self._event = None
            self._lock = real_allocate_lock()
            self._lock.acquire()

    def resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        """Hub thread only."""
        self.value, self.error = value, error
        if self._event is not None:
            self._event.set()
        else:
            self._lock.release()

    def wait(self, timeout: float | None) -> bool:
        if self._event is not None:
            return self._event.wait(timeout)
        return self._lock.acquire(timeout=-1 if timeout is None else timeout)


class ProgressWaiter(Waiter):
    """The answer to a call with ``on_progress``: progressive results are handed to the waiting
    thread/greenlet, which runs ``on_progress`` itself, in order, before the final result."""

    __slots__ = ("on_progress", "progress", "done")

    def __init__(self, on_progress: Callable) -> None:
        super().__init__()
        self.on_progress = on_progress
        self.progress: collections.deque = collections.deque()
        self.done = False

    def resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        self.done = True
        self._signal(value, error)

    def progressed(self, args: list, kwargs: dict) -> None:
        """Hub thread only."""
        self.progress.append((args, kwargs))
        self._signal(self.value, self.error)

    def _signal(self, value: Any, error: BaseException | None) -> None:
        # The lock is a binary semaphore here: released = "something new"; a second release
        # before the waiter took the first is the same news.
        try:
            super().resolve(value, error)
        except RuntimeError:
            pass

    def wait(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            woke = super().wait(left)
            if self._event is not None:
                # before anything that may switch (on_progress can): a later set() is kept
                self._event.clear()
            done = self.done   # read before draining: the hub queues every progress first
            while self.progress:
                args, kwargs = self.progress.popleft()
                try:
                    self.on_progress(*args, **kwargs)
                except Exception:
                    log.exception("on_progress %r failed", self.on_progress)
            if done:
                return True
            if not woke:
                return False
