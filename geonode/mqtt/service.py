"""One configured MQTT face of the router: its options, sessions and topic caches.

``MqttService(options, router, json_path)`` is built once per ``"type": "mqtt"`` transport
(and, later, per ``mqtt`` part of a ``universal`` transport) from Crossbar's ``options``:

- ``realm`` (required), ``role`` (default ``anonymous``): clients join that realm in that role,
  unless ``auth`` is given: then it decides (Crossbar's ``auth`` dict; ``ticket`` takes the
  MQTT user name as authid and the password as ticket, ``anonymous`` the rest);
- ``payload_mapping`` (``geonode.mqtt.payload``);
- geonode's limits (defaults and reasons in ``DEFAULTS``).

``connect(conn, pkt)`` runs an accepted CONNECT: authentication, session take-over or
resumption, CONNACK.
"""

from __future__ import annotations

import logging
from typing import Any

from geonode.config import ConfigError
from geonode.mqtt import codec
from geonode.mqtt.payload import Codec, PayloadMapping
from geonode.mqtt.session import MqttSession, SessionStore
from geonode.mqtt.topics import name_to_uri, uri_to_name
from geonode.router.state import new_id

log = logging.getLogger("geonode.mqtt")

DEFAULTS = {
    # Largest packet accepted (the remaining length is checked before the body is read).
    # MQTT allows 256 MiB; IoT messages are small, and every connection may hold one whole
    # packet in memory: 1 MiB keeps 10,000 clients within reach of a modest machine.
    "max_message_size": 1 << 20,
    # Unacknowledged QoS 1 messages per session on the wire: enough to keep a client that
    # acknowledges in batches busy (mosquitto's default is 20).
    "max_inflight_messages": 100,
    # QoS 1 messages a session keeps beyond those (while its client is slow or away), as
    # mosquitto's max_queued_messages; more are dropped with a log line.
    "max_queued_messages": 1000,
    "max_queued_bytes": 16 << 20,
    # Persistent sessions kept while their clients are away (the oldest go first): each
    # holds a WAMP session and its queue.
    "max_offline_sessions": 10_000,
}

# topic / URI caches: entries, and the longest key cached (longer ones are mapped each time)
_CACHE_ENTRIES = 4096
_CACHE_KEY_MAX = 512


