"""The node's connection to Redis: one subscriber connection, one publisher connection.

Outgoing messages are packed (msgpack) when queued, so the queue's bound is in bytes as well
as in messages; a writer greenlet takes everything queued and sends it as few PUBLISHes as
possible (one per channel and ~512 KiB, pipelined: one write). A PUBLISH carries one msgpack
array: the sender's node id, then the packed messages (one ``unpackb`` call on receipt).
One write is in flight at a time: the writer reads Redis's replies to it (how many
subscribers got each PUBLISH: the loss reporting) before it sends what was queued meanwhile,
so under load the batches grow instead of the writes. A small message sent while nothing is
queued or in flight does not wait for the writer to be woken: ``send`` writes it from the
caller's greenlet (the kernel's send buffer is empty then, so the write does not block) and
leaves the reply to an io watcher's callback, run by the hub when the socket is readable: no
greenlet is woken to send it or to read Redis's answer (a cross-node call makes four such
hops; ``bench/cluster/hop.py`` and docs/scaling.md have the figures). Over TLS the writer
reads that reply (an SSL socket's read may need to wait). A direct write goes to the plain
socket under gevent's (one ``send``); what the kernel does not take of it, the writer sends.

Receiving works the same way: the subscriber's socket is read by an io watcher's callback in
the hub, which applies a PUBLISH holding one call message (``HUB_KINDS``) itself; anything
else (state, publications, batches) goes to the reader greenlet in order, and the callback
stops reading until that greenlet has applied it. Over TLS the reader greenlet reads.

Redis delivers the PUBLISHes of one connection to a subscriber in the order they were sent,
over all channels: with one publisher connection per node and one subscriber connection,
every message of node A reaches node B in the order A queued it (the per-publisher order of
events, and "a registration is announced before the call that uses it").

redis-py does blocking socket I/O: it runs over gevent's sockets because ``python -m geonode``
and geonode's gunicorn worker monkey-patch before anything is imported; a process that is not
patched gets no backplane (one log line) rather than a blocked hub.

redis-py opens both connections (URL, TLS, AUTH, SELECT, SUBSCRIBE: all of its rules); the
two hot loops then use the connected sockets with hiredis's parser directly (PUBLISHes written
as RESP, their replies and the subscription's messages parsed by ``hiredis.Reader``): measured
here, redis-py's own command path costs ~160 µs of CPU per PUBLISH and ~300 µs per message
received under gevent (its retry, health-check and push-handler layers), hiredis on the
socket ~15 µs, and a cross-node call makes four of them.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.ssl
import hiredis
import msgpack

from geonode.config.backplane import OPTION, BackplaneConfig

log = logging.getLogger("geonode.cluster")

BATCH_BYTES = 512 * 1024
# Messages up to this size may be written by ``send`` itself when the link is idle; larger
# ones go through the writer, so a caller never blocks on a write that fills the socket.
DIRECT_BYTES = 16 * 1024
# What the subscriber's hub callback applies itself when a PUBLISH holds it alone: a
# call's result, error or invocation and heartbeats. The router's part of these only queues
# (a peer's send never waits; a dynamic authorizer is asked from a greenlet of its own), and
# the link's sends never wait (a direct write the kernel does not take whole is finished by
# the writer). The rest (state, publications: batches that may take long) goes to a greenlet.
HUB_KINDS = frozenset(("Y", "Z", "I", "H"))
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def array_header(n: int) -> bytes:
    """msgpack's header of an array of ``n`` items."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def publish_payload(header: bytes, parts: list[bytes]) -> bytes:
    """A PUBLISH's payload: one msgpack array of the sender's id (``header``, packed) and
    the packed messages, so the receiver unpacks it with one ``unpackb`` call (a truncated or
    over-long payload is an error there, not a spoiled stream)."""
    return array_header(len(parts) + 1) + header + b"".join(parts)


def unpack_publish(data: bytes) -> list:
    """[sender, message, ...] of a PUBLISH's payload."""
    msgs = msgpack.unpackb(data, raw=False, strict_map_key=False)
    if not isinstance(msgs, list) or not msgs:
        raise ValueError("a backplane message that is not a non-empty msgpack array")
    return msgs


