"""The load patterns of bench/wamp, each against one running router (host, port, path)."""

from __future__ import annotations

import os
import selectors
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import common
from wire import Closed, Conn, frame

REALM = "realm1"
TOPIC = "com.bench.topic"
PREFIX = "com.bench."
PROC = "com.bench.echo"
PAYLOAD = "hello from the bench, 40 bytes of text."


@dataclass
class Result:
    rate: float          # messages per second (events delivered / calls completed)
    client_cpu: float    # fraction of one core used by this (client) process
    server_cpu: float    # fraction of one core used by the server process tree


class Meter:
    """Wall time, this process's CPU and the server's CPU between start() and stop()."""

    def __init__(self, server_pids) -> None:
        self.server_pids = server_pids

    def start(self) -> None:
        self.t0, self.c0, self.s0 = time.perf_counter(), time.process_time(), \
            common.tree_cpu_s(self.server_pids())

    def stop(self) -> tuple[float, float, float]:
        dt = time.perf_counter() - self.t0
        server = common.tree_cpu_s(self.server_pids()) - self.s0
        return dt, (time.process_time() - self.c0) / dt, server / dt


def connect(addr: tuple[str, int, str], serializer: str) -> Conn:
    c = Conn(*addr, serializer)
    c.join(REALM)
    return c


def pubsub(addr, serializer: str, duration: float, server_pids, subscribers: int = 10,
           window: int = 400, chunk: int = 50, warmup: float = 0.5,
           match: str = "exact") -> Result:
    """Events delivered per second: one publisher, ``subscribers`` subscribers, no acks.

    The publisher keeps at most ``window`` publications ahead of the slowest subscriber, so
    the router is saturated but its queues stay far below any bound. ``match="prefix"``:
    the subscribers subscribe to the prefix ``com.bench.`` instead (each event then needs the
    subscribers' roles' permission for its concrete topic).
    """
    subs = [connect(addr, serializer) for _ in range(subscribers)]
    for s in subs:
        s.subscribe(TOPIC if match == "exact" else PREFIX, match)
    pub = connect(addr, serializer)
    enc, op = pub.enc, pub.opcode
    sel = selectors.DefaultSelector()
    counts = [0] * subscribers
    for i, s in enumerate(subs):
        s.sock.setblocking(False)
        sel.register(s.sock, selectors.EVENT_READ, i)
    req = 1000
    sent = 0
    meter = Meter(server_pids)
    t_warm = time.perf_counter() + warmup
    t_end = t_warm + duration
    measuring = False
    base = 0
    try:
        while True:
            now = time.perf_counter()
            if not measuring and now >= t_warm:
                measuring, base = True, sum(counts)
                meter.start()
            if now >= t_end:
                break
            can_send = sent - min(counts) < window
            if can_send:
                batch = b"".join(frame(enc([16, req + i, {}, TOPIC, [PAYLOAD]]), op)
                                 for i in range(chunk))
                req += chunk
                pub.send_raw(batch)
                sent += chunk
            for key, _ in sel.select(0 if can_send else 0.05):
                s = subs[key.data]
                try:
                    s._fill()
                except BlockingIOError:
                    continue
                counts[key.data] += s.count_frames()
        delivered = sum(counts) - base
        dt, ccpu, scpu = meter.stop()
        # Self-check: no subscriber can have more events than were published.
        if max(counts) > sent:
            raise RuntimeError(f"miscounted: {max(counts)} events for {sent} publications")
    finally:
        sel.close()
        for c in [*subs, pub]:
            c.close()
    return Result(delivered / dt, ccpu, scpu)


