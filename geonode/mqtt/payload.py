"""Payload mapping between MQTT's one binary payload and WAMP's args/kwargs (Crossbar's
``payload_mapping``): the entry with the longest WAMP URI prefix decides, both ways.

- ``passthrough`` (also ``passthru``): the MQTT bytes travel as a WAMP transparent payload
  (``enc_algo: "mqtt"``); WAMP subscribers decode it with a payload codec, as with Crossbar.
  An event from a WAMP publisher that used plain args goes to MQTT as the bytes of its one
  ``bytes`` argument, the UTF-8 of its one ``str`` argument, or empty when it has none
  (Crossbar fails on such events; anything else is dropped with a log line).
- ``native``: the MQTT payload is a ``{"args": [...], "kwargs": {...}, "exclude": ...}``
  object in the configured serializer (json, msgpack, cbor, ubjson), both ways.
- ``dynamic``: the router calls the configured ``decoder`` procedure (MQTT → WAMP, as
  ``decoder(uri, mqtt_topic, payload)`` returning that object) and ``encoder`` (WAMP → MQTT,
  as ``encoder(mqtt_topic, uri, args, kwargs)`` returning bytes), on the entry's ``realm``
  (default: the transport's), the argument order Crossbar uses.

A payload that cannot be mapped is a ``PayloadError``: the message is dropped with a log line
(an MQTT publisher has no way to hear of it in 3.1.1; its PUBACK still goes out).
"""

from __future__ import annotations

from typing import Any

from geonode.transport import serializers as ser

# What a native / dynamic object may hold besides args and kwargs, and the item type of each.
_FILTERS = {"exclude": int, "exclude_authid": str, "exclude_authrole": str,
            "eligible": int, "eligible_authid": str, "eligible_authrole": str}

#: seconds a dynamic encoder or decoder may take before the message is dropped
CODEC_TIMEOUT = 10.0


class PayloadError(Exception):
    pass


class Codec:
    """One ``payload_mapping`` entry."""

    kind = ""
    blocking = False     # a procedure call: not on the router's delivery path

    def to_wamp(self, uri: str, topic: str, payload: bytes) -> dict:
        """``autobahn.wamp.message.Publish`` keyword arguments for an MQTT payload."""
        raise NotImplementedError

    def to_mqtt(self, uri: str, topic: str, event: Any) -> bytes:
        """The MQTT payload for a WAMP EVENT."""
        raise NotImplementedError


class Passthrough(Codec):
    kind = "passthrough"

    def to_wamp(self, uri: str, topic: str, payload: bytes) -> dict:
        return {"payload": payload, "enc_algo": "mqtt"}

    def to_mqtt(self, uri: str, topic: str, event: Any) -> bytes:
        payload = event.payload
        if payload is not None:
            return payload
        args, kwargs = event.args, event.kwargs
        if kwargs:
            raise PayloadError("a WAMP event with kwargs has no passthrough MQTT form "
                               "(publish a transparent payload, or map the topic 'native')")
        if not args:
            return b""
        if len(args) == 1:
            if isinstance(args[0], bytes):
                return args[0]
            if isinstance(args[0], str):
                return args[0].encode("utf-8")
        raise PayloadError("a WAMP event whose args are not one bytes or str value has no "
                           "passthrough MQTT form (publish a transparent payload, or map the "
                           "topic 'native')")


def publish_options(obj: Any, where: str) -> dict:
    """Publish keyword arguments from a native/dynamic payload object, each type checked."""
    if not isinstance(obj, dict):
        raise PayloadError(f"{where}: expected an object with args/kwargs, got "
                           f"{type(obj).__name__}")
    out: dict = {}
    args = obj.get("args")
    if args is not None:
        if not isinstance(args, list):
            raise PayloadError(f"{where}: 'args' must be a list")
        out["args"] = args
    kwargs = obj.get("kwargs")
    if kwargs is not None:
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise PayloadError(f"{where}: 'kwargs' must be an object")
        out["kwargs"] = kwargs
    for key, item in _FILTERS.items():
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(type(v) is item for v in value):
            raise PayloadError(f"{where}: {key!r} must be a list of "
                               f"{'integers' if item is int else 'strings'}")
        out[key] = value
    return out


class Native(Codec):
    kind = "native"

    def __init__(self, serializer: str) -> None:
        self.serializer = serializer
        self._obj = ser.get(serializer).obj
        self._text = not ser.get(serializer).binary

    def to_wamp(self, uri: str, topic: str, payload: bytes) -> dict:
        try:
            obj = self._obj.unserialize(payload)[0]
        except Exception as e:
            raise PayloadError(f"payload is not {self.serializer}: {type(e).__name__}: "
                               f"{str(e)[:200]}") from None
        return publish_options(obj, f"{self.serializer} payload")

    def to_mqtt(self, uri: str, topic: str, event: Any) -> bytes:
        if event.payload is not None:
            return event.payload   # a WAMP transparent payload is bytes already
        obj: dict = {}
        if event.args is not None:
            obj["args"] = event.args
        if event.kwargs is not None:
            obj["kwargs"] = event.kwargs
        try:
            data = self._obj.serialize(obj)
        except Exception as e:
            raise PayloadError(f"event cannot be encoded as {self.serializer}: "
                               f"{str(e)[:200]}") from None
        return data.encode("utf-8") if isinstance(data, str) else data


class Dynamic(Codec):
    kind = "dynamic"
    blocking = True

    def __init__(self, router: Any, realm: str, encoder: str, decoder: str) -> None:
        self.router = router
        self.realm = realm
        self.encoder = encoder
        self.decoder = decoder

    def _call(self, procedure: str, args: list) -> Any:
        try:
            return self.router.call(self.realm, procedure, args, timeout=CODEC_TIMEOUT)
        except Exception as e:
            error = getattr(e, "error", None) or type(e).__name__
            raise PayloadError(f"{procedure} failed: {error} {str(e)[:200]}") from None

    def to_wamp(self, uri: str, topic: str, payload: bytes) -> dict:
        return publish_options(self._call(self.decoder, [uri, topic, payload]),
                               f"{self.decoder} result")

    def to_mqtt(self, uri: str, topic: str, event: Any) -> bytes:
        data = self._call(self.encoder, [topic, uri, event.args, event.kwargs])
        if isinstance(data, bytes):
            return data
        if isinstance(data, str):
            return data.encode("utf-8")
        raise PayloadError(f"{self.encoder} returned {type(data).__name__}, not bytes")


PASSTHROUGH = Passthrough()


class PayloadMapping:
    """``payload_mapping``: WAMP URI prefix -> Codec, longest prefix wins.

    Without the option every topic is ``passthrough`` (Crossbar drops everything then: its
    lookup finds no entry); with it, a URI no entry covers has no mapping (None)."""

    def __init__(self, cfg: dict | None, router: Any, default_realm: str) -> None:
        if cfg is None:
            self.entries: list[tuple[str, Codec]] = [("", PASSTHROUGH)]
            return
        entries = []
        for prefix, spec in cfg.items():
            kind = spec.get("type")
            if kind in ("passthrough", "passthru"):
                codec: Codec = PASSTHROUGH
            elif kind == "native":
                codec = Native(spec["serializer"])
            else:
                codec = Dynamic(router, spec.get("realm") or default_realm, spec["encoder"],
                                spec["decoder"])
            entries.append((prefix, codec))
        # longest first: the first prefix that matches is the most specific
        self.entries = sorted(entries, key=lambda e: len(e[0]), reverse=True)

    def lookup(self, uri: str) -> Codec | None:
        for prefix, codec in self.entries:
            if uri.startswith(prefix):
                return codec
        return None
