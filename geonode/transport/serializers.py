"""WAMP serializers shared by every transport: one instance per type and framing.

autobahn's ``Message.serialize(obj_serializer)`` caches the bytes per serializer *instance*,
so a message the router sends to many peers (an EVENT to every subscriber) is marshalled and
encoded once per serializer type only if all transports use the same instances: they come
from :data:`SERIALIZERS` / :func:`get` here, never constructed per connection.

autobahn's JSON decoder runs the pure-Python scanner (to catch its ``"\\u0000"`` base64 binary
convention while parsing); it costs ~4x the C decoder. Here the C decoder parses and the
binary convention is applied by a walk only when the payload contains an escaped NUL.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import struct
from collections.abc import Callable, Iterable
from typing import Any

from autobahn.wamp import message as _message
from autobahn.wamp.exception import ProtocolError

from geonode.config.serializers import PREFERENCE, SUPPORTED, installed
from geonode.uri import MAX_URI_LENGTH

__all__ = ["ProtocolError", "WampSerializer", "SERIALIZERS", "available", "get",
           "by_subprotocol", "by_rawsocket_id", "subprotocols"]

# MESSAGE_TYPE -> message class, the table autobahn's serializers dispatch with, built from the
# message module itself: importing autobahn.wamp.serializer would load bjdata and with it numpy
# (~10 MB RSS, ~0.15 s) into every node, ubjson or not.
# (type(obj), not isinstance: the module also holds autobahn's lazily loaded flatbuffers
# module, which isinstance would load through its __class__.)
MESSAGE_CLASSES: dict[int, Any] = {  # autobahn's message classes
    obj.MESSAGE_TYPE: obj for obj in vars(_message).values()
    if issubclass(type(obj), type) and issubclass(obj, _message.Message)
    and type(getattr(obj, "MESSAGE_TYPE", None)) is int
}

# Where autobahn's parse finds a URI it checks with a regex, by message type. A URI longer
# than MAX_URI_LENGTH never reaches that regex (linear, but ~90 ms per MiB of "a.a.a"):
# PUBLISH/SUBSCRIBE/CALL/REGISTER are parsed with a stand-in and get the real URI back, for
# the router to refuse with wamp.error.invalid_uri (its own check is O(len)); in any other
# message it is a protocol violation.
_URI_INDEX = {1: 1, 3: 2, 6: 2, 8: 4, 16: 3, 32: 3, 48: 3, 64: 3}
_URI_ATTR = {16: "topic", 32: "topic", 48: "procedure", 64: "procedure"}
_REASON_IN_DICT = (35, 67, 69)   # UNSUBSCRIBED, UNREGISTERED, INTERRUPT: details/options.reason

# The join's messages, parsed once per distinct payload (WampSerializer.unserialize): a fleet
# of clients of one library sends byte-identical HELLOs (no authid/authextra) and first
# SUBSCRIBEs, and decoding plus autobahn's validation of a HELLO (its role objects, the realm's
# regex) is a tenth of a join's CPU. Only what autobahn accepted is kept, so an identical
# payload gets an identical (and shared, never mutated) message, and everything else is parsed
# and refused as before. Bounded: at most _PARSED_MAX payloads of at most _PARSED_SIZE each,
# per serializer; when full it starts over.
_PARSED_SIZE = 1024
_PARSED_MAX = 128
# The first three bytes a HELLO or SUBSCRIBE can begin with: JSON's compact form ("[1," and
# "[32"); msgpack's fixarray of 3 with type 1 and the realm's string header, or of 4 with
# type 32 and the request id's integer header. Only such payloads are looked up (one slice,
# one set lookup), so every other message (a PUBLISH, a CALL) does not pay for hashing its
# payload. Another spelling ("[ 1, ...") is parsed as before, only not shared.
_JOIN_HEADS = frozenset((
    "[1,", "[32", b"[1,", b"[32",
    *(bytes((0x93, 1, b)) for b in (*range(0xA0, 0xC0), 0xD9, 0xDA)),
    *(bytes((0x94, 32, b)) for b in (*range(0x80), 0xCC, 0xCD, 0xCE, 0xCF)),
))

_BATCH_SEP = "\x18"  # WAMP JSON batching: each message followed by ASCII "cancel"
_LEN = struct.Struct("!L")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return "\x00" + base64.b64encode(bytes(obj)).decode("ascii")
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# NaN/Infinity are not JSON (RFC 8259): Python's json reads and writes them by default, and a
# browser's JSON.parse then fails on what the router forwarded. Refused when read (the session
# ends, as for any invalid message); a float of a msgpack/CBOR peer that JSON cannot carry
# makes the encoder raise, and the peer's send handles unencodable messages
# (transport/websocket.py). Neither costs anything on other input (the scanner calls
# parse_constant only for those tokens).
_json_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                                default=_json_default).encode
_json_decode = json.JSONDecoder(parse_constant=_no_constant).decode


def _unbinary(obj: Any) -> Any:
    """Turn ``"\\x00<base64>"`` strings back into bytes (WAMP JSON binary convention)."""
    if isinstance(obj, str):
        if obj and obj[0] == "\x00":
            return base64.b64decode(obj[1:])
        return obj
    if isinstance(obj, list):
        return [_unbinary(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _unbinary(v) for k, v in obj.items()}
    return obj


class _ObjectSerializer:
    """Encodes one raw WAMP message (a list) to its wire form; the cache key for autobahn.

    ``NAME`` must not be ``"flatbuffers"`` (autobahn's Message.serialize looks at it).
    """

    NAME = ""
    BINARY = True

    def __init__(self, batched: bool) -> None:
        self._batched = batched

    def serialize(self, obj: Any) -> bytes | str:
        raise NotImplementedError

    def unserialize(self, payload: bytes | str) -> list:
        raise NotImplementedError


class _JsonObjectSerializer(_ObjectSerializer):
    NAME = "json"
    BINARY = False

    def serialize(self, obj: Any) -> str:
        s = _json_encode(obj)
        return s + _BATCH_SEP if self._batched else s

    def unserialize(self, payload: bytes | str) -> list:
        if isinstance(payload, (bytes, bytearray, memoryview)):
            payload = bytes(payload).decode("utf-8")
        chunks = [c for c in payload.split(_BATCH_SEP) if c] if self._batched else [payload]
        if not chunks:
            raise ValueError("empty batch")
        out = [_json_decode(c) for c in chunks]
        if "\\u0000" in payload:
            out = [_unbinary(x) for x in out]
        return out


class _BinaryObjectSerializer(_ObjectSerializer):
    """Binary formats: batches are 4-byte big-endian length prefixed messages."""

    _dumps: Callable[[Any], bytes]
    _loads: Callable[[bytes], Any]

    def serialize(self, obj: Any) -> bytes:
        data = self._dumps(obj)
        return _LEN.pack(len(data)) + data if self._batched else data

    def unserialize(self, payload: bytes | str) -> list:
        if isinstance(payload, str):
            raise ValueError(f"{self.NAME} needs binary messages, got text")
        if not self._batched:
            return [self._loads(payload)]
        out, i, n = [], 0, len(payload)
        view = memoryview(payload)
        while i < n:
            if i + 4 > n:
                raise ValueError("truncated batch length prefix")
            (size,) = _LEN.unpack_from(payload, i)
            if i + 4 + size > n:
                raise ValueError("truncated batch item")
            out.append(self._loads(bytes(view[i + 4:i + 4 + size])))
            i += 4 + size
        if not out:
            raise ValueError("empty batch")
        return out


def _msgpack_pair() -> tuple[Callable, Callable] | None:
    try:
        import msgpack
    except ImportError:
        return None
    packer_opts = {"use_bin_type": True}
    return (lambda o: msgpack.packb(o, **packer_opts),
            lambda b: msgpack.unpackb(b, raw=False))


def _cbor_pair() -> tuple[Callable, Callable] | None:
    try:
        import cbor2
    except ImportError:
        return None
    return cbor2.dumps, cbor2.loads


def _ubjson_pair() -> tuple[Callable, Callable] | None:
    # autobahn (and so Crossbar and autobahn-python clients) speak "ubjson" through bjdata,
    # whose integers are not byte-compatible with py-ubjson: use the same library or none.
    # bjdata imports numpy: it is loaded on the first ubjson message, not at start-up.
    try:
        if importlib.util.find_spec("bjdata") is None:
            return None
    except (ImportError, ValueError):
        return None
    codec: list = []

    def bjdata() -> Any:
        if not codec:
            import bjdata

            codec.append(bjdata)
        return codec[0]

    return (lambda obj: bjdata().dumpb(obj)), (lambda data: bjdata().loadb(data))


class WampSerializer:
    """One WAMP serializer (``json``, ``msgpack.batched``…) as the transports use it."""

    def __init__(self, name: str, obj: _ObjectSerializer, rawsocket_id: int,
                 batched: bool) -> None:
        self.name = name                       # "json" / "json.batched"
        self.subprotocol = f"wamp.2.{name}"
        self.binary = obj.BINARY
        self.batched = batched
        self.rawsocket_id = rawsocket_id       # RawSocket handshake serializer number
        self.obj = obj                         # key of autobahn's per-message cache
        self._parsed: dict[bytes | str, Any] = {}   # payload -> its shared message (HELLO...)

    def serialize(self, msg: Any) -> bytes | str:
        """The wire form of ``msg`` (str for JSON = text frame). Cached on the message."""
        return msg.serialize(self.obj)

    def join(self, payloads: list) -> bytes | str:
        """Several serialized messages as one transport message (batched serializers)."""
        return ("" if not self.binary else b"").join(payloads)

    def unserialize(self, payload: bytes | str) -> list:
        """Parse one transport message into autobahn messages; ProtocolError when invalid."""
        kind = type(payload)
        if (kind is str or kind is bytes) and payload[:3] in _JOIN_HEADS \
                and len(payload) <= _PARSED_SIZE:
            known = self._parsed.get(payload)
            if known is not None:
                return [known]
            msgs = self._unserialize(payload)
            if len(msgs) == 1 and _shareable(msgs[0]):
                if len(self._parsed) >= _PARSED_MAX:
                    self._parsed.clear()
                self._parsed[payload] = msgs[0]
            return msgs
        return self._unserialize(payload)

    def _unserialize(self, payload: bytes | str) -> list:
        try:
            raws = self.obj.unserialize(payload)
        except RecursionError:
            # Python's parsers stop near 1000 levels: say so rather than name the exception
            raise ProtocolError(f"invalid {self.name} payload: nested too deeply") from None
        except Exception as e:
            raise ProtocolError(f"invalid {self.name} payload: {type(e).__name__}: {e}") from None
        msgs = []
        # No string in a payload is longer than the payload: small ones skip the URI guard.
        guard = len(payload) > MAX_URI_LENGTH
        for raw in raws:
            if type(raw) is not list or not raw:
                raise ProtocolError("a WAMP message must be a non-empty list")
            cls = MESSAGE_CLASSES.get(raw[0]) if type(raw[0]) is int else None
            if cls is None:
                raise ProtocolError(f"invalid WAMP message type {raw[0]!r}")
            try:
                msgs.append(_parse_guarded(cls, raw) if guard else cls.parse(raw))
            except ProtocolError:
                raise
            except Exception as e:
                raise ProtocolError(f"invalid {cls.__name__.upper()}: {type(e).__name__}: {e}") from None
        return msgs

    def __repr__(self) -> str:
        return f"<WampSerializer {self.name}>"


def _shareable(msg: Any) -> bool:
    """A message that sessions may share (they only read incoming messages): the join's
    HELLO without per-client credentials, and SUBSCRIBE."""
    kind = type(msg)
    if kind is _message.Hello:
        return msg.authid is None and msg.authextra is None
    return kind is _message.Subscribe


def _parse_guarded(cls: Any, raw: list) -> Any:
    """``cls.parse(raw)`` keeping URIs over MAX_URI_LENGTH away from autobahn's regexes."""
    kind = raw[0]
    i = _URI_INDEX.get(kind)
    if i is not None and len(raw) > i and type(raw[i]) is str and len(raw[i]) > MAX_URI_LENGTH:
        attr = _URI_ATTR.get(kind)
        if attr is None:
            raise ProtocolError(f"URI of {len(raw[i])} characters in {cls.__name__.upper()} "
                                f"(at most {MAX_URI_LENGTH})")
        msg = cls.parse([*raw[:i], "x", *raw[i + 1:]])
        setattr(msg, attr, raw[i])
        return msg
    if kind in _REASON_IN_DICT and len(raw) > 2 and type(raw[2]) is dict:
        reason = raw[2].get("reason")
        if type(reason) is str and len(reason) > MAX_URI_LENGTH:
            raise ProtocolError(f"reason URI of {len(reason)} characters in "
                                f"{cls.__name__.upper()} (at most {MAX_URI_LENGTH})")
    return cls.parse(raw)


def _build() -> dict[str, WampSerializer]:
    table: dict[str, WampSerializer] = {}
    json_pair = (_json_encode, _json_decode)
    kinds: Iterable[tuple[str, int, Any]] = (
        ("json", 1, json_pair),
        ("msgpack", 2, _msgpack_pair()),
        ("cbor", 3, _cbor_pair()),
        ("ubjson", 4, _ubjson_pair()),
    )
    for name, rs_id, pair in kinds:
        if pair is None or name not in installed():
            continue
        for batched in (False, True):
            if name == "json":
                obj: _ObjectSerializer = _JsonObjectSerializer(batched)
            else:
                cls = type(f"_{name.capitalize()}ObjectSerializer", (_BinaryObjectSerializer,),
                           {"NAME": name, "_dumps": staticmethod(pair[0]),
                            "_loads": staticmethod(pair[1])})
                obj = cls(batched)
            full = f"{name}.batched" if batched else name
            table[full] = WampSerializer(full, obj, rs_id, batched)
    return table


#: every available serializer by name ("json", "json.batched", "msgpack", ...)
SERIALIZERS: dict[str, WampSerializer] = _build()

#: the base names a transport's ``serializers`` list may hold (geonode.config.serializers)
KNOWN = SUPPORTED


def available() -> list[str]:
    """Base names of the serializers installed here, in Crossbar's preference order."""
    return [n for n in PREFERENCE if n in SERIALIZERS]


def get(name: str) -> WampSerializer:
    return SERIALIZERS[name]


def subprotocols(names: Iterable[str]) -> list[str]:
    """WebSocket subprotocols for configured base names (each plain and batched)."""
    out = []
    for n in names:
        out.append(SERIALIZERS[n].subprotocol)
        out.append(SERIALIZERS[f"{n}.batched"].subprotocol)
    return out


def by_subprotocol(subprotocol: str) -> WampSerializer | None:
    if subprotocol and subprotocol.startswith("wamp.2."):
        return SERIALIZERS.get(subprotocol[7:])
    return None


def by_rawsocket_id(serializer_id: int) -> WampSerializer | None:
    for s in SERIALIZERS.values():
        if s.rawsocket_id == serializer_id and not s.batched:
            return s
    return None


# Keep autobahn's module import explicit for readers: message classes come from there.
Message = _message.Message