def rpc(addr, serializer: str, duration: float, server_pids, inflight: int = 50,
        warmup: float = 0.5) -> Result:
    """Calls completed per second with ``inflight`` outstanding calls (callee in this process)."""
    callee = connect(addr, serializer)
    callee.register(PROC)
    caller = connect(addr, serializer)
    enc, dec, op = caller.enc, caller.dec, caller.opcode
    sel = selectors.DefaultSelector()
    for c in (callee, caller):
        c.sock.setblocking(False)
    sel.register(callee.sock, selectors.EVENT_READ, callee)
    sel.register(caller.sock, selectors.EVENT_READ, caller)
    req = 1

    def calls(n: int) -> bytes:
        nonlocal req
        out = b"".join(frame(enc([48, req + i, {}, PROC, [req + i]]), op) for i in range(n))
        req += n
        return out

    caller.sock.setblocking(True)
    caller.send_raw(calls(inflight))
    caller.sock.setblocking(False)
    done = 0
    meter = Meter(server_pids)
    t_warm = time.perf_counter() + warmup
    t_end = t_warm + duration
    measuring = False
    base = 0
    try:
        while True:
            now = time.perf_counter()
            if not measuring and now >= t_warm:
                measuring, base = True, done
                meter.start()
            if now >= t_end:
                break
            for key, _ in sel.select(0.05):
                c = key.data
                try:
                    c._fill()
                except BlockingIOError:
                    continue
                payloads = c.frames()
                if not payloads:
                    continue
                if c is callee:
                    out = []
                    for p in payloads:
                        m = dec(p)
                        if m[0] == 68:
                            out.append(frame(enc([70, m[1], {}, m[4] if len(m) > 4 else []]),
                                             op))
                    _send_all(callee, b"".join(out))
                else:
                    n = sum(1 for p in payloads if dec(p)[0] == 50)
                    done += n
                    if n:
                        _send_all(caller, calls(n))
        completed = done - base
        dt, ccpu, scpu = meter.stop()
    finally:
        sel.close()
        callee.close()
        caller.close()
    return Result(completed / dt, ccpu, scpu)


def _send_all(c: Conn, data: bytes) -> None:
    c.sock.setblocking(True)
    try:
        c.sock.sendall(data)
    finally:
        c.sock.setblocking(False)


#: a call during which the router or this client waited this long for a CPU was held up by
#: the machine's other jobs (an undisturbed round trip takes 0.1-0.4 ms in all)
DELAYED_NS = 500_000


class Latency(NamedTuple):
    p50: float      # ms
    p99: float      # ms
    delayed: float  # share of the calls held up by other processes (see DELAYED_NS)
    p99_own: float  # ms, p99 of the calls that were not held up


class RunQueueWait:
    """Nanoseconds the routers' processes and this client have spent runnable but not running.

    From /proc/PID/schedstat (2nd field, main thread: where each router and this client do
    their work), read with pread on descriptors kept open: ~1 µs, outside the timed call.
    """

    def __init__(self, pids: list[int]) -> None:
        self.fds = []
        for path in [f"/proc/{p}/schedstat" for p in pids] + ["/proc/thread-self/schedstat"]:
            try:
                self.fds.append(os.open(path, os.O_RDONLY))
            except OSError:  # a process that already exited waits for nothing
                pass

    def __call__(self) -> int:
        total = 0
        for fd in self.fds:
            try:
                total += int(os.pread(fd, 128, 0).split()[1])
            except (OSError, IndexError, ValueError):
                pass
        return total

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


