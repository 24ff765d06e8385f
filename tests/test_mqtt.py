"""The MQTT transport (issue 14 row 1): real sockets, clients nobody here wrote.

paho-mqtt and Debian's mosquitto-clients (``mosquitto_pub``/``mosquitto_sub``) against the
node's MQTT 3.1.1 face, autobahn-python on the WAMP side, and hand-made packets for every kind
of bad input (each ends only its connection, with one log line, while the node serves on).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import cbor2
import msgpack
import paho.mqtt.client as paho
import pytest
from autobahn.wamp.interfaces import IPayloadCodec
from autobahn.wamp.types import EncodedPayload
from paho.mqtt.enums import CallbackAPIVersion
from support.certs import self_signed
from support.nodes import geonode_cmd
from support.timing import scaled
from support.wamp import SyncClient
from support.ws import RawWamp

MiB = 1 << 20
ALL = {"call": True, "register": True, "publish": True, "subscribe": True}
TIMEOUT = scaled(15.0)   # generous: the machine is shared

CODEC = '''
class Codec:
    """dynamic payload mapping: MQTT text <-> WAMP args"""

    def on_join(self, session):
        session.register("com.codec.decode", self.decode)
        session.register("com.codec.encode", self.encode)

    def decode(self, uri, topic, payload):
        return {"args": [payload.decode("utf-8").upper()], "kwargs": {"topic": topic}}

    def encode(self, topic, uri, args, kwargs):
        return "|".join(str(a) for a in args).encode("utf-8")
'''

GATE = '''
from autobahn.wamp.exception import ApplicationError


class Gate:
    """dynamic authentication (the ticket is the user name backwards) and authorization
    (role "dyn": gate.* but not gate.secret.*), both answered from a thread pool"""

    def on_join(self, session):
        session.register("com.gate.authenticate", self.authenticate)
        session.register("com.gate.authorize", self.authorize)

    def authenticate(self, realm, authid, details):
        if details.get("ticket") != authid[::-1]:
            raise ApplicationError("wamp.error.authentication_failed", "wrong ticket")
        return {"role": "dyn", "extra": {"mqtt": details["authextra"]["mqtt"]["client_id"]}}

    def authorize(self, session, uri, action, options):
        return uri.startswith("gate.") and not uri.startswith("gate.secret.")
'''

MAPPING = {
    "": {"type": "passthrough"},
    "nat.json.": {"type": "native", "serializer": "json"},
    "nat.cbor.": {"type": "native", "serializer": "cbor"},
    "nat.msgpack.": {"type": "native", "serializer": "msgpack"},
    "nat.ubjson.": {"type": "native", "serializer": "ubjson"},
    "dyn.": {"type": "dynamic", "realm": "codec", "encoder": "com.codec.encode",
             "decoder": "com.codec.decode"},
    "none.": {"type": "passthru"},
    "wamp.": {"type": "native", "serializer": "json"},
}


def _mqtt(port: str, **options) -> dict:
    return {"type": "mqtt", "endpoint": {"type": "tcp", "port": port, "interface": "127.0.0.1"},
            "options": {"realm": "realm1", **options}}


@pytest.fixture(scope="module")
def node(start_module_node):
    cfg = {"version": 2, "controller": {}, "workers": [{
        "type": "router",
        "options": {"pythonpath": ["."]},
        "realms": [
            {"name": "realm1", "roles": [
                {"name": "anonymous", "permissions": [
                    {"uri": "", "match": "prefix", "allow": ALL,
                     "disclose": {"publisher": True}, "cache": True}]},
                # may use lim.* but not subscribe to lim.secret.* (publish there: yes)
                {"name": "limited", "permissions": [
                    {"uri": "lim.", "match": "prefix", "allow": {"publish": True,
                                                                 "subscribe": True}},
                    {"uri": "lim.secret.", "match": "prefix", "allow": {"publish": True}}]},
                {"name": "alices", "permissions": [
                    {"uri": "", "match": "prefix", "allow": ALL}]},
                {"name": "dyn", "authorizer": "com.gate.authorize"},
            ]},
            {"name": "codec", "roles": []},
        ],
        "transports": [
            _mqtt("$PORT", role="anonymous", payload_mapping=MAPPING,
                  max_message_size=4 * MiB),
            {"type": "web", "endpoint": {"type": "tcp", "port": "$PORT2",
                                         "interface": "127.0.0.1"},
             "paths": {"ws": {"type": "websocket", "serializers": ["json", "msgpack"],
                              "options": {"max_message_size": 16 * MiB}},
                       # a subscriber whose whole outgoing queue is smaller than an event
                       "small": {"type": "websocket", "serializers": ["json"],
                                 "options": {"max_queue_bytes": 256 * 1024}}}},
            _mqtt("$PORT3", role="limited"),
            _mqtt("$PORT4", auth={"ticket": {"type": "static", "principals": {
                "alice": {"ticket": "secret", "role": "alices"},
                "mallory": {"ticket": "m", "role": "alices"}}}}),
            _mqtt("$PORT5", max_queue=200, max_queue_bytes=64 * 1024,
                  payload_mapping={"flood.": {"type": "passthrough"}}),
            _mqtt("$PORT6", auth={"ticket": {"type": "dynamic",
                                             "authenticator": "com.gate.authenticate"}}),
        ],
        "components": [{"type": "class", "classname": "codec.Codec", "realm": "codec"},
                       {"type": "class", "classname": "gate.Gate", "realm": "realm1"}],
    }]}
    return start_module_node(cfg, files={"codec.py": CODEC, "gate.py": GATE}, nports=6)


def wait_for(cond, timeout: float = TIMEOUT, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# -- paho --------------------------------------------------------------------------------------

class Paho:
    """A connected paho-mqtt client; received messages land in ``messages``."""

    def __init__(self, port: int, client_id: str = "", clean: bool = True,
                 username: str | None = None, password: str | None = None,
                 expect_rc: int = 0) -> None:
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=clean, protocol=paho.MQTTv311)
        self.c.reconnect_delay_set(60, 120)   # a test decides when to reconnect
        if username is not None:
            self.c.username_pw_set(username, password)
        self.messages: queue.Queue = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.subacks: dict[int, list] = {}
        self.session_present = None
        self.rc = None
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda *a: self.disconnected.set()
        self.c.on_message = lambda c, u, msg: self.messages.put(msg)
        self.c.on_subscribe = self._on_subscribe
        self.c.connect("127.0.0.1", port, keepalive=60)
        self.c.loop_start()
        assert self.connected.wait(TIMEOUT), "no CONNACK"
        if expect_rc == 0:
            assert self.rc == 0, f"refused: {self.rc}"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.rc = reason_code.value if hasattr(reason_code, "value") else reason_code
        self.session_present = flags.session_present
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.subacks[mid] = [rc.value for rc in reason_codes]

    def subscribe(self, topic_filter: str, qos: int = 0) -> int:
        """The granted QoS (0x80: refused), once the SUBACK is in."""
        _, mid = self.c.subscribe(topic_filter, qos)
        return wait_for(lambda: self.subacks.get(mid), what="SUBACK")[0]

    def publish(self, topic: str, payload: bytes | str, qos: int = 0,
                retain: bool = False) -> None:
        info = self.c.publish(topic, payload, qos, retain)
        info.wait_for_publish(TIMEOUT)   # QoS 1/2: the broker's acknowledgement is in
        assert info.is_published()

    def get(self, timeout: float = TIMEOUT) -> paho.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def nothing_but(self, marker_topic: str) -> paho.MQTTMessage:
        """The next message, which must be the marker (nothing came before it)."""
        msg = self.get()
        assert msg.topic == marker_topic, (msg.topic, msg.payload)
        return msg

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def clients():
    made: list = []

    def make(*args, **kw):
        c = Paho(*args, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        try:
            c.close()
        except Exception:
            pass


# -- hand-made packets ---------------------------------------------------------------------------

def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def _len(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pkt(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _len(len(body)) + body


def connect_pkt(client_id: str = "", keepalive: int = 0, clean: bool = True, level: int = 4,
                will: tuple[str, bytes, int] | None = None, username: str | None = None,
                password: bytes | None = None) -> bytes:
    flags = 0x02 if clean else 0
    payload = _str(client_id)
    if will:
        flags |= 0x04 | (will[2] << 3)
        payload += _str(will[0]) + _str(will[1])
    if username is not None:
        flags |= 0x80
        payload += _str(username)
    if password is not None:
        flags |= 0x40
        payload += _str(password)
    return pkt(0x10, _str("MQTT") + bytes((level, flags)) + struct.pack("!H", keepalive)
               + payload)


def publish_pkt(topic: str, payload: bytes, qos: int = 0, pid: int = 1,
                retain: bool = False) -> bytes:
    body = _str(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return pkt(0x30 | (qos << 1) | int(retain), body)


def subscribe_pkt(topic_filter: str, qos: int = 0, pid: int = 1) -> bytes:
    return pkt(0x82, struct.pack("!H", pid) + _str(topic_filter) + bytes((qos,)))


class Raw:
    """A raw MQTT connection."""

    def __init__(self, port: int, sock: socket.socket | None = None) -> None:
        self.s = sock or socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.port = self.s.getsockname()[1] if sock is None else 0
        self.buf = bytearray()
        self.pos = 0

    @classmethod
    def unix(cls, path: Path) -> Raw:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(TIMEOUT)
        s.connect(str(path))
        return cls(0, s)

    @property
    def peer(self) -> str:
        """How the node's log names this connection."""
        return f"tcp4:127.0.0.1:{self.port}"

    def send(self, data: bytes) -> None:
        self.s.sendall(data)

    def read(self) -> tuple[int, bytes]:
        """The next packet (first byte, body); O(its size) however much is buffered."""
        while True:
            buf, pos = self.buf, self.pos
            if len(buf) - pos >= 2:
                n, shift, i = 0, 0, pos + 1
                while i < len(buf) and i < pos + 5:
                    b = buf[i]
                    n |= (b & 0x7F) << shift
                    shift += 7
                    i += 1
                    if not b & 0x80:
                        break
                else:
                    i = -1
                if i > 0 and len(buf) >= i + n:
                    packet = buf[pos], bytes(buf[i:i + n])
                    self.pos = i + n
                    if self.pos > len(buf) // 2:     # compact now and then, not per packet
                        del buf[:self.pos]
                        self.pos = 0
                    return packet
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("closed")
            self.buf += chunk

    def connect(self, **kw) -> bytes:
        self.send(connect_pkt(**kw))
        first, body = self.read()
        assert first == 0x20, hex(first)
        return body

    def at_eof(self) -> bool:
        """True once the node closed the connection (FIN or RST), within TIMEOUT."""
        try:
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.s.close()


