"""MQTT 3.1.1 packets (OASIS standard, 2014): the fixed header, the bodies a server reads and
the packets it writes.

A parser error is a ``Malformed`` exception naming the rule broken; the transport answers it
as the standard says (section 4.8: close the network connection), with one log line. Every
parse is O(packet size); the size itself is bounded before the body is read (the transport
checks the remaining length against its ``max_message_size`` first).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Control packet types (the fixed header's high nibble).
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
         7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
         12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT"}

# The flags (low nibble) each packet a client sends must carry (MQTT-2.2.2-1, -2); PUBLISH
# has real flags and is checked on its own.
CLIENT_FLAGS = {CONNECT: 0, PUBACK: 0, PUBREC: 0, PUBREL: 2, PUBCOMP: 0, SUBSCRIBE: 2,
                UNSUBSCRIBE: 2, PINGREQ: 0, DISCONNECT: 0}

# CONNACK return codes (3.2.2.3)
ACCEPTED = 0
REFUSED_PROTOCOL_VERSION = 1
REFUSED_IDENTIFIER = 2
REFUSED_SERVER_UNAVAILABLE = 3
REFUSED_BAD_CREDENTIALS = 4
REFUSED_NOT_AUTHORIZED = 5

SUBACK_FAILURE = 0x80

PROTOCOL_LEVEL = 4            # MQTT 3.1.1
MAX_REMAINING = 268_435_455   # four length bytes of seven bits

_H = struct.Struct("!H")

PINGRESP_PACKET = b"\xd0\x00"


class Malformed(Exception):
    """A packet breaking the standard: the connection is closed (MQTT-4.8.0-1)."""


class UnsupportedLevel(Exception):
    """CONNECT of another protocol level (MQTT 5, MQTT 3.1): CONNACK 0x01, then close."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.level = level


