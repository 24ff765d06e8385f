"""One windowed publisher → subscriber flow through a broker, measured (bench/mqtt).

The publisher keeps at most ``window`` messages ahead of the subscriber, so the broker is kept
busy but never has to queue without bound (a QoS 0 flood would otherwise measure how fast a
broker can drop, or how much it can buffer). Both ends live in this one process, on
non-blocking sockets polled by one selector; its CPU is reported beside the rate so a
saturated load generator would show.
"""

from __future__ import annotations

import selectors
import time
from dataclasses import dataclass

import common
from wire import Mqtt, Publisher, RawSocketWamp, send_all

REALM = "realm1"
# An MQTT publisher's topic (mapped passthrough) as MQTT and WAMP subscribers name it
TOPIC = "bench/mqtt/topic"
WAMP_TOPIC = "bench.mqtt.topic"
# A WAMP publisher's topic (mapped native json: an event with args has no passthrough form
# in Crossbar) as it and an MQTT subscriber name it
NATIVE_PREFIX = "bench.native."
WAMP_NATIVE = "bench.native.topic"
MQTT_NATIVE = "bench/native/topic"
PAYLOAD = b"hello from the bench, 40 bytes of data.."


@dataclass
class Result:
    rate: float          # messages delivered per second
    client_cpu: float    # fraction of one core used by this (load generator) process
    server_cpu: float    # fraction of one core used by the server process tree
    delivered: int
    # the whole flow, warm-up included: what the publisher sent, what was acknowledged (QoS 1)
    # and what the subscriber got (a stalled flow says where it stalled)
    sent: int = 0
    acked: int = 0
    got: int = 0


class _MqttPub:
    def __init__(self, port: int, qos: int, tag: str) -> None:
        self.conn = Mqtt(port, f"bench-pub-{tag}")
        self.pre = Publisher(TOPIC, PAYLOAD, qos)
        self.acked = 0
        self.qos = qos

    def send(self, n: int) -> None:
        send_all(self.conn.sock, self.pre.batch(n))

    def readable(self) -> None:
        self.conn.fill()
        self.acked += self.conn.count()[1]


class _MqttSub:
    def __init__(self, port: int, qos: int, tag: str, topic: str = TOPIC) -> None:
        self.conn = Mqtt(port, f"bench-sub-{tag}")
        self.conn.subscribe(topic, qos)
        self.got = 0

    def readable(self) -> None:
        self.conn.fill()
        self.got += self.conn.count()[0]
        self.conn.flush_acks()


class _WampPub:
    def __init__(self, port: int, qos: int, tag: str) -> None:
        self.conn = RawSocketWamp(port, REALM)
        self.qos = qos
        self.req = 1
        self.acked = 0
        opts = {"acknowledge": True} if qos else {}
        # payload_mapping "native" json: the MQTT side gets {"args": [...]} as JSON text
        self._frame = lambda r: RawSocketWamp.frame([16, r, opts, WAMP_NATIVE,
                                                     [PAYLOAD.decode()]])

    def send(self, n: int) -> None:
        f = self._frame
        data = b"".join(f(self.req + i) for i in range(n))
        self.req += n
        send_all(self.conn.sock, data)

    def readable(self) -> None:
        self.conn.fill()
        self.acked += self.conn.count()[1]


class _WampSub:
    def __init__(self, port: int, qos: int, tag: str) -> None:
        self.conn = RawSocketWamp(port, REALM)
        self.conn.subscribe(WAMP_TOPIC)
        self.got = 0

    def readable(self) -> None:
        self.conn.fill()
        self.got += self.conn.count()[0]


KINDS = {"mqtt": (_MqttPub, _MqttSub), "wamp": (_WampPub, _WampSub)}


def flow(pub_port: int, sub_port: int, pub_kind: str, sub_kind: str, qos: int,
         duration: float, server_pids, window: int = 2000, chunk: int = 100,
         warmup: float = 0.5, tag: str = "", drain: float = 30.0) -> Result:
    """Messages/s from one ``pub_kind`` publisher to one ``sub_kind`` subscriber. QoS 1: the
    MQTT publisher counts PUBACKs (a WAMP publisher PUBLISHED acknowledgements), the MQTT
    subscriber acknowledges every message; at most ``window`` messages unacknowledged."""
    if sub_kind == "mqtt" and pub_kind == "wamp":
        sub = _MqttSub(sub_port, qos, tag, MQTT_NATIVE)
    else:
        sub = KINDS[sub_kind][1](sub_port, qos, tag)
    pub = KINDS[pub_kind][0](pub_port, qos, tag)
    # A subscription reaches the broker's table before the first publication (the SUBACK
    # came back), but give slow routers' subscribe paths a moment anyway.
    time.sleep(0.2)
    sel = selectors.DefaultSelector()
    for end in (sub, pub):
        end.conn.sock.setblocking(False)
        sel.register(end.conn.sock, selectors.EVENT_READ, end)
    sent = 0
    t0 = time.perf_counter()
    t_warm = t0 + warmup
    t_end = t_warm + duration
    measuring = False
    base = 0
    c0 = s0 = 0.0
    try:
        while True:
            now = time.perf_counter()
            if not measuring and now >= t_warm:
                measuring, base = True, sub.got
                t0, c0, s0 = now, time.process_time(), common.tree_cpu_s(server_pids())
            if now >= t_end:
                break
            ahead = sent - sub.got
            if qos:
                ahead = max(ahead, sent - pub.acked)
            can_send = ahead + chunk <= window
            if can_send:
                pub.send(chunk)
                sent += chunk
            for key, _ in sel.select(0 if can_send else 0.05):
                try:
                    key.data.readable()
                except BlockingIOError:
                    pass
        dt = time.perf_counter() - t0
        delivered = sub.got - base
        ccpu = (time.process_time() - c0) / dt
        scpu = (common.tree_cpu_s(server_pids()) - s0) / dt
        if sub.got > sent:
            raise RuntimeError(f"miscounted: {sub.got} delivered for {sent} published")
        got_then, acked_then = sub.got, getattr(pub, "acked", 0)
        # Let the server work off what it still holds (a slow one is up to a window behind),
        # so that the next flow is measured on an idle server: until everything arrived,
        # 1 s without progress (QoS 0 may drop), or ``drain`` s.
        deadline = time.perf_counter() + drain
        last, still_since = (sub.got, getattr(pub, "acked", 0)), time.perf_counter()
        while (now := time.perf_counter()) < deadline:
            if sub.got >= sent and (not qos or pub.acked >= sent):
                break
            for key, _ in sel.select(0.1):
                try:
                    key.data.readable()
                except BlockingIOError:
                    pass
            progress = (sub.got, getattr(pub, "acked", 0))
            if progress != last:
                last, still_since = progress, now
            elif now - still_since > 1.0:
                break
    finally:
        sel.close()
        for end in (pub, sub):
            end.conn.close()
    return Result(delivered / dt, ccpu, scpu, delivered, sent, acked_then, got_then)