def log_lines(node, needle: str) -> list[str]:
    return [line for line in node.log().splitlines() if needle in line]


# -- the tests ------------------------------------------------------------------------------------

def test_paho_qos_0_and_1_and_wildcards(node, clients):
    sub = clients(node.port)
    pub = clients(node.port)
    assert sub.subscribe("w1/+/c", 0) == 0
    assert sub.subscribe("w1/a/#", 1) == 1
    assert sub.subscribe("w1/+/m/#", 1) == 1
    assert sub.subscribe("+/d1", 1) == 1
    assert sub.subscribe("w1/q2", 2) == 1        # QoS 2 subscriptions are granted QoS 1
    cases = [("w1/x/c", 0), ("w1/a", 1), ("w1/a/b/c", 1), ("w1/x/m", 1), ("w1/x/m/y", 1),
             ("y/d1", 1), ("w1/q2", 1)]
    for topic, _ in cases:
        pub.publish(topic, f"to {topic}", qos=1)
    # not matched: a level too many for '+', another level than 'm', '$' under a wildcard
    for topic in ("w1/x/y/c", "w1/x/n/y", "$x/d1"):
        pub.publish(topic, "no", qos=1)
    pub.publish("w1/end/c", "end", qos=0)
    got = []
    while True:
        msg = sub.get()
        if msg.topic == "w1/end/c":
            break
        got.append((msg.topic, msg.qos, msg.payload.decode()))
    assert sorted(got) == sorted((t, q, f"to {t}") for t, q in cases)