def latency(routers: list[tuple[tuple[str, int, str], Callable[[], list[int]]]],
            serializer: str, count: int = 2000, block: int = 200, warmup: int = 100,
            rewarm: int = 5) -> list[Latency]:
    """Round trip of one call at a time (caller → router → callee → router → caller), ms.

    ``routers`` are (address, server_pids) pairs; they take turns, ``block`` calls each, so a
    spell of load from the machine's other jobs falls on all of them alike instead of on
    whichever was measured then: a p99 is the 20th slowest of 2,000 calls, and one preemption
    costs a few ms. Each call also notes whether it was held up that way (``delayed``).
    A turn starts with ``rewarm`` calls not counted: after idling through the others' turn,
    a router's first call takes 3-5 times as long, and at one turn per 1% of the calls those
    first calls would be the p99.
    """
    conns: list[Conn] = []   # callee, caller of router 0, then of router 1, ...
    waits: list[RunQueueWait] = []
    samples: list[list[float]] = [[] for _ in routers]
    own: list[list[float]] = [[] for _ in routers]
    delayed = [0] * len(routers)
    req = 0

    def call(r: int) -> tuple[float, int]:
        """One round trip on router ``r``: (seconds, ns its processes waited for a CPU)."""
        nonlocal req
        req += 1
        callee, caller = conns[2 * r], conns[2 * r + 1]
        w0 = waits[r]()
        t0 = time.perf_counter()
        caller.send_raw(frame(enc([48, req, {}, PROC, [req]]), op))
        inv = callee.recv()
        callee.send_raw(frame(enc([70, inv[1], {}, [req]]), op))
        res = caller.recv()
        dt = time.perf_counter() - t0
        if res[0] != 50:
            raise RuntimeError(f"call failed: {res}")
        return dt, waits[r]() - w0

    try:
        for addr, server_pids in routers:
            conns.append(connect(addr, serializer))
            conns[-1].register(PROC)
            conns.append(connect(addr, serializer))
            waits.append(RunQueueWait(server_pids()))
        enc, op = conns[0].enc, conns[0].opcode
        for r in range(len(routers)):
            for _ in range(warmup):  # first calls warm caches
                call(r)
        for start in range(0, count, block):
            for r in range(len(routers)):
                for _ in range(rewarm):
                    call(r)
                for _ in range(min(block, count - start)):
                    dt, waited = call(r)
                    samples[r].append(dt * 1000)
                    if waited >= DELAYED_NS:
                        delayed[r] += 1
                    else:
                        own[r].append(dt * 1000)
    finally:
        for w in waits:
            w.close()
        for c in conns:
            c.close()
    out = []
    for s, d, o in zip(samples, delayed, own, strict=True):
        s.sort()
        o.sort()
        out.append(Latency(statistics.median(s), s[int(len(s) * 0.99) - 1], d / len(s),
                           o[int(len(o) * 0.99) - 1] if o else float("nan")))
    return out


def idle_sessions(addr, serializer: str, n: int, batch: int = 250) -> list[Conn]:
    """Open ``n`` joined sessions, each subscribed to TOPIC, ``batch`` handshakes at a time."""
    conns: list[Conn] = []
    # Each session sends the same two frames: built once (the generator's CPU per join
    # shares the cores with the node being measured).
    probe = Conn(*addr, serializer, connect=False)
    hello = frame(probe.enc([1, REALM, {"roles": {"publisher": {}, "subscriber": {},
                                                  "caller": {}, "callee": {}}}]), probe.opcode)
    subscribe = frame(probe.enc([32, 1, {}, TOPIC]), probe.opcode)
    while len(conns) < n:
        group = []
        for _ in range(min(batch, n - len(conns))):
            c = Conn(*addr, serializer, connect=False)
            c.open(lean=True)
            group.append(c)
        for c in group:
            c.handshake_finish()
            c.sock.sendall(hello)
        for c in group:
            if c.recv()[0] != 2:
                raise RuntimeError("not welcomed")
            c.sock.sendall(subscribe)
        for c in group:
            if c.recv()[0] != 33:
                raise RuntimeError("not subscribed")
        conns.extend(group)
    return conns


def fanout(conns: list[Conn], publisher: Conn, timeout: float = 60.0) -> float:
    """Seconds from one PUBLISH until every subscriber in ``conns`` has the EVENT."""
    sel = selectors.DefaultSelector()
    for c in conns:
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)
    remaining = len(conns)
    req = publisher.next_request() + 100
    t0 = time.perf_counter()
    publisher.send([16, req, {}, TOPIC, [PAYLOAD]])
    deadline = t0 + timeout
    try:
        while remaining and time.perf_counter() < deadline:
            for key, _ in sel.select(1.0):
                c = key.data
                try:
                    c._fill()
                except (BlockingIOError, Closed):
                    continue
                if c.count_frames():
                    remaining -= 1
                    sel.unregister(c.sock)
        elapsed = time.perf_counter() - t0
    finally:
        sel.close()
        for c in conns:
            c.sock.setblocking(True)
    if remaining:
        raise RuntimeError(f"{remaining} subscribers got no event within {timeout}s")
    return elapsed