@dataclass(slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(slots=True)
class Connect:
    client_id: str
    clean: bool
    keepalive: int                 # seconds; 0: none
    will: Will | None
    username: str | None
    password: bytes | None


def remaining_length(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int] | None:
    """(remaining length, bytes it took) of the fixed header whose length starts at ``pos``,
    or None when ``buf`` ends before it does."""
    value = shift = 0
    for i in range(pos, min(pos + 4, end)):
        b = buf[i]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i - pos + 1
        shift += 7
    if end - pos >= 4:
        raise Malformed("remaining length longer than four bytes")
    return None


def encode_length(n: int) -> bytes:
    if n < 128:
        return bytes((n,))
    if n < 16384:
        return bytes((0x80 | (n & 0x7F), n >> 7))
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(body: bytes, pos: int, what: str) -> tuple[str, int]:
    raw, pos = _binary(body, pos, what)
    return _utf8(raw, what), pos


def _binary(body: bytes, pos: int, what: str) -> tuple[bytes, int]:
    if pos + 2 > len(body):
        raise Malformed(f"{what}: packet ends inside its length")
    n = (body[pos] << 8) | body[pos + 1]
    end = pos + 2 + n
    if end > len(body):
        raise Malformed(f"{what}: length {n} past the end of the packet")
    return body[pos + 2:end], end


def _utf8(raw: bytes, what: str) -> str:
    try:
        text = raw.decode("utf-8")   # strict: also refuses encoded surrogates (MQTT-1.5.3-1)
    except UnicodeDecodeError:
        raise Malformed(f"{what} is not valid UTF-8") from None
    if "\x00" in text:
        raise Malformed(f"{what} contains U+0000")   # MQTT-1.5.3-2
    return text


def parse_connect(body: bytes) -> Connect:
    name, pos = _binary(body, 0, "protocol name")
    if pos >= len(body):
        raise Malformed("CONNECT ends after the protocol name")
    level = body[pos]
    if name not in (b"MQTT", b"MQIsdp"):
        raise Malformed(f"unknown protocol name {name[:16]!r}")   # MQTT-3.1.2-1
    if level != PROTOCOL_LEVEL or name != b"MQTT":
        raise UnsupportedLevel(level)                               # MQTT-3.1.2-2
    if pos + 4 > len(body):
        raise Malformed("CONNECT ends inside its variable header")
    flags = body[pos + 1]
    keepalive = (body[pos + 2] << 8) | body[pos + 3]
    pos += 4
    if flags & 0x01:
        raise Malformed("CONNECT reserved flag set")                # MQTT-3.1.2-3
    will_flag = bool(flags & 0x04)
    will_qos = (flags >> 3) & 0x03
    will_retain = bool(flags & 0x20)
    if not will_flag and (will_qos or will_retain):
        raise Malformed("will QoS or retain set without a will")   # MQTT-3.1.2-11, -13, -15
    if will_qos == 3:
        raise Malformed("will QoS 3")                               # MQTT-3.1.2-14
    has_user, has_pass = bool(flags & 0x80), bool(flags & 0x40)
    if has_pass and not has_user:
        raise Malformed("password without a user name")            # MQTT-3.1.2-22
    client_id, pos = _string(body, pos, "client identifier")
    will = None
    if will_flag:
        topic, pos = _string(body, pos, "will topic")
        payload, pos = _binary(body, pos, "will message")
        will = Will(topic, payload, will_qos, will_retain)
    username = password = None
    if has_user:
        username, pos = _string(body, pos, "user name")
    if has_pass:
        password, pos = _binary(body, pos, "password")
    if pos != len(body):
        raise Malformed(f"{len(body) - pos} bytes after the CONNECT payload")
    return Connect(client_id, bool(flags & 0x02), keepalive, will, username, password)


def parse_publish(flags: int, body: bytes) -> tuple[str, int, int, bytes]:
    """(topic name, QoS, packet identifier or 0, payload); the caller reads retain/dup."""
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise Malformed("PUBLISH with QoS 3")                       # MQTT-3.3.1-4
    if len(body) < 2:
        raise Malformed("PUBLISH ends inside its topic length")
    n = (body[0] << 8) | body[1]
    end = 2 + n
    if end > len(body):
        raise Malformed(f"PUBLISH topic length {n} past the end of the packet")
    topic = _utf8(body[2:end], "topic name")
    pid = 0
    if qos:
        if end + 2 > len(body):
            raise Malformed("PUBLISH ends inside its packet identifier")
        pid = (body[end] << 8) | body[end + 1]
        if not pid:
            raise Malformed("packet identifier 0")                  # MQTT-2.3.1-1
        end += 2
    return topic, qos, pid, body[end:]


def parse_packet_id(body: bytes, name: str) -> int:
    if len(body) != 2:
        raise Malformed(f"{name} of {len(body)} bytes (2 expected)")
    pid = (body[0] << 8) | body[1]
    if not pid:
        raise Malformed("packet identifier 0")
    return pid


def parse_subscribe(body: bytes) -> tuple[int, list[tuple[str, int]]]:
    if len(body) < 2:
        raise Malformed("SUBSCRIBE without a packet identifier")
    pid = (body[0] << 8) | body[1]
    if not pid:
        raise Malformed("packet identifier 0")
    pos, out = 2, []
    while pos < len(body):
        topic_filter, pos = _string(body, pos, "topic filter")
        if pos >= len(body):
            raise Malformed("topic filter without its requested QoS")
        qos = body[pos]
        if qos > 2:
            raise Malformed(f"requested QoS byte {qos:#04x}")      # MQTT-3.8.3-4
        out.append((topic_filter, qos))
        pos += 1
    if not out:
        raise Malformed("SUBSCRIBE without a topic filter")        # MQTT-3.8.3-3
    return pid, out


def parse_unsubscribe(body: bytes) -> tuple[int, list[str]]:
    if len(body) < 2:
        raise Malformed("UNSUBSCRIBE without a packet identifier")
    pid = (body[0] << 8) | body[1]
    if not pid:
        raise Malformed("packet identifier 0")
    pos, out = 2, []
    while pos < len(body):
        topic_filter, pos = _string(body, pos, "topic filter")
        out.append(topic_filter)
    if not out:
        raise Malformed("UNSUBSCRIBE without a topic filter")      # MQTT-3.10.3-2
    return pid, out


# -- packets the server writes -------------------------------------------------------------------

def connack(session_present: bool, code: int) -> bytes:
    return bytes((0x20, 2, 1 if session_present and code == ACCEPTED else 0, code))


def _ack(first: int, pid: int) -> bytes:
    return bytes((first, 2, pid >> 8, pid & 0xFF))


def puback(pid: int) -> bytes:
    return _ack(0x40, pid)


def pubrec(pid: int) -> bytes:
    return _ack(0x50, pid)


def pubcomp(pid: int) -> bytes:
    return _ack(0x70, pid)


def unsuback(pid: int) -> bytes:
    return _ack(0xB0, pid)


def suback(pid: int, codes: list[int]) -> bytes:
    body = _H.pack(pid) + bytes(codes)
    return b"\x90" + encode_length(len(body)) + body


def topic_field(topic: str) -> bytes:
    """A PUBLISH's topic name as it goes on the wire (length-prefixed UTF-8); ValueError
    when it has none (a lone surrogate, more than 65535 bytes)."""
    try:
        raw = topic.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the topic is not valid UTF-8") from None
    if len(raw) > 65535:
        raise ValueError(f"the topic is {len(raw)} bytes long, MQTT allows 65535")
    return _H.pack(len(raw)) + raw


def publish(topic_part: bytes, payload: bytes, qos: int = 0, retain: bool = False,
            pid: int = 0, dup: bool = False) -> bytes:
    """A PUBLISH packet; ``topic_part`` from ``topic_field`` (built once per event)."""
    first = 0x30 | (qos << 1) | (1 if retain else 0) | (8 if dup else 0)
    if qos:
        n = len(topic_part) + 2 + len(payload)
        return b"".join((bytes((first,)), encode_length(n), topic_part, _H.pack(pid), payload))
    n = len(topic_part) + len(payload)
    return b"".join((bytes((first,)), encode_length(n), topic_part, payload))