def test_mosquitto_clients_qos_0_1_2(node, tmp_path):
    if not shutil.which("mosquitto_sub"):
        pytest.skip("mosquitto-clients not installed (apt-get install mosquitto-clients)")
    port = str(node.port)
    # A retained message tells when mosquitto_sub's subscription is in place.
    subprocess.run(["mosquitto_pub", "-p", port, "-t", "mq/ready", "-m", "r", "-r", "-q", "1"],
                   check=True, timeout=TIMEOUT)
    out = tmp_path / "sub.out"
    with open(out, "wb") as f:
        sub = subprocess.Popen(["mosquitto_sub", "-p", port, "-t", "mq/#", "-q", "2", "-v",
                                "-C", "4", "-W", "30"], stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: b"mq/ready r" in out.read_bytes(), what="mosquitto_sub subscribed")
        for qos in (0, 1, 2):
            subprocess.run(["mosquitto_pub", "-p", port, "-t", f"mq/q{qos}", "-m", f"m{qos}",
                            "-q", str(qos)], check=True, timeout=TIMEOUT)
        assert sub.wait(TIMEOUT) == 0
    finally:
        sub.kill()
    lines = out.read_bytes().decode().splitlines()
    assert lines == ["mq/ready r", "mq/q0 m0", "mq/q1 m1", "mq/q2 m2"]
    # an empty retained message removes the retained one
    subprocess.run(["mosquitto_pub", "-p", port, "-t", "mq/ready", "-r", "-n"], check=True,
                   timeout=TIMEOUT)
    got = subprocess.run(["mosquitto_sub", "-p", port, "-t", "mq/ready", "-C", "1", "-W", "2",
                          "--retained-only"], capture_output=True, timeout=TIMEOUT)
    assert got.stdout == b""


def test_qos2_publish_is_delivered_once(node, clients):
    sub = clients(node.port)
    sub.subscribe("q2/#", 1)
    raw = Raw(node.port)
    raw.connect(client_id="q2-raw")
    raw.send(publish_pkt("q2/t", b"once", qos=2, pid=7))
    assert raw.read() == (0x50, b"\x00\x07")                  # PUBREC
    dup = bytearray(publish_pkt("q2/t", b"once", qos=2, pid=7))
    dup[0] |= 0x08                                             # the same, resent with DUP
    raw.send(bytes(dup))
    assert raw.read() == (0x50, b"\x00\x07")
    raw.send(pkt(0x62, b"\x00\x07"))                           # PUBREL
    assert raw.read() == (0x70, b"\x00\x07")                  # PUBCOMP
    raw.send(publish_pkt("q2/end", b"end"))
    assert sub.get().payload == b"once"
    assert sub.get().topic == "q2/end"
    raw.close()


def test_retained_messages(node, clients):
    pub = clients(node.port)
    pub.publish("ret/a", "v1", qos=1, retain=True)
    pub.publish("ret/a", "v2", qos=1, retain=True)
    sub = clients(node.port)
    sub.subscribe("ret/#", 1)
    msg = sub.get()
    assert (msg.topic, msg.payload, msg.retain) == ("ret/a", b"v2", True)
    pub.publish("ret/a", "live", qos=1)
    msg = sub.get()
    assert (msg.payload, msg.retain) == (b"live", False)     # MQTT-3.3.1-9
    pub.publish("ret/a", b"", qos=1, retain=True)            # delivered, and clears
    msg = sub.get()
    assert (msg.payload, msg.retain) == (b"", False)
    late = clients(node.port)
    late.subscribe("ret/#", 1)
    pub.publish("ret/marker", "m")
    late.nothing_but("ret/marker")


def test_suback_comes_before_retained_messages(node, clients):
    clients(node.port).publish("ord/t", "kept", qos=1, retain=True)
    raw = Raw(node.port)
    raw.connect(client_id="ord")
    raw.send(subscribe_pkt("ord/#", 1, pid=5))
    assert raw.read() == (0x90, b"\x00\x05\x01")
    first, body = raw.read()
    assert first == 0x33 and body.endswith(b"kept")            # QoS 1, retain
    raw.close()


class _Raw:
    """A WAMP payload codec: MQTT's bytes are the one argument (autobahn's payload
    transparency, as Crossbar's passthrough example does it)."""

    def encode(self, is_originating, uri, args=None, kwargs=None):
        return EncodedPayload(args[0], "mqtt")

    def decode(self, is_originating, uri, encoded_payload):
        return uri, [encoded_payload.payload], None


IPayloadCodec.register(_Raw)


def test_passthrough_between_mqtt_and_wamp(node, clients):
    wamp = SyncClient(node.ports[1])
    raw_wamp = SyncClient(node.ports[1])
    try:
        raw_wamp.loop.call_soon_threadsafe(raw_wamp.session.set_payload_codec, _Raw())
        events = raw_wamp.subscribe("pt.in")
        mq = clients(node.port)
        mq.publish("pt/in", b"\x00\x01raw\xff", qos=1)
        assert events.get(timeout=TIMEOUT) == ([b"\x00\x01raw\xff"], {})
        mq.subscribe("pt/out/#", 1)
        wamp.publish("pt.out.text", "text ü")
        wamp.publish("pt.out.bytes", b"\x00bytes")
        raw_wamp.publish("pt.out.codec", b"\x01via codec")
        got = {}
        while len(got) < 3:
            msg = mq.get()
            got[msg.topic] = msg.payload
        assert got == {"pt/out/text": "text ü".encode(), "pt/out/bytes": b"\x00bytes",
                       "pt/out/codec": b"\x01via codec"}
    finally:
        wamp.close()
        raw_wamp.close()