class MqttService:
    def __init__(self, options: dict, router: Any, json_path: str = "mqtt",
                 max_queue: int = 10_000, max_queue_bytes: int = 16 << 20) -> None:
        self.router = router
        self.json_path = json_path
        self.realm_name: str = options.get("realm", "")
        realm = router.realms.get(self.realm_name) if router is not None else None
        if realm is None:
            raise ConfigError(f"{json_path}.options.realm: realm {self.realm_name!r} is not "
                              "defined in this worker's realms")
        self.realm = realm
        self.role: str = options.get("role") or "anonymous"
        auth = options.get("auth")
        # Without auth every client joins anonymously in ``role`` (what Crossbar's docs say
        # the option means; Crossbar itself always gives role "anonymous" then).
        self.auth_config: dict = auth if auth else {
            "anonymous": {"type": "static", "role": self.role}}
        self.mapping = PayloadMapping(options.get("payload_mapping"), router, self.realm_name)
        def limit(key: str) -> int:
            return int(options.get(key, DEFAULTS[key]))

        self.max_message_size = limit("max_message_size")
        self.max_inflight = self.max_inflight_messages = limit("max_inflight_messages")
        self.max_queued = self.max_queued_messages = limit("max_queued_messages")
        self.max_queued_bytes = limit("max_queued_bytes")
        self.max_offline_sessions = limit("max_offline_sessions")
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.sessions = SessionStore(self.max_offline_sessions)
        self._in: dict[str, tuple[str, Codec] | str] = {}
        self._out: dict[str, tuple[Codec, bytes] | str] = {}

    # -- topics ------------------------------------------------------------------------------
    def inbound(self, topic: str) -> tuple[str, Codec] | str:
        """(WAMP URI, codec) for an MQTT topic name, or why it has none."""
        route = self._in.get(topic)
        if route is None:
            uri = name_to_uri(topic)
            if not self.realm.valid_uri(uri, "exact"):
                route = (f"{uri[:200]!r} is not a valid WAMP URI (empty topic levels, "
                         "spaces or '#' have no WAMP form)")
            else:
                mapping = self.mapping.lookup(uri)
                route = (uri, mapping) if mapping is not None else \
                    "no payload_mapping entry covers it"
            if len(topic) <= _CACHE_KEY_MAX:
                if len(self._in) >= _CACHE_ENTRIES:
                    self._in.clear()
                self._in[topic] = route
        return route

    def outbound(self, uri: str) -> tuple[Codec, bytes] | str:
        """(codec, PUBLISH topic field) for a WAMP URI, or why it has none."""
        route = self._out.get(uri)
        if route is None:
            mapping = self.mapping.lookup(uri)
            topic = uri_to_name(uri)
            if mapping is None:
                route = "no payload_mapping entry covers it"
            elif "+" in topic or "#" in topic or "\x00" in topic:
                # a WAMP URI may hold them, an MQTT topic name may not (MQTT-3.3.2-2, 1.5.3-2)
                route = "the topic would hold '+', '#' or U+0000, which MQTT forbids"
            else:
                try:
                    route = (mapping, codec.topic_field(topic))
                except ValueError as e:   # a JSON client's lone "\ud800", a huge URI
                    route = str(e)
            if len(uri) <= _CACHE_KEY_MAX:
                if len(self._out) >= _CACHE_ENTRIES:
                    self._out.clear()
                self._out[uri] = route
        return route

    # -- CONNECT -----------------------------------------------------------------------------
    def connect(self, conn: Any, pkt: codec.Connect) -> MqttSession | None:
        """Authenticate, then take over / resume / start the client's session and answer
        CONNACK (on the connection's queue). None when refused (CONNACK sent)."""
        client_id = pkt.client_id
        if not client_id:
            if not pkt.clean:
                conn.write(codec.connack(False, codec.REFUSED_IDENTIFIER))  # MQTT-3.1.3-8
                log.info("%s: refused: empty client identifier with a persistent session",
                         conn.who())
                return None
            client_id = f"geonode-{new_id():x}"                              # MQTT-3.1.3-6
        details = dict(conn.details)
        details["mqtt"] = {"client_id": client_id, "protocol_level": codec.PROTOCOL_LEVEL}
        candidate = MqttSession(self, client_id, pkt.clean, details)
        code = candidate.authenticate(pkt)
        if code != codec.ACCEPTED:
            candidate.end()
            conn.write(codec.connack(False, code))
            return None
        existing = self.sessions.get(client_id)
        present = False
        session = candidate
        if existing is not None:
            if not existing.same_principal(candidate):
                # Another principal's client id: neither taken over nor resumed.
                log.warning("%s: refused: client id %r belongs to a session of another "
                            "principal", conn.who(), client_id[:200])
                candidate.end()
                conn.write(codec.connack(False, codec.REFUSED_NOT_AUTHORIZED))
                return None
            old = existing.conn
            if old is not None:
                log.info("%s: takes over client id %r from %s", conn.who(), client_id[:200],
                         old.who())
                old.taken_over()      # MQTT-3.1.4-2: the old connection goes, no will
            if pkt.clean or existing.clean:
                existing.end()
            else:
                candidate.end()
                session, present = existing, True
        self.sessions.put(session)
        session.attach(conn, pkt.will)
        conn.write(codec.connack(present, codec.ACCEPTED))
        if present:
            session.resume()
        return session

    def close(self) -> None:
        """Transport stopped: every session ends (their WAMP sessions leave)."""
        self.sessions.close_all()


__all__ = ["MqttService", "DEFAULTS"]
