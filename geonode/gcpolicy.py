"""The node's garbage-collector policy: long-lived objects are frozen, out of the cyclic GC's way.

A node holds many long-lived objects (modules, apps, routers, and ~35 per idle WAMP session) and
makes short-lived ones per message and request. CPython's full collection walks every tracked
object and runs each time the old generation grew by a quarter: while 19,000 sessions arrive
that is ~12 stalls of the whole hub, each longer than the last (~80 ns per object: ~50 ms at
19,000 sessions on a quiet core). So:

- at start-up everything built so far is frozen (``gc.freeze``: moved to the permanent
  generation, which no collection walks);
- after every full collection its survivors are frozen too, and a full collection runs after
  every second middle one (``OLD_THRESHOLD``): it walks only what the middle collections
  promoted since the last one (at most ~20k objects, ~2 ms on a quiet core), however many
  sessions the node holds; each long-lived object is walked three times and then never again;
- frozen objects are still freed by reference counting: the session teardown leaves no
  reference cycle (``tests/test_session_teardown.py``); cyclic garbage among frozen objects
  (an app's, or a cycle we missed) waits for the backstop: every ``BACKSTOP_INTERVAL``, when
  the frozen set grew by ``BACKSTOP_GROWTH`` since the last backstop,
  everything is unfrozen and collected once (a pause of ~80 ns per live object on a quiet core:
  ~55 ms at 19,000 sessions), then frozen again. At most once an hour: a node that fills up
  in minutes must not pay a walk of all its sessions while they arrive.

Not CPython's default, and not for every node: an object that lives through a full collection
and only then becomes cyclic garbage (an app's request in flight, whose objects form a cycle, as
Django's and exception tracebacks do routinely) is frozen and waits for the backstop. So the
node installs it (``geonode.node.install_gc``) as ``controller.options.gc.policy`` says:
"freeze", or "auto" (the default) when the node's process runs none of the user's Python code
(no WSGI app, component or function authenticator: ``geonode.config.model.hosted_code``), whose
own code leaves no cyclic garbage on the WAMP paths (``tests/test_gcpolicy.py``);
docs/sessions.md has the figures and the trade-off.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

log = logging.getLogger("geonode.gc")

YOUNG_THRESHOLD = 1000     # allocations (net) between young collections (CPython: 700)
MIDDLE_THRESHOLD = 10      # young collections between middle ones (CPython's)
# middle collections between full ones (CPython: 10): a full collection walks what the
# middle ones promoted since the last full one, so this bounds its pause (at most
# YOUNG_THRESHOLD * MIDDLE_THRESHOLD * (1 + OLD_THRESHOLD) objects, ~20k: ~2 ms on a quiet core)
OLD_THRESHOLD = 1
# The backstop walks every live object (~2-4 s at 19,000 sessions on this busy machine,
# ~55 ms quiet): at most once an hour, and only when the frozen set doubled since the last.
BACKSTOP_INTERVAL = 3600.0  # seconds between checks for the backstop's full collection
BACKSTOP_GROWTH = 1.0       # ... which runs when the frozen set grew by this fraction


class GcPolicy:
    """Freeze-after-full-collection plus the periodic backstop (see the module's doc)."""

    def __init__(self, interval: float = BACKSTOP_INTERVAL, growth: float = BACKSTOP_GROWTH) -> None:
        self.interval = interval
        self.growth = growth
        self.full_collections = 0     # full collections seen (the backstop's included)
        self.backstops = 0
        self.last_backstop_ms = 0.0
        self._base = 0                # frozen objects after the last backstop (or start-up)
        # objects frozen since (an upper bound: some were freed since): counting the frozen
        # set exactly walks all of it (~15 ms at 19,000 sessions on a busy core), so that is
        # done only once this bound says the backstop may be due
        self._added = 0
        self._timer: Any = None
        self._in_backstop = False

    def install(self) -> None:
        """Freeze what exists now, raise the young threshold, freeze after each full collection
        and start the backstop's timer on this thread's hub. Idempotent."""
        if self._on_gc in gc.callbacks:
            return
        gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
        gc.freeze()
        # An (empty) full collection now: CPython's next one waits until the old generation
        # grew by a quarter of what the last one left there, which was start-up's objects
        # (frozen now): without this, the first full collection while serving would come only
        # after ~100k new long-lived objects (a few thousand sessions) and walk all of them.
        gc.collect()
        self._base = gc.get_freeze_count()
        self._added = 0
        gc.callbacks.append(self._on_gc)
        if self.interval > 0:
            import gevent
            self._timer = gevent.get_hub().loop.timer(self.interval, self.interval)
            self._timer.start(self.backstop_due)
            self._timer.ref = False   # never what keeps the loop running

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._timer is not None:
            self._timer.close()
            self._timer = None

    def _on_gc(self, phase: str, info: dict) -> None:
        # Runs in whichever thread allocated (a WSGI pool thread too): gc.freeze needs only
        # the GIL, which the collecting thread holds.
        if phase == "stop" and info.get("generation") == 2:
            self.full_collections += 1
            if not self._in_backstop:
                # (the collection just walked these: counting them costs less)
                self._added += len(gc.get_objects(generation=2))
                gc.freeze()

    def backstop_due(self) -> bool:
        """Run the backstop's full collection if the frozen set grew enough; True if it ran."""
        bound = self.growth * max(self._base, 1)
        if self._added <= bound:
            return False
        self._added = gc.get_freeze_count() - self._base
        if self._added <= bound:
            return False
        self.backstop()
        return True

    def backstop(self) -> None:
        """Unfreeze, collect everything once (cyclic garbage among frozen objects), refreeze."""
        t0 = time.perf_counter()
        self._in_backstop = True
        try:
            gc.unfreeze()
            freed = gc.collect()
        finally:
            self._in_backstop = False
            gc.freeze()
        self._base = gc.get_freeze_count()
        self._added = 0
        self.backstops += 1
        self.last_backstop_ms = (time.perf_counter() - t0) * 1000
        log.info("garbage collector backstop: full collection of %d objects in %.1f ms, "
                 "%d unreachable", self._base, self.last_backstop_ms, freed)


policy = GcPolicy()


def install(interval: float = BACKSTOP_INTERVAL, growth: float = BACKSTOP_GROWTH) -> GcPolicy:
    """The node's policy, installed (idempotent)."""
    policy.interval, policy.growth = interval, growth
    policy.install()
    return policy