def _bjdata():
    return pytest.importorskip("bjdata")


SERIALIZE = {
    "json": lambda o: json.dumps(o).encode(),
    "cbor": cbor2.dumps,
    "msgpack": lambda o: msgpack.packb(o, use_bin_type=True),
    "ubjson": lambda o: _bjdata().dumpb(o),
}
UNSERIALIZE = {
    "json": json.loads,
    "cbor": cbor2.loads,
    "msgpack": lambda b: msgpack.unpackb(b, raw=False),
    "ubjson": lambda b: _bjdata().loadb(b),
}


@pytest.mark.parametrize("name", ["json", "cbor", "msgpack", "ubjson"])
def test_native_payloads(node, clients, name):
    wamp = SyncClient(node.ports[1])
    try:
        events = wamp.subscribe(f"nat.{name}.in")
        mq = clients(node.port)
        mq.publish(f"nat/{name}/in", SERIALIZE[name]({"args": [1, "two"], "kwargs": {"k": "v"}}),
                   qos=1)
        assert events.get(timeout=TIMEOUT) == ([1, "two"], {"k": "v"})
        # not an object: dropped (one log line), the connection carries on
        mq.publish(f"nat/{name}/in", SERIALIZE[name]([1, 2]), qos=1)
        mq.publish(f"nat/{name}/in", SERIALIZE[name]({"args": ["after"]}), qos=1)
        assert events.get(timeout=TIMEOUT) == (["after"], {})
        mq.subscribe(f"nat/{name}/out", 1)
        wamp.publish(f"nat.{name}.out", 3, "four", x=1)
        msg = mq.get()
        assert UNSERIALIZE[name](msg.payload) == {"args": [3, "four"], "kwargs": {"x": 1}}
    finally:
        wamp.close()
    wait_for(lambda: log_lines(node, f"nat/{name}/in' dropped"), what="the drop's log line")


def test_dynamic_payload_codec(node, clients):
    wamp = SyncClient(node.ports[1])
    try:
        events = wamp.subscribe("dyn.in")
        mq = clients(node.port)
        mq.publish("dyn/in", "hello", qos=1)
        assert events.get(timeout=TIMEOUT) == (["HELLO"], {"topic": "dyn/in"})
        mq.subscribe("dyn/out", 1)
        mq2 = clients(node.port)
        mq2.subscribe("dyn/out", 0)
        for i in range(3):
            wamp.publish("dyn.out", "a", i)
        for client in (mq, mq2):
            assert [client.get().payload for _ in range(3)] == [b"a|0", b"a|1", b"a|2"]
    finally:
        wamp.close()


def test_default_mapping_is_passthrough(node):
    """Port 3 has no payload_mapping: MQTT bytes travel untouched (also MQTT to MQTT)."""
    raw = Raw(node.ports[2])
    raw.connect(client_id="lim-default")
    raw.send(subscribe_pkt("lim/default", 1, pid=3))
    assert raw.read() == (0x90, b"\x00\x03\x01")
    raw.send(publish_pkt("lim/default", b"\x00raw", qos=1, pid=4))
    got = {raw.read(), raw.read()}
    assert got == {(0x40, b"\x00\x04"), (0x32, _str("lim/default") + b"\x00\x01\x00raw")}
    raw.close()


def test_topic_without_mapping_entry_is_dropped_with_a_log_line(node, clients):
    """Port 5 maps only flood.*: other topics have no payload form (Crossbar: dropped)."""
    sub = clients(node.ports[4])
    sub.subscribe("#", 0)
    pub = clients(node.ports[4], client_id="unmapped-pub")
    pub.publish("nomap/x", "lost", qos=1)          # acknowledged all the same
    pub.publish("flood/marker", "m", qos=1)
    sub.nothing_but("flood/marker")
    wait_for(lambda: any("no payload_mapping entry" in line
                         for line in log_lines(node, "unmapped-pub")), what="log line")


def test_wamp_topic_with_no_mqtt_name_is_dropped_with_a_log_line(node, clients):
    """A WAMP URI may hold '+' or a lone surrogate, an MQTT topic name may not (MQTT-3.3.2-2,
    1.5.3): such events do not reach MQTT subscribers, who keep their connection."""
    sub = clients(node.port, client_id="odd-topics")
    sub.subscribe("odd/#", 1)
    # a raw JSON client: autobahn will not send a lone surrogate, a JSON text may (escaped)
    wamp = RawWamp(node.ports[1])
    try:
        assert wamp.hello()[0] == 2
        for i, uri in enumerate(["odd.a+b", "odd.s\ud800", "odd.marker"]):
            # json.dumps escapes the surrogate: "odd.s\ud800" on the wire
            wamp.send([16, i + 1, {"acknowledge": True}, uri, ["x"]])
            assert wamp.recv()[0] == 17     # PUBLISHED: the router took it, no ABORT
        assert sub.nothing_but("odd/marker").payload == b"x"
    finally:
        wamp.close()
    wait_for(lambda: any("MQTT forbids" in line for line in log_lines(node, "odd-topics")),
             what="the drop's log line")


