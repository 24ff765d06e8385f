"""MessageQueuePeer: the transport-independent half of the router's Peer over a connection.

WebSocket (``geonode.transport.websocket``) and RawSocket (``geonode.transport.rawsocket``)
peers build on it. Writing never happens in the caller of ``send`` (usually the router, busy
delivering to many peers): messages are serialized right away (autobahn caches the bytes on the
message, per shared serializer) and queued. A peer without a writer greenlet is written by one
shared hub callback with non-blocking sends (``_flush``: an event to thousands of idle
subscribers costs a send each, no greenlet each); what the socket cannot take at once, and
every queue of a peer that has one, is written by the peer's short-lived writer greenlet,
everything queued with one write. A peer that does not read fills its queue; past the bound it
is closed, so a slow consumer costs bounded memory and never stalls the router.

Fairness (``docs/transports.md`` "Bursts and slow readers"): before, a reader whose socket
had data never let the hub run anything else, so a publisher's pipelined burst was processed
whole before any subscriber's writer ran, and the subscribers overflowed. Now a reader whose
message pushed some receiver's queue over a quarter of its bound stops reading until that
receiver's writer has taken the queue, so the sender is paced by TCP like any slow stream;
but at most ``STALL_TIMEOUT`` per receiver and episode: a receiver that does not drain in
that time is not waited for again until it does, and if it never reads it overflows and is
dropped as before. And a reader yields to the hub after ``QUANTUM`` of continuous work, so one
busy connection delays the others (HTTP too) by milliseconds, not by its whole backlog.
Readers call ``_receive_payload`` per transport message and ``_pace`` every ``CHECK_EVERY``
messages or when ``congestion`` is set.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from typing import Any

import gevent
from autobahn.wamp.message import Abort, Call, Error, Invocation, Result
from gevent import get_hub
from gevent.event import Event
from greenlet import GreenletExit, greenlet

from geonode.config.model import DEFAULT_MAX_QUEUE, DEFAULT_MAX_QUEUE_BYTES
from geonode.handoff import slice_end
from geonode.metrics import SOURCES
from geonode.router.errors import INVALID_PAYLOAD, PAYLOAD_SIZE_EXCEEDED, PROTOCOL_VIOLATION
from geonode.transport.serializers import ProtocolError, WampSerializer

# WebSocket's close codes say how a connection ends; RawSocket, which has none, ignores them.
from geonode.websocket.frames import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_PROTOCOL_ERROR,
)

log = logging.getLogger("geonode.transport")

# DEFAULT_MAX_QUEUE (messages) and DEFAULT_MAX_QUEUE_BYTES (bytes, characters for JSON)
# waiting for the socket: the config model's defaults of max_queue and max_queue_bytes.
CLOSE_TIMEOUT = 5.0                   # seconds a closing writer may block before the socket goes

# (DEFAULT_MAX_MESSAGE_SIZE, the largest WAMP message a client may send: the config model's)

# A reader lets the hub run everybody else (other readers, HTTP, the writers) once it has
# spent QUANTUM seconds of CPU on messages in a row (gevent's own switch interval).
# Shorter slices cost throughput: every slice ends with each busy writer flushing, and with
# 64-message slices pub/sub to 10 subscribers spent 10-18% more CPU per event. The clock is
# read every CHECK_EVERY messages (a message of n KiB counts n/4 + 1).
QUANTUM = 0.005
CHECK_EVERY = 16
# A receiver's queue past 1/2**HIGH_SHIFT of its bound (messages or bytes) makes the reader
# that filled it wait for the receiver's writer (backpressure), at most STALL_TIMEOUT seconds
# per receiver and episode. A quarter: far below the bound, so a writer that is merely behind
# never reaches it, and the bytes in flight per receiver stay under half of it.
HIGH_SHIFT = 2
STALL_TIMEOUT = 1.0

# writer greenlet states; _FLUSHING: no writer greenlet, the peer waits in _flushing
_RUNNING, _SCHEDULED, _PARKED, _RETIRED, _FLUSHING = 0, 1, 2, 3, 4
RETIRE_AFTER = 2.0       # seconds a writer may stay parked before it ends
# what a transport's _write_nowait did
NOT_WRITTEN, WRITTEN, PART_WRITTEN = 0, 1, 2

# Peers with something queued and no writer greenlet (idle sessions: an event to 19,000 of
# them, a WELCOME to each of 1,000 arriving sessions) are written by one hub callback,
# _flush, with non-blocking sends: no greenlet is made, woken and retired per peer. Only a
# peer whose socket does not take everything gets its writer greenlet for the rest. _flush
# runs in the pass's slice (geonode.handoff.slice_end); the rest waits for the next pass of
# the loop (after its poll: other connections, HTTP, go first).
_flushing: deque = deque()
_flush_due = False

_parked: dict = {}        # peer -> time it parked (insertion ordered: oldest first)
_sweeper: Any = None
# The reader whose message the router is handling right now (None outside session.receive):
# a receiver that gets congested on its behalf tells it to wait (see _congested).
_delivering: MessageQueuePeer | None = None
# Set when a receiver got congested by the message being delivered: the reader checks it
# (``queue.congestion``) after each message (cheaper than looking at its own _pressure).
congestion = False
# Transport messages from this size on are "large" (MessageQueuePeer.inbound_large).
EXPANSION = 8
_large_inbound = DEFAULT_MAX_QUEUE_BYTES // EXPANSION


# Connections dropped for an outgoing queue over its bound (geonode_wamp_queue_overflows_total).
_overflows = 0


def overflow_count() -> int:
    return _overflows


SOURCES.queue_overflows = overflow_count


def _go_round() -> None:
    """Yield until the hub's loop has gone round once: callbacks (the writers), then a poll of
    every socket and what it woke. Not sleep(0): that only queues us behind the callbacks, and
    the hub polls sockets only after 50 callbacks past its switch interval, so other
    connections (HTTP) waited ~150 ms during a burst. A timer due at once costs ~5 µs."""
    hub = get_hub()
    timer = hub.loop.timer(0)
    try:
        hub.wait(timer)
    finally:
        timer.close()


def _park(peer: MessageQueuePeer) -> None:
    global _sweeper
    _parked[peer] = time.monotonic()
    if _sweeper is None:
        loop = get_hub().loop
        _sweeper = loop.timer(RETIRE_AFTER, RETIRE_AFTER, ref=False)  # never keeps the hub alive
        _sweeper.start(_sweep)


def _unpark(peer: MessageQueuePeer) -> None:
    _parked.pop(peer, None)


def _flush() -> None:
    """Write the queues of the peers in _flushing (a hub callback; one slice)."""
    global _flush_due
    queue = _flushing
    # The pass's slice, shared with the greenlets handoff.admit let run in it; at least 32
    # peers per pass.
    deadline = slice_end()
    n = 0
    while queue:
        peer = queue.popleft()
        try:
            peer._flush_now()
        except Exception:   # a bug of ours: that connection goes, the others are written
            log.exception("%s: write failed", peer._who())
            peer._dead = True
            peer._wstate = _RUNNING
            gevent.spawn(peer._abort)   # closing may block: not in the hub
        n += 1
        if not n & 31 and time.perf_counter() > deadline:
            break
    if queue:
        timer = get_hub().loop.timer(0)
        timer.start(_flush_later, timer)
    else:
        _flush_due = False


def _flush_later(timer: Any) -> None:
    timer.close()
    _flush()


def _sweep() -> None:
    limit = time.monotonic() - RETIRE_AFTER
    old = []
    for peer, since in _parked.items():
        if since > limit:
            break
        old.append(peer)
    for peer in old:
        del _parked[peer]
        peer._retire()


class MessageQueuePeer:
    """The transport-independent half: bounded queue, writer greenlet, detach-once.

    Subclasses implement ``_write(items)`` (blocking write of serialized messages),
    ``_shutdown(code, reason)`` (close the transport politely) and ``_abort()`` (drop it now).
    """

    # The router's messages are only serialized here, never told apart by their exact type:
    # the router may send a subclass that differs in how it marshals (router.session.Welcome).
    serializes_only = True

    # True while the transport message being handed to the router is big enough (at least
    # 1/EXPANSION of the smallest queue bound of any peer) for one of its events to be too
    # big for some subscriber's queue: only then does the broker check, per subscriber
    # (geonode.router.broker.Broker._oversized). Re-encoded for another serializer an event
    # can grow (JSON escapes of binary strings, base64 of bytes, floats in text): 8 is ample.
    inbound_large = False
    # Rarely set, so kept out of every instance's dict until needed:
    _pressure: set | None = None   # receivers this reader congested: wait for them
    _room: Any = None     # an Event, set when this peer's writer takes its queue
    _stuck = False                 # a reader waited STALL_TIMEOUT in vain: do not wait again
    _tail = False                  # _write_nowait left part of a write: the writer sends it
    _sid: int | None = None        # the ended session's id (for log lines after _detach)
    #: the transport implements _write_nowait: queues of a peer with no writer greenlet are
    #: written by _flush
    direct_writes = False

    def __init__(self, serializer: WampSerializer, details: dict,
                 max_queue: int = DEFAULT_MAX_QUEUE,
                 max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES) -> None:
        self.serializer = serializer
        self.transport_details = details
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self._high = max_queue >> HIGH_SHIFT
        self._high_bytes = max_queue_bytes >> HIGH_SHIFT
        # the largest single message this peer sends (RawSocket lowers it to the client's
        # announced maximum)
        self.max_message_out = max_queue_bytes
        global _large_inbound
        _large_inbound = min(_large_inbound, max_queue_bytes // EXPANSION)
        self.session: Any = None
        self._queue: list = []
        self._queued_bytes = 0
        self._writer: Any = None  # its writer greenlet, while it has one
        self._wstate = _RUNNING
        self._closing: tuple[int, str] | None = None
        # what close() (the router's request) sends: 1002 once the transport saw a violation
        self._close_with: tuple[int, str] = (CLOSE_NORMAL, "")
        self._dead = False        # nothing more is written (overflow, broken socket)
        self._detached = False

    # -- Peer contract ---------------------------------------------------------------
    def send(self, msg: Any) -> None:
        """Queue ``msg`` for the socket; never blocks. Over the bound the peer closes."""
        if self._dead or self._closing is not None:
            return
        data: bytes | str | None
        try:
            data = self.serializer.serialize(msg)
        except Exception as e:
            data = self._unserializable(msg, e)
            if data is None:
                return
        size = len(data)
        if size > self.max_message_out:
            # One message over the whole bound would cost this session its connection for
            # nothing: it is replaced or dropped instead (the broker refuses such events to
            # their publisher before they get here, see Broker._oversized).
            data = self._undeliverable(msg, PAYLOAD_SIZE_EXCEEDED,
                                       f"message of {size} bytes is over this connection's "
                                       f"limit of {self.max_message_out}")
            if data is None:
                return
            size = len(data)
        queue = self._queue
        queue.append(data)
        queued = self._queued_bytes = self._queued_bytes + size
        if len(queue) > self._high or queued > self._high_bytes:
            if len(queue) > self.max_queue or queued > self.max_queue_bytes:
                self._overflow()
                return
            self._congested()
        self._kick()

    def oversized(self, msg: Any) -> int:
        """The encoded size of ``msg`` if it is bigger than this peer's whole outgoing queue
        bound (``max_queue_bytes``, the node's setting), else 0. The broker asks before it
        publishes a large event (geonode.router.broker.Broker._oversized). The client's own
        announced maximum (RawSocket) is not asked about: a client must not be able to veto
        other clients' publications; send() drops what it cannot take."""
        try:
            size = len(self.serializer.serialize(msg))   # cached on msg for send()
        except Exception:
            return 0   # send() deals with it (wamp.error.invalid_payload)
        return size if size > self.max_queue_bytes else 0

    def close(self) -> None:
        """Flush what is queued (e.g. a GOODBYE/ABORT), then close the transport."""
        self._close(*self._close_with)

    def close_going_away(self) -> None:
        """Node shutdown (optional Peer method): flush the GOODBYE, then close with 1001, the
        WebSocket code for "server going down"."""
        self._close(CLOSE_GOING_AWAY, "server shutting down")

    # -- the writer ------------------------------------------------------------------
    # One raw greenlet per busy connection. Spawning a gevent.Greenlet per burst costs
    # ~20 µs; waking a parked raw greenlet costs ~1.5 µs. A parked writer keeps ~6 KB of
    # saved stack, so writers idle for a while are retired by a shared timer and idle
    # sessions cost no greenlet at all.
    def _kick(self) -> None:
        state = self._wstate
        if self._writer is None:
            if state == _FLUSHING:
                return     # _flush will see the queue (or the closing)
            if self.direct_writes:
                global _flush_due
                self._wstate = _FLUSHING
                _flushing.append(self)
                if not _flush_due:
                    _flush_due = True
                    get_hub().loop.run_callback(_flush)
                return
            hub = get_hub()
            self._writer = greenlet(self._writer_loop, parent=hub)
            self._wstate = _SCHEDULED
            hub.loop.run_callback(self._resume)
        elif state == _PARKED or state == _RETIRED:
            # _RETIRED: the sweeper chose to end this idle writer, but its end is a hub
            # callback, and readers woken in the same loop iteration as the sweeper's timer
            # run before the hub's callbacks (their messages reach us). Ending then would
            # strand what was just queued (no writer left, none started): keep the writer;
            # _resume_retired sees the new state and leaves it be. (2000 sessions subscribing
            # at once lost hundreds of SUBSCRIBED so on a busy machine:
            # bench/probes/many_subscribes.py.)
            self._wstate = _SCHEDULED
            _unpark(self)
            get_hub().loop.run_callback(self._resume)
        # _RUNNING / _SCHEDULED: the writer will see the queue before it parks

    def _flush_now(self) -> None:
        """In _flush: write the queue without blocking, or hand it to a writer greenlet."""
        if self._wstate != _FLUSHING or self._writer is not None:
            return
        if self._dead:
            self._wstate = _RUNNING
            return
        done = WRITTEN
        items = self._queue
        if items:
            done = self._write_nowait(items)
            if done != NOT_WRITTEN:
                self._queue, self._queued_bytes = [], 0
                if self._room is not None:
                    self._drained()
        if done == WRITTEN and self._closing is None:
            self._wstate = _RUNNING    # no writer: the next message comes back here
            return
        # The rest (PART_WRITTEN: held by the transport, sent first), the closing: the writer.
        self._tail = done == PART_WRITTEN
        hub = get_hub()
        self._writer = greenlet(self._writer_loop, parent=hub)
        self._wstate = _SCHEDULED
        hub.loop.run_callback(self._resume)

    def _resume(self) -> None:
        g = self._writer
        if g is not None and self._wstate == _SCHEDULED and not g.dead:
            self._wstate = _RUNNING
            g.switch()

    def _writer_loop(self) -> None:
        hub = get_hub()
        try:
            while True:
                while (self._queue or self._tail) and not self._dead:
                    items, self._queue, self._queued_bytes = self._queue, [], 0
                    self._tail = False
                    if self._room is not None:
                        self._drained()
                    self._write(items)
                if self._dead:
                    return
                if self._closing is not None:
                    self._dead = True
                    with gevent.Timeout(CLOSE_TIMEOUT, False):
                        self._shutdown(*self._closing)
                        return
                    self._abort()
                    return
                self._wstate = _PARKED
                _park(self)
                hub.switch()   # back via _resume (more to send, closing, or retirement)
                if self._wstate == _RETIRED:
                    return
        except GreenletExit:
            pass
        except BaseException as e:  # noqa: BLE001 - must not reach the hub
            # the socket broke: the reader sees it too and detaches
            if not self._dead:
                log.info("%s: write failed: %s", self._who(), e)
            self._dead = True
            self._queue = []
            self._abort()
        finally:
            _unpark(self)
            self._writer = None
            self._wstate = _RUNNING

    def _retire(self) -> None:
        """Called by the sweeper for a writer parked too long: let it end (in a callback; a
        ``_kick`` before that callback runs keeps the writer instead)."""
        if self._wstate == _PARKED and self._writer is not None:
            self._wstate = _RETIRED
            g = self._writer
            get_hub().loop.run_callback(self._resume_retired, g)

    def _resume_retired(self, g: greenlet) -> None:
        if self._writer is g and self._wstate == _RETIRED and not g.dead:
            g.switch()

    def _wait_writer(self, timeout: float) -> None:
        """Give a busy writer time to flush (the session's last words), then let it go."""
        deadline = time.monotonic() + timeout
        while ((self._writer is not None and self._wstate != _PARKED)
               or self._wstate == _FLUSHING) and time.monotonic() < deadline:
            gevent.sleep(0.01)
        self._retire()

    def _unserializable(self, msg: Any, e: Exception) -> bytes | str | None:
        """What to send instead of ``msg``, which this client's serializer cannot encode (a
        CBOR bignum for a msgpack client, say): see ``_undeliverable``."""
        return self._undeliverable(
            msg, INVALID_PAYLOAD, f"payload cannot be encoded with {self.serializer.name}: {e}")

    def _undeliverable(self, msg: Any, error: str, text: str) -> bytes | str | None:
        """What to send instead of ``msg``, which this connection cannot carry (not encodable
        by its serializer, or bigger than its bound): the sender's fault, but no call may hang
        on it. A final RESULT/ERROR for this caller becomes ERROR ``error``; an INVOCATION for
        this callee is answered in its name with that ERROR, so its caller gets it; anything
        else (an EVENT, a progressive result) is dropped. One log line."""
        text = text[:300]
        log.warning("%s: %s not sent: %s", self._who(), type(msg).__name__, text)
        if isinstance(msg, Invocation):
            if self.session is not None:
                # After the router's current call stack: it is still delivering this one.
                get_hub().loop.run_callback(self.session.receive, Error(
                    Invocation.MESSAGE_TYPE, msg.request, error, [text]))
            return None
        final = isinstance(msg, Result) and not msg.progress
        if final or (isinstance(msg, Error) and msg.request_type == Call.MESSAGE_TYPE):
            return self.serializer.serialize(
                Error(Call.MESSAGE_TYPE, msg.request, error, [text]))
        return None

    # -- backpressure ----------------------------------------------------------------
    def _congested(self) -> None:
        """This peer's queue is past its high mark: the reader delivering to it waits."""
        if self._room is None:
            self._room = Event()
        elif self._room.is_set():
            self._room.clear()
        src = _delivering
        if src is not None and not self._stuck:
            global congestion
            congestion = True
            if src._pressure is None:
                src._pressure = {self}
            else:
                src._pressure.add(self)

    def _drained(self) -> None:
        """The writer took the queue (or the peer is gone): readers waiting for it go on."""
        self._stuck = False
        self._room.set()

    def _over_high(self) -> bool:
        return len(self._queue) > self._high or self._queued_bytes > self._high_bytes

    def _relieve(self) -> None:
        """Stop reading until the receivers this reader congested have taken their queues:
        the sender then waits on TCP, as for any slow stream. Bounded: STALL_TIMEOUT in all
        per call; a receiver that does not drain in time is marked stuck and not waited for
        again until its writer makes progress (if it never does, it overflows and goes)."""
        peers, self._pressure = self._pressure, None
        deadline = time.monotonic() + STALL_TIMEOUT
        for peer in peers or ():
            while not peer._dead and not peer._stuck and not self._dead and peer._over_high():
                left = deadline - time.monotonic()
                if left <= 0:
                    peer._stuck = True
                    log.info("%s: not draining its queue (%d messages): senders no longer "
                             "wait for it", peer._who(), len(peer._queue))
                    break
                # re-checked at least every 0.25 s: a peer may die with no writer to wake us
                peer._room.wait(min(left, 0.25))

    def _pace(self, mark: tuple[int, float, float] | None) -> tuple[int, float, float] | None:
        """Called by the reader every CHECK_EVERY messages, and after a message that congested
        receivers: waits for those, or lets the hub run the others (the writers first: they
        were scheduled before us) once this slice has taken QUANTUM of CPU. ``mark`` is the
        current slice (the hub loop's iteration, when it ends by the clock, the thread's CPU
        time when it began; None: none yet). A reader that had to wait for data let the loop
        run, which starts a new slice (libuv's loop has no iteration count, -1: there slices
        just end by time). The clock is cheap, CPU time is not (~1 µs), so CPU time is read
        once the clock says the slice is over: while the machine's other processes hold the
        CPU, the clock runs without our work, and yielding then only costs throughput (every
        yield makes each busy writer flush). Returns the slice."""
        global congestion
        congestion = False
        if self._pressure is not None:
            self._relieve()
            return None
        iteration = get_hub().loop.iteration
        now = time.monotonic()
        if mark is None or mark[0] != iteration:
            return iteration, now + QUANTUM, time.thread_time()
        if now < mark[1]:
            return mark
        left = QUANTUM - (time.thread_time() - mark[2])
        if left > 0.0005:
            return iteration, now + left, mark[2]
        _go_round()
        return None

    # -- internals -------------------------------------------------------------------
    def _who(self) -> str:
        sid = getattr(self.session, "id", None) or self._sid
        return f"session {sid} ({self.transport_details.get('peer')})"

    def _close(self, code: int, reason: str) -> None:
        if self._closing is not None or self._dead:
            return
        self._closing = (code, reason)
        self._kick()

    def _overflow(self) -> None:
        global _overflows
        _overflows += 1
        log.warning("%s: outgoing queue over its bound (%d messages, %d bytes): closing",
                    self._who(), len(self._queue), self._queued_bytes)
        self._dead = True
        self._queue, self._queued_bytes = [], 0
        if self._room is not None:
            self._drained()
        # The writer is stuck on a full socket: stop it and drop the connection from a fresh
        # greenlet, so the router's send() returns at once.
        gevent.spawn(self._stop_and_abort)

    def _stop_and_abort(self) -> None:
        g = self._writer
        if g is not None and not g.dead and self._wstate == _RUNNING:
            # Blocked in a write: abandon it. Thrown from the hub, so that when the writer
            # ends (returning to its parent, the hub) nobody is left suspended.
            get_hub().loop.run_callback(self._throw_exit, g)
            gevent.sleep(0)
        elif self._wstate == _PARKED:
            self._retire()
        self._abort(CLOSE_POLICY_VIOLATION, "outgoing queue overflow")

    def _throw_exit(self, g: greenlet) -> None:
        if self._writer is g and self._wstate == _RUNNING and not g.dead:
            g.throw(GreenletExit)

    def _detach(self) -> None:
        if self._detached:
            return
        self._detached = True
        session = self.session
        if session is not None:
            try:
                session.detach()
            except Exception:
                log.exception("%s: detach failed", self._who())
            # session.peer <-> peer.session is a reference cycle: broken here, an ended
            # session is freed by reference counting at once, not by the next full
            # collection (which walks every live session). Its id stays for log lines.
            self._sid = session.id
            self.session = None

    def _receive_payload(self, payload: bytes | str) -> bool:
        """Hand one transport message to the session; False when the session must end."""
        try:
            msgs = self.serializer.unserialize(payload)
        except ProtocolError as e:
            self._violation(str(e)[:300])
            return False
        global _delivering
        session = self.session
        if session is None:
            return False  # ended (detached): what still arrives has nobody to go to
        self.inbound_large = len(payload) >= _large_inbound
        _delivering = self    # receive() never raises here nor switches greenlets
        for msg in msgs:
            try:
                session.receive(msg)
            except Exception:
                log.exception("%s: router failed on %s", self._who(), type(msg).__name__)
                self._close(CLOSE_INTERNAL_ERROR, "internal error")
                _delivering = None
                return False
        _delivering = None
        return True

    def _violation(self, text: str) -> None:
        """End only this session: ABORT (protocol_violation), one log line, close 1002."""
        # The router's protocol_violation() closes us itself: it must close with 1002 too.
        self._close_with = (CLOSE_PROTOCOL_ERROR, "protocol violation")
        violation = getattr(self.session, "protocol_violation", None)
        if violation is not None:
            violation(text)   # the router logs, sends ABORT, forgets the session, closes us
        else:
            log.warning("%s: protocol violation: %s", self._who(), text)
            self.send(Abort(PROTOCOL_VIOLATION, message=text))
        self._close(CLOSE_PROTOCOL_ERROR, "protocol violation")

    def _write(self, items: list) -> None:
        """Write ``items`` (blocking); ``[]``: only what _write_nowait left over."""
        raise NotImplementedError

    def _write_nowait(self, items: list) -> int:
        """Write ``items`` without blocking (direct_writes): WRITTEN, NOT_WRITTEN (nothing
        taken: the writer greenlet writes them), or PART_WRITTEN (the transport holds the
        rest and sends it before anything else; the writer's ``_write([])`` flushes it)."""
        return NOT_WRITTEN

    def _shutdown(self, code: int, reason: str) -> None:
        raise NotImplementedError

    def _abort(self, code: int = CLOSE_INTERNAL_ERROR, reason: str = "") -> None:
        raise NotImplementedError


class StreamPeer(MessageQueuePeer):
    """A MessageQueuePeer on a byte-stream socket of its own (``self.sock``): RawSocket, MQTT.

    Neither protocol has a close frame: closing is a half-close so the client reads what was
    sent, then EOF; a client that never closes its side is dropped after ``CLOSE_TIMEOUT``.
    """

    sock: Any
    _sock_closed = False

    def _shutdown(self, code: int, reason: str) -> None:
        # TLS cannot half-close: closing is the end of the stream there.
        if hasattr(self.sock, "unwrap"):
            self._abort()
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        # A client that never closes its side must not keep the reader (and session) forever.
        gevent.spawn_later(CLOSE_TIMEOUT, self._abort)

    def _abort(self, code: int = 0, reason: str = "") -> None:
        if self._sock_closed:
            return
        self._sock_closed = True
        try:
            self.sock.close()
        except OSError:
            pass
