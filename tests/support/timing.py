"""One clock for every test: wall-clock bounds scaled by one factor, and waiting for conditions.

``SCALE`` comes from ``GEONODE_TEST_TIMESCALE`` (default 2.0: the suite passes with two
CPU-burning processes beside it on a 2-core machine). Every deadline and every upper bound on a
duration in the tests is ``scaled(seconds)``; the helpers below (and ``wait_port``, ``Node``'s
waits) take nominal seconds and scale them themselves. A bound that must stay below something
the node does (a timeout in its config, a view that sleeps) scales that too, so the test can
still fail. Lower bounds (a throttle held an answer at least 1 s) are never scaled.

Nothing waits by sleeping a fixed time: ``wait_for`` polls a condition until it holds, and says
what it waited for when it gives up.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["SCALE", "WaitTimeout", "async_wait_for", "scaled", "wait_for"]

T = TypeVar("T")


def _scale_from_env() -> float:
    raw = os.environ.get("GEONODE_TEST_TIMESCALE", "").strip()
    if not raw:
        return 2.0
    try:
        value = float(raw)
    except ValueError:
        raise RuntimeError(f"GEONODE_TEST_TIMESCALE={raw!r} is not a number") from None
    if value <= 0:
        raise RuntimeError(f"GEONODE_TEST_TIMESCALE={raw!r} must be > 0")
    return value


#: the factor every wall-clock bound and deadline of the tests is multiplied by
SCALE: float = _scale_from_env()


def scaled(seconds: float) -> float:
    """``seconds`` on this machine: a bound or deadline measured on a quiet one, times SCALE."""
    return seconds * SCALE


class WaitTimeout(AssertionError):
    """A condition did not hold in time (an AssertionError: pytest shows it as a failure)."""


def _describe(predicate: Callable, what: str | None) -> str:
    return what or getattr(predicate, "__qualname__", repr(predicate))


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str | None = None, *,
             interval: float = 0.01, sleep: Callable[[float], object] = time.sleep,
             proc: subprocess.Popen | None = None) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Gives up after ``scaled(timeout)`` seconds with WaitTimeout("... waiting for <what>"), or
    at once when ``proc`` (a process the condition depends on) has exited. ``sleep`` is the
    pause between polls: ``gevent.sleep`` when the caller runs on a gevent hub.
    """
    limit = scaled(timeout)
    deadline = time.monotonic() + limit
    while True:
        result = predicate()
        if result:
            return result
        if proc is not None and proc.poll() is not None:
            raise WaitTimeout(f"process {proc.pid} exited with {proc.returncode} while waiting "
                              f"for {_describe(predicate, what)}")
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"gave up after {limit:.1f} s waiting for "
                              f"{_describe(predicate, what)}")
        sleep(interval)


async def async_wait_for(predicate: Callable[[], T | Awaitable[T]], timeout: float = 10.0,
                         what: str | None = None, *, interval: float = 0.01) -> T:
    """``wait_for`` for asyncio code: polls without blocking the loop (``predicate`` may be a
    coroutine function)."""
    limit = scaled(timeout)
    deadline = time.monotonic() + limit
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"gave up after {limit:.1f} s waiting for "
                              f"{_describe(predicate, what)}")
        await asyncio.sleep(interval)