def test_will_on_abnormal_end_only(node, clients):
    sub = clients(node.port)
    sub.subscribe("will/#", 1)
    raw = Raw(node.port)
    raw.connect(client_id="will-1", will=("will/one", b"gone", 1))
    raw.close()                                   # no DISCONNECT: the will goes out
    msg = sub.get()
    assert (msg.topic, msg.payload) == ("will/one", b"gone")
    raw = Raw(node.port)
    raw.connect(client_id="will-2", will=("will/two", b"gone", 0))
    raw.send(b"\xe0\x00")                         # DISCONNECT: the will is discarded
    assert raw.at_eof()
    raw.close()
    clients(node.port).publish("will/marker", "m", qos=1)
    sub.nothing_but("will/marker")


def test_will_of_a_killed_mosquitto_sub(node, clients):
    if not shutil.which("mosquitto_sub"):
        pytest.skip("mosquitto-clients not installed")
    sub = clients(node.port)
    sub.subscribe("kwill/#", 0)
    proc = subprocess.Popen(["mosquitto_sub", "-p", str(node.port), "-t", "kwill/ready",
                             "-i", "killed-sub", "--will-topic", "kwill/dead",
                             "--will-payload", "bye"], stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: log_lines(node, "killed-sub") or _session_listed(node, "killed-sub"),
                 what="mosquitto_sub connected")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    msg = sub.get()
    assert (msg.topic, msg.payload) == ("kwill/dead", b"bye")


def _session_listed(node, client_id: str) -> bool:
    wamp = SyncClient(node.ports[1])
    try:
        for sid in wamp.call("wamp.session.list"):
            info = wamp.call("wamp.session.get", sid)
            if (info.get("transport") or {}).get("mqtt", {}).get("client_id") == client_id:
                return True
        return False
    finally:
        wamp.close()


def test_keep_alive_one_and_a_half_times(node, clients):
    sub = clients(node.port)
    sub.subscribe("ka/#", 1)
    quiet = Raw(node.port)
    quiet.connect(client_id="ka-quiet", keepalive=1, will=("ka/expired", b"x", 0))
    pinging = Raw(node.port)
    pinging.connect(client_id="ka-ping", keepalive=1)
    t0 = time.monotonic()
    # the pinging client stays (a PINGREQ every 0.4 s) while the quiet one is dropped
    while time.monotonic() - t0 < 4.0:
        pinging.send(b"\xc0\x00")
        assert pinging.read() == (0xD0, b"")
        time.sleep(0.4)
    assert quiet.at_eof()
    msg = sub.get()
    assert msg.topic == "ka/expired"
    assert log_lines(node, f"{quiet.peer}") and \
        any("keep-alive expired" in line for line in log_lines(node, "ka-quiet"))
    pinging.close()
    quiet.close()


def test_persistent_session_for_the_life_of_the_node(node, clients):
    a = clients(node.port, client_id="per-1", clean=False)
    assert a.session_present is False
    a.subscribe("per/t", 1)
    a.close()
    pub = clients(node.port)
    pub.publish("per/t", "while away 1", qos=1)
    pub.publish("per/t", "while away 2", qos=1)
    pub.publish("per/t", "qos 0: dropped while away", qos=0)
    b = clients(node.port, client_id="per-1", clean=False)
    assert b.session_present is True
    assert [b.get().payload for _ in range(2)] == [b"while away 1", b"while away 2"]
    pub.publish("per/t", "live", qos=0)            # still subscribed, no SUBSCRIBE needed
    assert b.get().payload == b"live"
    b.close()
    c = clients(node.port, client_id="per-1", clean=True)   # discards the stored session
    assert c.session_present is False
    c.close()
    d = clients(node.port, client_id="per-1", clean=False)
    assert d.session_present is False


def test_takeover_closes_the_old_connection(node, clients):
    first = clients(node.port, client_id="same-id")
    second = clients(node.port, client_id="same-id")
    assert first.disconnected.wait(TIMEOUT)
    second.subscribe("take/t", 0)
    clients(node.port).publish("take/t", "to the second", qos=1)
    assert second.get().payload == b"to the second"


def test_permissions_and_concrete_topics(node, clients):
    lim = clients(node.ports[2])
    assert lim.subscribe("lim/#", 1) == 1
    assert lim.subscribe("other/x", 1) == 0x80                 # not allowed: SUBACK failure
    main = clients(node.port)
    main.subscribe("other/#", 1)
    # a pattern subscription gets only topics its role may subscribe to (issue 9)
    main.publish("lim/secret/x", "hidden", qos=1)
    main.publish("lim/open", "shown", qos=1)
    msg = lim.get()
    assert (msg.topic, msg.payload) == ("lim/open", b"shown")
    lim.publish("other/y", "denied", qos=1)                   # PUBACK comes, nothing else
    lim.publish("lim/secret/z", "allowed", qos=1)
    main.publish("other/marker", "m", qos=1)
    main.nothing_but("other/marker")
    assert lim.messages.empty()


def test_ticket_authentication(node, clients):
    ok = clients(node.ports[3], username="alice", password="secret")
    ok.subscribe("auth/t", 0)
    for user, password, code in (("alice", b"wrong", 4), ("bob", b"secret", 4)):
        raw = Raw(node.ports[3])
        assert raw.connect(username=user, password=password) == bytes((0, code))
        assert raw.at_eof()
        raw.close()
    raw = Raw(node.ports[3])
    assert raw.connect(client_id="anon") == b"\x00\x05"     # no anonymous on this transport
    assert raw.at_eof()


