"""In-process transport: WAMP messages between the router and code in this process.

WSGI apps, router components and the HTTP bridge talk to the router without any socket or
serializer: ``autobahn.wamp.message`` objects are handed over as they are. ``InProcessPeer`` is
the Peer the router sends to (``send`` never blocks: it queues into a ``geonode.handoff.Pump``
drained by a greenlet of the peer, and a peer whose queue grows over ``max_queue`` closes
itself, like a slow socket would). The client side (``geonode.wamp``) hands its messages to the
hub through a Pump of its own.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

from geonode.handoff import Pump

log = logging.getLogger("geonode.inprocess")

_names = itertools.count(1)


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
