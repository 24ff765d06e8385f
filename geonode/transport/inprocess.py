"""In-process transport: WAMP messages between the router and code in this process.

WSGI apps, router components and the HTTP bridge talk to the router without any socket or
serializer: ``autobahn.wamp.message`` objects are handed over as they are. Two pieces:

``Pump``
    a queue drained by one greenlet on the hub. It accepts messages from greenlets on the hub
    (``put``) and from native threads (``put_threadsafe``: the only thing a worker thread ever
    does to the hub is ``loop.run_callback_threadsafe``). Draining in a dedicated greenlet
    (never in the hub greenlet itself, never inside the caller's stack) means router code is
    never re-entered and may switch greenlets freely.

``InProcessPeer``
    the Peer the router sends to (``send`` never blocks: it queues into a Pump, and a peer
    whose queue grows over ``max_queue`` closes itself, like a slow socket would).
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
from gevent import monkey

log = logging.getLogger("geonode.inprocess")

# The real OS thread id even when threading is monkey-patched (patched get_ident returns
# greenlet ids, which cannot tell the hub thread from a worker thread).
real_get_ident: Callable[[], int] = monkey.get_original("_thread", "get_ident")
real_allocate_lock: Callable[[], Any] = monkey.get_original("_thread", "allocate_lock")
real_sleep: Callable[[float], None] = monkey.get_original("time", "sleep")

_STOP = object()
# messages a pump handles before it lets other greenlets run
FAIR_SHARE = 64
_names = itertools.count(1)


class Pump:
    """Messages in, one greenlet out: ``handler(msg)`` is called in order on the hub."""

    __slots__ = ("_handler", "_loop", "_queue", "_event", "_greenlet", "_scheduled", "_stopped",
                 "name")

    def __init__(self, handler: Callable[[Any], None], loop: Any, name: str = "pump") -> None:
        self._handler = handler
        self._loop = loop
        self._queue: deque = deque()
        self._event: gevent.event.Event | None = None
        self._greenlet: gevent.Greenlet | None = None
        self._scheduled = False
        self._stopped = False
        self.name = name

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, msg: Any) -> None:
        """Queue from the hub thread (any greenlet, or a loop callback)."""
        self._queue.append(msg)
        self._wake()

    def put_front(self, msgs: list) -> None:
        """Queue ahead of everything else (hub thread): used to replay a backlog in order."""
        self._queue.extendleft(reversed(msgs))
        self._wake()

    def put_threadsafe(self, msg: Any) -> None:
        """Queue from any native thread. Costs one loop wake-up per burst, not per message."""
        self._queue.append(msg)
        # The callback clears the flag *before* waking the drainer, so a message appended
        # after the flag was seen set is still drained by that wake-up.
        if not self._scheduled:
            self._scheduled = True
            self._loop.run_callback_threadsafe(self._wake_threadsafe)

    def stop(self) -> None:
        """Drain what is queued, then end the greenlet."""
        self.put(_STOP)

    def _wake_threadsafe(self) -> None:
        self._scheduled = False
        self._wake()

    def _wake(self) -> None:
        if self._stopped:
            return
        if self._greenlet is None:
            self._event = gevent.event.Event()
            self._greenlet = gevent.spawn(self._run)
        self._event.set()

    def _run(self) -> None:
        queue, event, handler = self._queue, self._event, self._handler
        handled = 0
        while True:
            event.wait()
            event.clear()
            while queue:
                handled += 1
                if handled % FAIR_SHARE == 0:
                    # a flood from one producer must not starve every other greenlet
                    gevent.sleep(0)
                msg = queue.popleft()
                if msg is _STOP:
                    self._stopped = True
                    queue.clear()
                    return
                try:
                    handler(msg)
                except Exception:
                    log.exception("%s: handler failed on %r", self.name, msg)


class InProcessPeer:
    """The router's side of an in-process session (implements ``geonode.transport.peer.Peer``).

    ``on_message(msg)`` gets every message the router sends, in order, in the pump greenlet;
    ``on_close()`` is called once (in the same greenlet, after the messages queued before it)
    when the router drops the peer or the queue overflows.
    """

    def __init__(self, on_message: Callable[[Any], None], on_close: Callable[[], None],
                 loop: Any, name: str | None = None, max_queue: int = 100_000) -> None:
        name = name or f"inprocess-{next(_names)}"
        self.transport_details: dict = {
            "type": "inprocess",
            "peer": f"inprocess:{name}",
            "http_headers_received": {},
            "http_headers_sent": {},
            "is_secure": True,
            "channel_id": {},
        }
        self._on_message = on_message
        self._on_close = on_close
        self._max_queue = max_queue
        self._pump = Pump(self._deliver, loop, name=name)
        self.closed = False

    def send(self, msg: Any) -> None:
        if self.closed:
            return
        if len(self._pump) >= self._max_queue:
            log.warning("%s: %d messages not yet consumed: closing the session",
                        self.transport_details["peer"], len(self._pump))
            self.close()
            return
        self._pump.put(msg)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._pump.put(_CLOSED)
        self._pump.stop()

    def discard(self) -> None:
        """The client side is done with this peer: stop delivering, without ``on_close``."""
        self.closed = True
        self._pump.stop()

    def _deliver(self, msg: Any) -> None:
        # Messages queued before close() are still delivered (a GOODBYE, say).
        if msg is _CLOSED:
            self._on_close()
        else:
            self._on_message(msg)


_CLOSED = object()