def test_dynamic_authenticator_and_authorizer(node, clients):
    """CONNECT waits for an authenticator, SUBSCRIBE and PUBLISH for an authorizer (both
    procedures answer from a thread pool): SUBACK/PUBACK come when they have decided."""
    dyn = clients(node.ports[5], client_id="dyn-1", username="olleh", password="hello")
    assert dyn.subscribe("gate/t", 1) == 1
    assert dyn.subscribe("gate/#", 1) == 1
    assert dyn.subscribe("nope/t", 1) == 0x80
    main = clients(node.port)
    main.publish("gate/secret/x", "hidden", qos=1)   # the pattern gets only what it may see
    main.publish("gate/t", "shown", qos=1)
    got = sorted((dyn.get().topic, dyn.get().topic))
    assert got == ["gate/t", "gate/t"]                  # once per matching subscription
    dyn.publish("gate/t", "own", qos=1)                # published after the authorizer's yes
    assert {dyn.get().payload, dyn.get().payload} == {b"own"}
    assert dyn.messages.empty()
    raw = Raw(node.ports[5])
    assert raw.connect(client_id="dyn-2", username="olleh", password=b"nope") == b"\x00\x04"
    assert raw.at_eof()


def test_client_id_of_another_principal_is_refused(node, clients):
    alice = clients(node.ports[3], client_id="alice-phone", clean=False, username="alice",
                    password="secret")
    raw = Raw(node.ports[3])
    assert raw.connect(client_id="alice-phone", clean=False, username="mallory",
                       password=b"m") == b"\x00\x05"
    assert raw.at_eof()
    raw = Raw(node.ports[3])
    assert raw.connect(client_id="alice-phone", clean=True, username="mallory",
                       password=b"m") == b"\x00\x05"       # no take-over either
    alice.subscribe("alice/t", 0)                           # still connected
    assert not alice.disconnected.is_set()


def test_mqtt5_refused_with_connack_1(node):
    raw = Raw(node.port)
    raw.send(connect_pkt(client_id="v5", level=5))
    assert raw.read() == (0x20, b"\x00\x01")
    assert raw.at_eof()
    wait_for(lambda: log_lines(node, raw.peer), what="log line")
    assert len(log_lines(node, raw.peer)) == 1