def resp_publish(channel: bytes, payload: bytes) -> bytes:
    """A PUBLISH command in RESP."""
    return (b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n"
            % (len(channel), channel, len(payload))) + payload + b"\r\n"


def read_replies(sock: Any, reader: Any, n: int) -> list:
    """``n`` replies from ``sock`` (ConnectionError when Redis closes it or answers an
    error)."""
    out: list = []
    while True:
        while len(out) < n:
            reply = reader.gets()
            if reply is False:
                break
            if isinstance(reply, Exception):
                raise ConnectionError(f"Redis answered: {reply}")
            out.append(reply)
        if len(out) >= n:
            return out
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("Redis closed the connection")
        reader.feed(data)


def _plain(sock: Any) -> bool:
    """A gevent socket that is not TLS: its ``_sock`` may be read and written directly
    (non-blocking); an SSL socket's must not (the bytes are ciphertext)."""
    return not isinstance(sock, gevent.ssl.SSLSocket) and hasattr(sock, "_sock")


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


class RedisLink:
    def __init__(self, cfg: BackplaneConfig, node_id: str,
                 on_batch: Callable[[str, list], None], on_up: Callable[[], None],
                 on_down: Callable[[], None], worker_path: str = "",
                 config_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.config_dir = config_dir if config_dir is not None else Path.cwd()
        self.node_id = node_id
        self.all_channel = f"{cfg.prefix}:all"
        self.inbox = self.channel_of(node_id)
        self._on_batch, self._on_up, self._on_down = on_batch, on_up, on_down
        self._option = f"{worker_path}.{OPTION}" if worker_path else OPTION
        self._where = f"{self._option}.url"
        self.up = False
        # (channel, packed message, called if it reached no one or was lost)
        self._queue: deque[tuple[str, bytes, Callable[[], None] | None]] = deque()
        self._queued_bytes = 0
        # Batches written whose replies are not read yet (one write's worth), swapped whole:
        # whoever swaps a list out reports its losses, so each is reported once.
        self._inflight: list[tuple[str, list[bytes], list]] = []
        self._busy = False               # a write to the socket is under way
        self._rest = b""                 # what a direct write could not send: the writer's
        self._failed: BaseException | None = None   # a direct write failed: for the writer
        self._wake = gevent.event.Event()
        self._stopping = False
        self._greenlets: list[gevent.Greenlet] = []
        self._client: Any = None
        self._pubsub: Any = None
        self._pub_sock: Any = None
        self._pub_reader: Any = None
        self._pub_raw: Any = None        # the plain socket under _pub_sock; None over TLS
        # A direct write's reply is read by this io watcher's callback in the hub (no
        # greenlet is woken for it); None over TLS, whose reads need a greenlet.
        self._reply_watch: Any = None
        # The subscriber's socket (plain) is read by this io watcher's callback in the hub;
        # what is not applied there waits in _backlog for the reader greenlet (_sub_wake).
        self._sub_watch: Any = None
        self._backlog: deque[tuple[str, list]] = deque()
        self._sub_wake = gevent.event.Event()
        self._sub_failed: BaseException | None = None
        self._watching = False           # the watcher is waiting for a direct write's reply
        self.dropped = 0
        self._dropping = False
        self._header = pack(node_id)
        self.sent_batches = 0

    def channel_of(self, node_id: str) -> str:
        return f"{self.cfg.prefix}:n:{node_id}"

    # -- life -----------------------------------------------------------------------------
    def start(self) -> None:
        self._greenlets = [gevent.spawn(self._run), gevent.spawn(self._writer)]

    def stop(self, flush_timeout: float = 2.0) -> None:
        """Send what is queued (at most ``flush_timeout``), then close."""
        if self.up and (self._queue or self._busy or self._inflight):
            self._wake.set()
            # until Redis answered it all: closing a socket with its reply unread is a reset
            with gevent.Timeout(flush_timeout, False):
                while (self._queue or self._busy or self._inflight) and self.up:
                    gevent.sleep(0.001)
        self._stopping = True
        self._wake.set()
        gevent.killall(self._greenlets, timeout=1.0)
        self._close_clients()

    def reset(self, why: str) -> None:
        """The link looks dead although no socket said so (our own heartbeats stopped
        coming back): reconnect."""
        if self.up:
            log.warning("backplane: %s; reconnecting to %s", why, self.cfg.safe_url())
            self._close_clients()

    def _close_clients(self) -> None:
        sub, self._sub_watch = self._sub_watch, None
        if sub is not None:
            sub.stop()   # before its socket closes (as below); the reader is told
            sub.close()
            if self._sub_failed is None:
                self._sub_failed = ConnectionError("the connection was closed")
            self._sub_wake.set()
        watch, self._reply_watch = self._reply_watch, None
        self._watching = False
        if watch is not None:
            watch.stop()   # before its socket closes: no callback on a closed descriptor
            watch.close()
        for c in (self._pubsub, self._client):
            if c is not None:
                try:
                    c.close()
                except Exception:   # noqa: BLE001 - closing a broken connection
                    pass
        self._pubsub = self._client = self._pub_sock = self._pub_raw = None
        self._rest = b""

    # -- sending --------------------------------------------------------------------------
    def has_room(self) -> bool:
        return (len(self._queue) < self.cfg.max_queue
                and self._queued_bytes < self.cfg.max_queue_bytes)

    def send(self, channel: str, msg: tuple, on_lost: Callable[[], None] | None = None) -> bool:
        """Queue ``msg`` for ``channel``; False when it cannot go (link down, queue full, or
        a payload msgpack cannot carry): the caller answers with an error. ``on_lost`` is
        called later if the message is lost after all: the write failed, or it was for one
        node's inbox and Redis had no subscriber there (that node is reconnecting)."""
        if not self.up:
            return False
        try:
            data = pack(msg)
        except (TypeError, ValueError, OverflowError) as e:
            log.warning("backplane: a %s message cannot be sent: %s", msg[0], describe(e))
            return False
        if not self.has_room():
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning("backplane: queue toward Redis full (%d messages, %d bytes): "
                            "dropping cross-node messages until it drains",
                            len(self._queue), self._queued_bytes)
            return False
        if not (self._queue or self._inflight or self._busy) and len(data) <= DIRECT_BYTES:
            sock = self._pub_sock
            if sock is not None:
                return self._send_now(sock, channel, data, on_lost)
        self._queue.append((channel, data, on_lost))
        self._queued_bytes += len(data)
        if len(self._queue) == 1:
            self._wake.set()
        return True

    def _send_now(self, sock: Any, channel: str, data: bytes,
                  on_lost: Callable[[], None] | None) -> bool:
        """Write one message from the caller's greenlet: nothing is queued or in flight."""
        self._busy = True
        out = resp_publish(channel.encode(), publish_payload(self._header, [data]))
        raw = self._pub_raw
        try:
            if raw is not None:
                # The plain socket under gevent's: one send, no SO_SNDBUF lookup and no
                # Python layers of gevent's sendall (the kernel's buffer is empty here).
                try:
                    n = raw.send(out)
                except BlockingIOError:
                    n = 0
                if n < len(out):
                    # The kernel's buffer is full after all: the writer sends the rest and
                    # reads the reply (no caller waits here, the hub included).
                    self._rest = out[n:]
                    self._busy = False
                    self._inflight = [(channel, [data], [on_lost] if on_lost is not None
                                       else [])]
                    self._wake.set()
                    return True
            else:
                sock.sendall(out)
        except Exception as e:   # noqa: BLE001 - any socket failure
            # The writer deals with the link (not the caller's stack: that would run
            # _on_down's cleanup inside whatever the caller is in the middle of).
            if self._pub_sock is sock:
                self._failed = e
            self._busy = False
            self._wake.set()
            return False
        self._busy = False
        if self._pub_sock is not sock:
            self._wake.set()
            return False   # the link was lost meanwhile (a write that had to wait)
        batches = self._inflight = [(channel, [data],
                                     [on_lost] if on_lost is not None else [])]
        watch = self._reply_watch
        if watch is not None:
            self._watching = True
            watch.start(self._on_reply, watch, sock, batches)
        else:
            self._wake.set()   # the writer reads the reply
        return True

    def _on_reply(self, watch: Any, sock: Any, batches: list) -> None:
        """The publishing socket is readable after a direct write (in the hub: nothing here
        may block; what needs a greenlet, the writer or a new one does)."""
        if self._pub_sock is not sock or not self._watching:
            watch.stop()   # a connection that is gone (its watcher is stopped anyway)
            return
        reader = self._pub_reader
        try:
            # the socket under gevent's: a read that would block raises instead of waiting
            data = sock._sock.recv(65536)
            if not data:
                raise ConnectionError("Redis closed the connection")
            reader.feed(data)
            reply = reader.gets()
            if isinstance(reply, Exception):
                raise ConnectionError(f"Redis answered: {reply}")
        except BlockingIOError:
            return   # nothing after all: wait on
        except Exception as e:   # noqa: BLE001 - any socket or protocol failure
            self._reply_failed(watch, e)
            return
        if reply is False:
            return   # the rest of it later
        watch.stop()
        self._watching = False
        if self._inflight is batches:
            self._inflight = []
        self.sent_batches += 1
        if reply == 0 and batches[0][0] != self.all_channel and batches[0][2]:
            gevent.spawn(self._report_lost, batches)
        if self._queue:
            self._wake.set()

    def _reply_failed(self, watch: Any, e: BaseException) -> None:
        watch.stop()
        self._watching = False
        self._failed = e   # the writer handles the link (and reports the write lost)
        self._wake.set()

    def _writer(self) -> None:
        header = self._header
        while not self._stopping:
            self._wake.wait()
            self._wake.clear()
            while self.up and not self._busy and not self._watching:
                sock = self._pub_sock
                if sock is None:
                    break
                if self._failed is not None:
                    e, self._failed = self._failed, None
                    self._lost(e)
                    break
                batches = self._inflight
                if batches:
                    out, self._rest = self._rest, b""   # the rest of a direct write, if any
                else:
                    if not self._queue:
                        break
                    batches = self._inflight = self._take()
                    out = b"".join(
                        resp_publish(channel.encode(), publish_payload(header, parts))
                        for channel, parts, _ in batches)
                if out:
                    try:
                        sock.sendall(out)
                    except Exception as e:   # noqa: BLE001 - any Redis/socket failure
                        self._failed_with(sock, batches, e)
                        break
                try:
                    receivers = read_replies(sock, self._pub_reader, len(batches))
                except Exception as e:   # noqa: BLE001 - any Redis/socket failure
                    self._failed_with(sock, batches, e)
                    break
                if self._inflight is batches:
                    self._inflight = []
                self.sent_batches += len(batches)
                self._report_lost([batch for batch, n in zip(batches, receivers, strict=True)
                                   if n == 0 and batch[0] != self.all_channel])

    def _failed_with(self, sock: Any, batches: list, e: BaseException) -> None:
        # At most once: what was written is lost (the reader sees the same failure and
        # reconnects, then the nodes re-announce their state).
        if self._pub_sock is sock:
            self._lost(e)
        if self._inflight is batches:
            self._inflight = []
            self._report_lost(batches)

    @staticmethod
    def _report_lost(batches: list) -> None:
        for _channel, _parts, callbacks in batches:
            for cb in callbacks:
                try:
                    cb()
                except Exception:   # noqa: BLE001 - one caller's cleanup must not stop others
                    log.exception("backplane: error reporting a lost message")

    def _take(self) -> list[tuple[str, list[bytes], list]]:
        """Everything queued, as (channel, packed messages, lost callbacks) batches, in
        order."""
        out: list[tuple[str, list[bytes], list]] = []
        queue = self._queue
        size = 0
        while queue:
            channel, data, on_lost = queue.popleft()
            self._queued_bytes -= len(data)
            if out and out[-1][0] == channel and size + len(data) <= BATCH_BYTES:
                out[-1][1].append(data)
                size += len(data)
            else:
                out.append((channel, [data], []))
                size = len(data)
            if on_lost is not None:
                out[-1][2].append(on_lost)
        if self._dropping and not queue:
            self._dropping = False
            log.warning("backplane: queue toward Redis drained; %d messages were dropped",
                        self.dropped)
        return out

    # -- connecting and receiving ---------------------------------------------------------
    def _run(self) -> None:
        import redis

        delay = BACKOFF_FIRST
        reported = False
        while not self._stopping:
            try:
                tls = self.cfg.ssl_options(self.config_dir)
                client = redis.Redis.from_url(
                    self.cfg.url, socket_connect_timeout=self.cfg.connect_timeout,
                    socket_timeout=max(self.cfg.timeout, self.cfg.connect_timeout),
                    socket_keepalive=True, single_connection_client=True, **tls)
                client.ping()   # connects, authenticates, selects the db
                assert client.connection is not None  # single_connection_client: made by ping
                pub_sock: Any = client.connection._sock
                # No timeout on the hot socket: under gevent each blocking wait for Redis's
                # reply would arm (and cancel) a timer. A Redis that stops answering is
                # noticed by our heartbeats not coming back (``reset`` closes the socket,
                # which wakes the writer with an error), as on the subscriber's socket.
                pub_sock.settimeout(None)
                # The subscriber's own client: its socket waits for messages as long as
                # there are none (a dead Redis is noticed by our heartbeats not returning).
                listener = redis.Redis.from_url(
                    self.cfg.url, socket_connect_timeout=self.cfg.connect_timeout,
                    socket_timeout=None, socket_keepalive=True, **tls)
                pubsub = listener.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.all_channel, self.inbox)
                assert pubsub.connection is not None  # made by subscribe
                sub_sock = pubsub.connection._sock
                sub_sock.settimeout(None)
                self._client, self._pubsub = client, pubsub
                self._pub_sock, self._pub_reader = pub_sock, hiredis.Reader()
                if _plain(pub_sock):
                    self._pub_raw = pub_sock._sock
                    self._reply_watch = gevent.get_hub().loop.io(pub_sock.fileno(), 1)
            except Exception as e:   # noqa: BLE001 - anything: a wrong URL, auth, not Redis
                self._close_clients()
                if not reported:
                    log.error("backplane: %s %s: cannot connect: %s%s; serving local clients "
                              "only, retrying with backoff", self._where,
                              self.cfg.safe_url(), describe(e), self._hint(e))
                    reported = True
                gevent.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = BACKOFF_FIRST
            log.info("backplane: connected to %s as node %s", self.cfg.safe_url(),
                     self.node_id)
            reported = False
            self._queue.clear()
            self._queued_bytes = 0
            self.up = True
            try:
                self._on_up()
                self._wake.set()
                self._read(sub_sock)
            except Exception as e:   # noqa: BLE001 - the connection broke
                if not self._stopping:
                    self._lost(e)
                    reported = True   # one line per outage: the retries stay quiet
            finally:
                self._close_clients()
        self.up = False

    def _hint(self, exc: BaseException) -> str:
        """What to look at when the cause alone does not say it."""
        import ssl

        chain: BaseException | None = exc
        for _ in range(8):   # redis-py wraps the ssl error once or twice
            if chain is None or isinstance(chain, ssl.SSLCertVerificationError):
                break
            chain = chain.__cause__ or chain.__context__
        if (isinstance(chain, ssl.SSLCertVerificationError)
                or "CERTIFICATE_VERIFY_FAILED" in str(exc)):
            # redis-py trusts the system's CAs and those of tls.ca_certificates
            return (f" (Redis's certificate is not signed by a CA of "
                    f"{self._option}.tls.ca_certificates or of the system)")
        return ""

    def _read(self, sock: Any) -> None:
        if self._pub_raw is not None and _plain(sock):
            self._read_in_hub(sock._sock)
            return
        # TLS: gevent's socket does the reading (an SSL socket's read may need to wait)
        inbox = self.inbox.encode()
        reader = hiredis.Reader()
        while not self._stopping:
            data = sock.recv(262144)
            if not data:
                raise ConnectionError("Redis closed the connection")
            reader.feed(data)
            while True:
                item = reader.gets()
                if item is False:
                    break
                if isinstance(item, Exception):
                    raise ConnectionError(f"Redis answered: {item}")
                # ["subscribe", channel, n] confirmations, then ["message", channel, data]
                if isinstance(item, list) and len(item) == 3 and item[0] == b"message":
                    got = self._unpack(item[1], item[2], inbox)
                    if got is not None:
                        self._dispatch(got)

    def _read_in_hub(self, raw: Any) -> None:
        """The subscriber's socket (plain) is read by an io watcher's callback in the hub,
        ``_on_readable``, which also applies a lone call message there (``HUB_KINDS``: what
        the router does with them never waits, and the link's own sends from the hub do not
        either); everything else it leaves to this greenlet, in order, and stops reading
        until this greenlet has applied it (so it may wait, and what is read stays bounded)."""
        backlog = self._backlog = deque()
        wake = self._sub_wake
        wake.clear()
        self._sub_failed = None
        watch = self._sub_watch = gevent.get_hub().loop.io(raw.fileno(), 1)
        args = (watch, raw, hiredis.Reader(), self.inbox.encode())
        watch.start(self._on_readable, *args)
        while not self._stopping:
            wake.wait()
            wake.clear()
            while backlog:
                self._dispatch(backlog[0])   # still queued: the hub applies nothing meanwhile
                backlog.popleft()
            if self._sub_failed is not None:
                raise self._sub_failed
            if self._sub_watch is watch and not watch.active:
                watch.start(self._on_readable, *args)

    def _on_readable(self, watch: Any, raw: Any, reader: Any, inbox: bytes) -> None:
        """The subscriber's socket is readable (in the hub: nothing here may wait)."""
        if self._sub_watch is not watch:
            watch.stop()
            return
        try:
            data = raw.recv(262144)
            if not data:
                raise ConnectionError("Redis closed the connection")
        except BlockingIOError:
            return
        except Exception as e:   # noqa: BLE001 - any socket failure: the reader handles it
            self._sub_fail(watch, e)
            return
        backlog = self._backlog
        items: list = []
        try:
            reader.feed(data)
            while (item := reader.gets()) is not False:
                if isinstance(item, Exception):
                    raise ConnectionError(f"Redis answered: {item}")
                items.append(item)
        except Exception as e:   # noqa: BLE001 - not Redis's protocol: the reader reconnects
            self._sub_fail(watch, e)   # (what came before it is applied: as it was read)
        for item in items:
            if isinstance(item, list) and len(item) == 3 and item[0] == b"message":
                got = self._unpack(item[1], item[2], inbox)
                if got is None:
                    continue
                msgs = got[1]
                if not backlog and self._pub_raw is not None and (
                        not msgs or (len(msgs) == 1 and type(msgs[0]) is list and msgs[0]
                                     and type(msgs[0][0]) is str and msgs[0][0] in HUB_KINDS)):
                    self._dispatch(got)
                else:
                    backlog.append(got)   # (a malformed one too: the greenlet logs it)
        if backlog:
            watch.stop()
            self._sub_wake.set()

    def _sub_fail(self, watch: Any, e: BaseException) -> None:
        watch.stop()
        if self._sub_failed is None:
            self._sub_failed = e
        self._sub_wake.set()

    def _unpack(self, channel: bytes, data: bytes, inbox: bytes) -> tuple[str, list] | None:
        """(sender, messages) of one PUBLISH of some node; None for a bad one (logged)."""
        try:
            msgs = unpack_publish(data)
            sender = msgs[0]
            if sender == self.node_id and channel != inbox:
                # our own broadcast: only heartbeats matter (the link works)
                return sender, [msg for msg in msgs[1:] if msg and msg[0] == "H"]
            del msgs[0]
            return sender, msgs
        except Exception:   # noqa: BLE001 - a bad message must not end the link
            log.exception("backplane: could not handle a message from Redis")
            return None

    def _dispatch(self, got: tuple[str, list]) -> None:
        try:
            self._on_batch(*got)
        except Exception:   # noqa: BLE001 - a bad message must not end the link
            log.exception("backplane: could not handle a message from Redis")

    def _lost(self, exc: BaseException) -> None:
        if self.up:
            self.up = False
            self._queue.clear()
            self._queued_bytes = 0
            self._failed = None
            written, self._inflight = self._inflight, []
            self._report_lost(written)
            log.error("backplane: lost %s %s: %s; serving local clients only, retrying "
                      "with backoff", self._where, self.cfg.safe_url(), describe(exc))
            self._close_clients()
            self._on_down()
