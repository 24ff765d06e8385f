"""A burst of connections waking at once (a thousand handshakes or HELLOs) is spread over
passes of the hub's loop (``geonode.handoff.admit``), so other connections (HTTP) are served
between them (issue 16 item 3: HTTP p99 while 19,000 sessions arrive). On this process's hub.
"""

from __future__ import annotations

import time

import gevent
import pytest
from gevent.event import Event
from support import scaled

from geonode import handoff

pytestmark = pytest.mark.inprocess


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


# -- admit: a burst that wakes at once is spread over passes of the loop ---------------------

def test_a_burst_is_spread_over_passes_and_other_work_runs_between():
    """60 greenlets woken by one event, 1 ms of work each: without admit() all run in one
    pass (60 ms during which nothing else runs); with it, each pass runs about a slice of
    them, in order, and a timer due at once runs before the burst is over."""
    loop = gevent.get_hub().loop
    go = Event()
    passes: list[int] = []
    order: list[int] = []
    probe: list[int] = []

    def worker(i: int) -> None:
        go.wait()
        handoff.admit()
        passes.append(loop.iteration)
        order.append(i)
        _busy(0.001)

    workers = [gevent.spawn(worker, i) for i in range(60)]
    gevent.sleep(0)            # all waiting
    go.set()
    gevent.sleep(0)            # the burst has started
    t = loop.timer(0)
    t.start(lambda: probe.append(len(order)))
    gevent.joinall(workers, timeout=scaled(30), raise_error=True)
    t.close()
    assert len(order) == 60
    assert order == sorted(order), "first come, first served"
    assert len(set(passes)) >= 60 * 0.001 / handoff.SLICE / 2, passes
    assert probe and probe[0] < 60, "nothing else ran until the whole burst was done"


def test_a_waiter_that_is_killed_is_not_resumed():
    go = Event()
    done: list[int] = []

    def worker(i: int) -> None:
        go.wait()
        handoff.admit()
        done.append(i)
        _busy(0.003)

    workers = [gevent.spawn(worker, i) for i in range(10)]
    gevent.sleep(0)
    go.set()
    gevent.sleep(0)
    waiting = [w for w in workers if not w.dead and w.args[0] not in done]
    assert waiting, "some must wait for the next pass"
    killed = waiting[-1].args[0]
    waiting[-1].kill()
    gevent.joinall(workers, timeout=scaled(30))
    assert killed not in done
    assert len(done) == 9
    assert not handoff._waiting