BAD = {
    "bad remaining length": (True, b"\x30\xff\xff\xff\xff\x01", "remaining length"),
    "publish before connect": (False, publish_pkt("a/b", b"x"), "PUBLISH before CONNECT"),
    "subscribe before connect": (False, subscribe_pkt("a"), "SUBSCRIBE before CONNECT"),
    "oversized packet": (True, b"\x30" + _len(5 * MiB), "over the limit"),
    "oversized connect": (False, b"\x10" + _len(5 * MiB), "over the limit"),
    "'#' not last": (True, subscribe_pkt("a/#/b"), "misplaced '#'"),
    "'#' inside a level": (True, subscribe_pkt("a/b#"), "misplaced '#'"),
    "'+' inside a level": (True, subscribe_pkt("a+/b"), "misplaced '+'"),
    "empty filter": (True, subscribe_pkt(""), "empty topic filter"),
    "wildcard in a topic name": (True, publish_pkt("a/+", b"x"), "wildcard in topic name"),
    "second connect": (True, connect_pkt(client_id="again"), "second CONNECT"),
    "subscribe flags": (True, b"\x80" + subscribe_pkt("a")[1:], "SUBSCRIBE with flags"),
    "qos 3": (True, publish_pkt("a/b", b"x", qos=3), "QoS 3"),
    "server packet": (True, b"\x20\x02\x00\x00", "CONNACK is not a packet a client sends"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_closes_only_that_connection(node, clients, case):
    connected, data, words = BAD[case]
    raw = Raw(node.port)
    if connected:
        raw.connect(client_id=f"bad-{len(case)}", will=("bad/will", case.encode(), 0))
    raw.send(data)
    assert raw.at_eof(), "the node must close the connection"
    lines = wait_for(lambda: log_lines(node, raw.peer) or log_lines(node, f"bad-{len(case)}'"),
                     what="its log line")
    lines = [line for line in node.log().splitlines()
             if raw.peer in line and "protocol violation" in line]
    assert len(lines) == 1 and words in lines[0], lines
    raw.close()
    # everyone else is still served
    sub = clients(node.port)
    sub.subscribe("bad/after", 0)
    clients(node.port).publish("bad/after", "still here", qos=1)
    assert sub.get().payload == b"still here"


def test_oversized_packet_refused_before_its_body(node):
    raw = Raw(node.port)
    raw.connect(client_id="big")
    t0 = time.monotonic()
    raw.send(b"\x30" + _len(200 * MiB))   # announced, never sent
    assert raw.at_eof()
    assert time.monotonic() - t0 < TIMEOUT


def test_megabyte_payloads(node, clients):
    sub = clients(node.port)
    sub.subscribe("big/t", 1)
    wamp = SyncClient(node.ports[1])
    try:
        events = wamp.subscribe("nat.json.big")
        payload = os.urandom(3 * MiB)
        t0 = time.monotonic()
        clients(node.port).publish("big/t", payload, qos=1)
        assert sub.get().payload == payload
        text = "x" * (3 * MiB)
        clients(node.port).publish("nat/json/big", json.dumps({"args": [text]}), qos=1)
        assert events.get(timeout=TIMEOUT) == ([text], {})
        assert time.monotonic() - t0 < TIMEOUT
    finally:
        wamp.close()


def test_event_bigger_than_a_wamp_subscribers_queue_is_refused(node, clients):
    """An MQTT PUBLISH bigger than a WAMP subscriber's whole outgoing queue is refused by the
    broker (as a WAMP publisher's is), not sent to cost that subscriber its session."""
    small = SyncClient(node.ports[1], path="small")
    try:
        events = small.subscribe("nat.json.big")
        pub = clients(node.port, client_id="big-pub")
        pub.publish("nat/json/big", json.dumps({"args": ["x" * MiB]}), qos=1)   # PUBACK still
        pub.publish("nat/json/big", json.dumps({"args": ["after"]}), qos=1)
        assert events.get(timeout=TIMEOUT) == (["after"], {})
        assert small.call("wamp.session.count") >= 1           # still connected
    finally:
        small.close()
    wait_for(lambda: any("payload_size_exceeded" in line for line in log_lines(node, "big-pub")),
             what="the refusal's log line")


def test_mqtt_publisher_waits_for_a_congested_wamp_subscriber(node):
    """Backpressure: an MQTT publisher flooding a WAMP subscriber with a small outgoing queue
    (the "small" path: 256 KiB, 32 of these events) waits for it, as a WAMP publisher would,
    instead of overflowing its queue: every event arrives and the subscriber keeps its
    session."""
    n = 400
    sub = RawWamp(node.ports[1], path="small")
    try:
        assert sub.hello()[0] == 2
        sub.send([32, 1, {}, "nat.json.bp"])
        assert sub.recv()[0] == 33
        pub = Raw(node.port)
        pub.connect(client_id="bp-pub")
        packet = publish_pkt("nat/json/bp", json.dumps({"args": ["z" * 8000]}).encode())
        # the node stops reading while it waits: send from a thread, read here
        sender = threading.Thread(target=pub.send, args=(packet * n,), daemon=True)
        sender.start()
        for i in range(n):
            msg = sub.recv()
            assert msg[0] == 36, (i, msg[:2])
        sender.join(TIMEOUT)
        assert not sender.is_alive()
        pub.close()
        sub.send([16, 2, {"acknowledge": True}, "bp.still.here", []])
        assert sub.recv()[0] == 17       # the session lives on
    finally:
        sub.close()


def test_slow_qos0_subscriber_loses_messages_not_its_connection(node, clients):
    """Port 5 has a small outgoing queue. A subscriber that does not read loses QoS 0
    messages (at most once), with a log line; its connection and everyone else stay."""
    slow = Raw(node.ports[4])
    slow.connect(client_id="slow-reader")
    slow.send(subscribe_pkt("flood/t", 0, pid=1))
    assert slow.read() == (0x90, b"\x00\x01\x00")
    pub = Raw(node.ports[4])
    pub.connect(client_id="flooder")
    batch = publish_pkt("flood/t", b"y" * 1000) * 100
    for _ in range(200):     # 20,000 messages of 1 KB: more than the socket buffers hold
        pub.send(batch)
    pub.send(publish_pkt("flood/done", b"", qos=1, pid=9))
    wait_for(lambda: log_lines(node, "slow-reader") and any(
        "QoS 0 message dropped" in line for line in log_lines(node, "slow-reader")),
        what="the drop warning")
    assert pub.read() == (0x40, b"\x00\x09")
    # the slow one is still connected: it gets a PINGRESP after what it is owed
    slow.send(b"\xc0\x00")
    while True:
        first, _ = slow.read()
        if first == 0xD0:
            break
    slow.close()
    pub.close()
    assert len([line for line in log_lines(node, "slow-reader") if "dropped" in line]) <= 3


def test_meta_events_reach_mqtt_only_when_asked(node, clients):
    """'#' is not for the router's own wamp.* topics (as it is not for $SYS); the topic
    itself is, as the role allows (mapped 'native' json here)."""
    everything = clients(node.port)
    everything.subscribe("#", 0)
    meta = clients(node.port)
    meta.subscribe("wamp/session/on_join", 0)
    clients(node.port, client_id="meta-visible")
    details = json.loads(meta.get().payload)["args"][0]
    assert details["transport"]["mqtt"]["client_id"] == "meta-visible"
    assert details["transport"]["type"] == "mqtt"
    assert _session_listed(node, "meta-visible")
    clients(node.port).publish("meta/marker", "m", qos=1)
    while True:
        msg = everything.get()
        assert not msg.topic.startswith("wamp/"), msg.topic
        if msg.topic == "meta/marker":
            break


def test_tls_and_unix_endpoints_and_shutdown(start_node):
    """MQTT over TLS (paho, mosquitto_sub) and over a Unix socket (paho); SIGTERM ends the
    node promptly with MQTT clients connected, persistent ones offline included."""

    cert, key = self_signed()
    cfg = {"version": 2, "workers": [{"type": "router",
        "realms": [{"name": "realm1", "roles": [{"name": "anonymous", "permissions": [
            {"uri": "", "match": "prefix", "allow": ALL}]}]}],
        "transports": [
            {"type": "mqtt", "endpoint": {"type": "tcp", "port": "$PORT",
                                          "interface": "127.0.0.1",
                                          "tls": {"key": "server.key",
                                                  "certificate": "server.crt"}},
             "options": {"realm": "realm1"}},
            {"type": "mqtt", "endpoint": {"type": "unix", "path": "mqtt.sock"},
             "options": {"realm": "realm1"}}]}]}
    tls_node = start_node(cfg, files={"server.crt": cert, "server.key": key})
    wait_for(lambda: (tls_node.dir / "mqtt.sock").exists(), what="the unix socket")
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="over-tls")
    sub.tls_set(ca_certs=str(tls_node.dir / "server.crt"))
    got: queue.Queue = queue.Queue()
    connected, gone = threading.Event(), threading.Event()
    sub.on_connect = lambda *a: connected.set()
    sub.on_disconnect = lambda *a: gone.set()
    sub.on_message = lambda c, u, msg: got.put(msg)
    sub.connect("127.0.0.1", tls_node.port)
    sub.loop_start()
    try:
        assert connected.wait(TIMEOUT)
        sub.subscribe("sec/#", 1)
        wait_for(lambda: b"sec/ready" in _retained_probe(sub, got), what="subscription")
        unix = paho.Client(CallbackAPIVersion.VERSION2, client_id="over-unix",
                           transport="unix")
        unix.connect(str(tls_node.dir / "mqtt.sock"))
        unix.loop_start()
        info = unix.publish("sec/unix", b"via unix", qos=1)
        info.wait_for_publish(TIMEOUT)
        # transports of one realm share its topics, not their sessions
        assert _next_payload(got, "sec/unix") == b"via unix"
        unix.loop_stop()
        if shutil.which("mosquitto_pub"):
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(tls_node.port),
                            "-t", "sec/cli",
                            "-m", "over tls", "--cafile", str(tls_node.dir / "server.crt"),
                            "-q", "1"], check=True, timeout=TIMEOUT)
            assert _next_payload(got, "sec/cli") == b"over tls"
        away = Raw.unix(tls_node.dir / "mqtt.sock")
        away.connect(client_id="away", clean=False)
        away.send(subscribe_pkt("sec/#", 1))
        assert away.read()[0] == 0x90
        away.send(b"\xe0\x00")
        away.close()
        t0 = time.monotonic()
        assert tls_node.stop() == 0
        assert time.monotonic() - t0 < TIMEOUT
        assert gone.wait(TIMEOUT)
        assert "Traceback" not in tls_node.log()
    finally:
        sub.loop_stop()


def _retained_probe(client, got: queue.Queue) -> bytes:
    """Publish a retained marker and see whether it comes back (subscription in place)."""
    client.publish("sec/ready", b"r", qos=1, retain=True)
    try:
        msg = got.get(timeout=1)
    except queue.Empty:
        return b""
    return msg.topic.encode()


def _next_payload(got: queue.Queue, topic: str) -> bytes:
    while True:
        msg = got.get(timeout=TIMEOUT)
        if msg.topic == topic:
            return msg.payload


# -- config ------------------------------------------------------------------------------------

def _check(tmp_path: Path, transport: dict, realms: list | None = None) -> list[str]:
    cfg = {"version": 2, "workers": [{"type": "router", "realms": realms or [
        {"name": "realm1", "roles": [{"name": "anonymous", "permissions": []}]},
        {"name": "codec", "roles": []}],
        "transports": [transport]}]}
    path = tmp_path / "node.json"
    path.write_text(json.dumps(cfg))
    from geonode.config import check

    return check(path)


GOOD = {"type": "mqtt", "endpoint": {"type": "tcp", "port": 1883},
        "options": {"realm": "realm1", "role": "anonymous", "payload_mapping": MAPPING}}


@pytest.mark.parametrize("change,error", [
    ({}, None),
    ({"options": {"role": "anonymous"}},
     "workers[0].transports[0].options.realm: 'realm' is required"),
    ({"options": {"realm": "nowhere"}},
     "workers[0].transports[0].options.realm: realm 'nowhere' is not defined"),
    ({"options": {"realm": "realm1", "role": "ghost"}},
     "workers[0].transports[0].options.role: role 'ghost' is not defined on realm 'realm1'"),
    ({"options": {"realm": "realm1", "max_inflight": 5}},
     "workers[0].transports[0].options.max_inflight: unknown key 'max_inflight' (did you mean "
     "'max_inflight_messages'?"),
    ({"options": {"realm": "realm1", "payload_mapping": {"": {"type": "raw"}}}},
     "workers[0].transports[0].options.payload_mapping[\"\"].type: unknown payload mapping "
     "type 'raw'"),
    ({"options": {"realm": "realm1", "payload_mapping": {"a.": {"type": "native"}}}},
     "workers[0].transports[0].options.payload_mapping[\"a.\"].serializer: 'serializer' is "
     "required"),
    ({"options": {"realm": "realm1", "payload_mapping": {"a.": {
        "type": "dynamic", "encoder": "e", "decoder": "d", "realm": "gone"}}}},
     "realm 'gone' is not defined"),
    ({"options": {"realm": "realm1", "max_message_size": 1}}, "1 is out of range"),
    ({"paths": {}}, "unknown key 'paths'"),
])
def test_check_validates_mqtt_transports(tmp_path, change, error):
    errors = _check(tmp_path, {**GOOD, **change})
    if error is None:
        assert errors == []
    else:
        assert any(error in e for e in errors), errors


def test_start_agrees_with_check(tmp_path):
    cfg = {"version": 2, "workers": [{"type": "router", "realms": [{"name": "realm1"}],
                                      "transports": [{**GOOD, "options": {"realm": "nope"}}]}]}
    path = tmp_path / "node.json"
    path.write_text(json.dumps(cfg))
    out = subprocess.run(geonode_cmd(str(path)), capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 1
    assert "options.realm: realm 'nope' is not defined" in out.stderr + out.stdout


def test_universal_hook_serves_a_connection_whose_first_bytes_were_read():
    """The seam a ``universal`` transport uses (docs/mqtt.md): it sniffs the first bytes of an
    accepted connection (0x10: an MQTT CONNECT), then hands the socket and those bytes to
    ``serve_connection``. In-process, on this process's hub."""
    from gevent import socket as gsocket
    from gevent.server import StreamServer
    from support.router import make_router, realm

    from geonode.config.model import parse_transport
    from geonode.mqtt.transport import build_service, serve_connection

    transport = parse_transport({"type": "mqtt", "endpoint": {"type": "tcp", "port": 0},
                                 "options": {"realm": "realm1"}}, "t")
    service = build_service(transport, make_router(realm()))
    sniffed = []

    def handle(sock, address):
        first = sock.recv(3)        # what a universal transport reads before it decides
        sniffed.append(first)
        serve_connection(service, sock, address, first)

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    try:
        raw = Raw(0, gsocket.create_connection(("127.0.0.1", server.server_port),
                                               timeout=TIMEOUT))
        assert raw.connect(client_id="universal") == b"\x00\x00"
        assert sniffed[0][:1] == b"\x10"
        raw.send(subscribe_pkt("u/t", 1, pid=2))
        assert raw.read() == (0x90, b"\x00\x02\x01")
        raw.send(publish_pkt("u/t", b"via the hook", qos=1, pid=3))
        assert {raw.read(), raw.read()} == {
            (0x40, b"\x00\x03"), (0x32, _str("u/t") + b"\x00\x01via the hook")}
        raw.close()
    finally:
        server.stop()
