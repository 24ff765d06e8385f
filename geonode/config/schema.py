"""The Crossbar.io v2 node config as a JSON Schema (Draft 2020-12), and its validation.

Every object is closed (``additionalProperties: false``), so a typo is an error, not a silently
ignored key. Where the Crossbar format has a ``type`` discriminator (workers, transports, path
services, components, auth methods) the schema dispatches with ``if``/``then`` on that one key:
each object is checked against exactly its own subschema, so errors are specific
("'module' is required") instead of the noise ``oneOf`` produces. Types Crossbar has but geonode
does not implement are rejected by name.

``version_errors(data)``, then ``schema_errors(data)``, return short lines, each led by the JSON
path of the offending key, e.g. ``workers[0].transports[0].paths.api.module: 'module' is
required``. Checks a schema cannot express (realm references, duplicate names, files that must
exist) run afterwards (``geonode.config.semantic``; ``geonode.config.load`` runs all three).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from geonode.config.environ import join_path

NOT_SUPPORTED = "is not supported by geonode"

REALM_NAME = r"^[A-Za-z][A-Za-z0-9_\-@.]{2,254}$"  # autobahn's _URI_PAT_REALM_NAME
ITEM_ID = r"^[a-z][a-z0-9_]{2,63}$"  # Crossbar's config item id
WEB_PATH = r"^([A-Za-z0-9_\-]+|/)$"
COOKIE_NAME = r"^[a-z][a-z0-9_]+$"
URI_PATTERN = r"^(([^\s.#]+\.)|\.)*([^\s.#]+)?$"  # autobahn's loose URI, empty parts allowed
PROCEDURE = r"^([^\s.#]+\.)*([^\s.#]+)$"  # autobahn's loose non-empty URI
SERIALIZERS = ["json", "msgpack", "cbor", "ubjson", "flatbuffers"]

UNSUPPORTED_WORKERS = {
    "proxy": "", "hostmonitor": "", "xbrmm": "", "marketplace": "",
}
UNSUPPORTED_TRANSPORTS = {
    "flashpolicy": "", "websocket.testee": "use a 'websocket-testee' path service",
    "stream.testee": "",
}
# Crossbar path services geonode does not implement: rejected by name, with a hint where one helps.
# (The ones it does implement: SERVICE_SCHEMAS below, one schema per entry of the path service
# registry, geonode.web.services.SERVICES.)
UNSUPPORTED_SERVICES = {
    "resource": "a Twisted Web resource class; geonode hosts a web app (Flask, Django, any "
                "WSGI app) as a 'wsgi' path service instead",
    "fileupload": "Crossbar 0.x's name; use an 'upload' path service",
    "cgi": "", "catalog": "", "mqtt": "", "schemadoc": "",
}
# Crossbar keys (per object) of features geonode does not implement: "not supported", not
# "unknown key", so a Crossbar user knows the key is right but the feature is missing.
UNSUPPORTED_KEYS = {
    "controller": {"enable_docker": ""},
    "realm": {"inventory": "payload validation",
              "rlinks": "router-to-router links; geonode spreads a realm over several "
                        "processes or hosts with its Redis backplane instead (docs/scaling.md)"},
    "router": {"connections": "database connections"},
    "container": {"connections": "database connections"},
}
UNSUPPORTED_COMPONENTS = {"function": "use a 'class' component"}
UNSUPPORTED_AUTH = {"cryptosign-proxy": "", "anonymous-proxy": ""}

_ANY = True


def obj(properties: dict, required: Iterable[str] = (), unsupported: str = "",
        **extra: Any) -> dict:
    """A closed object schema; ``unsupported`` names its entry in ``UNSUPPORTED_KEYS``."""
    s: dict = {"type": "object", "properties": properties, "additionalProperties": False}
    if unsupported:
        s["x-unsupported"] = UNSUPPORTED_KEYS[unsupported]
    if required:
        s["required"] = list(required)
    s.update(extra)
    return s


STR = {"type": "string"}
BOOL = {"type": "boolean"}
INT = {"type": "integer"}
STR_LIST = {"type": "array", "items": STR}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
MS = {"type": "integer", "minimum": 0}
ID = {"type": "string", "pattern": ITEM_ID}


def dispatch(kinds: dict[str, dict], known_label: str) -> dict:
    """Object with a ``type`` key, each value of ``type`` checked against its own subschema.

    The ``enum`` on ``type`` lists the known types; the error for any other value is turned into
    "not supported by geonode" or "unknown ... type" by the error formatter.
    """
    return {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"type": "string", "enum": sorted(kinds), "x-kind": known_label}},
        "allOf": [
            {"if": {"properties": {"type": {"const": name}}, "required": ["type"]},
             "then": sub}
            for name, sub in kinds.items()
        ],
    }


# --- endpoints (§2) -------------------------------------------------------------------------

TLS = obj({
    "key": STR, "certificate": STR, "chain_certificates": STR_LIST, "ca_certificates": STR_LIST,
    "dhparam": STR, "ciphers": STR,
}, required=["key", "certificate"])

ENDPOINT = dispatch({
    "tcp": obj({
        "type": STR, "port": PORT, "interface": STR, "version": {"enum": [4, 6]},
        "backlog": {"type": "integer", "minimum": 1, "maximum": 65535}, "shared": BOOL,
        "user_timeout": {"type": "integer", "minimum": 0, "maximum": 65535}, "tls": TLS,
    }, required=["port"]),
    "unix": obj({"type": STR, "path": STR,
                 "backlog": {"type": "integer", "minimum": 1, "maximum": 65535}},
                required=["path"]),
}, "endpoint")

# --- authentication (§5) --------------------------------------------------------------------

PROC = {"type": "string", "pattern": PROCEDURE}

# "authenticator-role" is accepted and has no effect: geonode's router calls the authenticator
# as itself, so no role's permissions apply to that call.
DYNAMIC_AUTH = obj({"type": STR, "authenticator": PROC, "authenticator-realm": STR,
                    "authenticator-role": STR}, required=["authenticator"])


# Crossbar's "function" authenticator: ``create`` names a factory (module.name) called with
# ``config`` (geonode.router.auth.function_authenticator).
FUNCTION_AUTH = obj({"type": STR, "create": {"type": "string", "pattern": r"^[\w.]+\.\w+$"},
                     "config": {"type": "object"}, "expose_controller": BOOL},
                    required=["create"])


def auth_method(static: dict) -> dict:
    return dispatch({"static": static, "dynamic": DYNAMIC_AUTH, "function": FUNCTION_AUTH},
                    "authentication")


SCRAM_PRINCIPAL = obj({
    "kdf": {"enum": ["argon2id-13", "pbkdf2"]}, "iterations": {"type": "integer", "minimum": 1},
    "memory": {"type": "integer", "minimum": -1},
    "salt": {"type": "string", "pattern": "^([0-9a-fA-F]{2})+$"},
    "stored-key": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
    "server-key": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
    "role": STR, "realm": STR, "authid": STR, "extra": {"type": "object"},
}, required=["kdf", "iterations", "memory", "salt", "stored-key", "server-key"])


AUTH = obj({
    "anonymous": auth_method(obj({"type": STR, "role": STR, "authid": STR, "realm": STR})),
    "ticket": auth_method(obj({
        "type": STR,
        "principals": {"type": "object", "additionalProperties": obj(
            {"ticket": STR, "role": STR, "realm": STR}, required=["ticket"])},
    }, required=["principals"])),
    "wampcra": auth_method(obj({
        "type": STR,
        "users": {"type": "object", "additionalProperties": obj(
            {"secret": STR, "role": STR, "realm": STR, "salt": STR,
             "iterations": {"type": "integer", "minimum": 1},
             "keylen": {"type": "integer", "minimum": 1}}, required=["secret"])},
    }, required=["users"])),
    "cryptosign": auth_method(obj({
        "type": STR,
        "principals": {"type": "object", "additionalProperties": obj(
            {"authorized_keys": {"type": "array", "items": {"type": "string",
                                                             "pattern": "^[0-9a-fA-F]{64}$"}},
             "role": STR, "realm": STR}, required=["authorized_keys"])},
    }, required=["principals"])),
    "scram": auth_method(obj({
        "type": STR, "principals": {"type": "object", "additionalProperties": SCRAM_PRINCIPAL},
    }, required=["principals"])),
    "tls": auth_method(obj({
        "type": STR,
        "principals": {"type": "object", "additionalProperties": obj(
            {"certificate-sha1": {"type": "string",
                                  "pattern": "^[0-9a-fA-F]{2}(:?[0-9a-fA-F]{2}){19}$"},
             "role": STR, "realm": STR, "extra": {"type": "object"}},
            required=["certificate-sha1"])},
    }, required=["principals"])),
    # nothing to configure: logins come from the transport's cookie store
    "cookie": obj({"type": {"enum": ["static"]}}),
}, **{"x-kind": "auth"})

# --- WebSocket (§5) ---------------------------------------------------------------------------

WEBSOCKET_OPTIONS = obj({
    "allowed_origins": STR_LIST, "allow_null_origin": BOOL, "external_port": PORT,
    "enable_hybi10": BOOL, "enable_rfc6455": BOOL, "open_handshake_timeout": MS,
    "close_handshake_timeout": MS, "enable_webstatus": BOOL, "validate_utf8": BOOL,
    "mask_server_frames": BOOL, "require_masked_client_frames": BOOL, "apply_mask": BOOL,
    "max_frame_size": {"type": "integer", "minimum": 0},
    "max_message_size": {"type": "integer", "minimum": 0},
    "auto_fragment_size": {"type": "integer", "minimum": 0}, "fail_by_drop": BOOL,
    "echo_close_codereason": BOOL, "tcp_nodelay": BOOL, "auto_ping_interval": MS,
    "auto_ping_timeout": MS, "auto_ping_size": {"type": "integer", "minimum": 12, "maximum": 125},
    "auto_ping_restart_on_any_traffic": BOOL, "enable_flash_policy": BOOL, "flash_policy": _ANY,
    "compression": {"type": "object"}, "require_websocket_subprotocol": BOOL,
    "show_server_version": BOOL,
    # geonode: bound of a WAMP connection's outgoing queue (over it the connection is closed).
    "max_queue": {"type": "integer", "minimum": 1},
    "max_queue_bytes": {"type": "integer", "minimum": 1},
})

COOKIE = obj({
    "name": {"type": "string", "pattern": COOKIE_NAME}, "length": {"type": "integer",
                                                                   "minimum": 6, "maximum": 64},
    "max_age": {"type": "integer", "minimum": 1, "maximum": 86400 * 360 * 10},
    "store": dispatch({
        "memory": obj({"type": STR, "max_cookies": {"type": "integer", "minimum": 1}}),
        "file": obj({"type": STR, "filename": {"type": "string", "minLength": 1},
                     "purge_on_startup": BOOL,
                     "max_cookies": {"type": "integer", "minimum": 1}},
                    required=["filename"]),
    }, "cookie store"),
    "secure": BOOL, "http_strict": BOOL,
    "same_site": {"enum": ["Strict", "Lax", "None"]},
})

SERIALIZER_LIST = {"type": "array", "items": {"enum": SERIALIZERS}}

# --- path services (§3, §4, §6) --------------------------------------------------------------

BASE = {"id": ID, "type": STR}
BRIDGE_OPTIONS = {
    "debug": BOOL, "key": STR, "secret": STR, "require_tls": BOOL, "require_ip": STR_LIST,
    "post_body_limit": {"type": "integer", "minimum": 0, "maximum": 2 ** 20},
    "timestamp_delta_limit": {"type": "integer", "minimum": 0, "maximum": 86400},
    # geonode: a bridge call that never answers ends with 504 after this many seconds.
    "timeout": {"type": "number", "exclusiveMinimum": 0},
}

# geonode (geonode.web.limits): request body bound of a path / a web transport; null: none.
BODY_SIZE = {"type": ["integer", "null"], "minimum": 0}
# Crossbar's name (read, never enforced, by its WebSocket factory); geonode: per endpoint.
MAX_CONNECTIONS = {"type": "integer", "minimum": 1}
# geonode: seconds, or null for no bound.
SECONDS = {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 86400}

SERVICE_SCHEMAS: dict[str, dict] = {
    "wsgi": obj({
        **BASE, "module": STR, "object": STR, "max_body_size": BODY_SIZE,
        "minthreads": {"type": "integer", "minimum": 0},
        "maxthreads": {"type": "integer", "minimum": 1},
        # geonode: false runs the app on the hub as greenlets (gevent-aware apps only).
        "threads": BOOL,
        # geonode: an in-process WAMP session for the app (geonode.wamp.session).
        "wamp": obj({"realm": STR, "role": STR, "authid": STR}, required=["realm", "role"]),
    }, required=["module", "object"]),
    "websocket": obj({
        **BASE, "serializers": SERIALIZER_LIST, "options": WEBSOCKET_OPTIONS, "auth": AUTH,
        "cookie": COOKIE, "url": STR, "debug": BOOL,
    }),
    "websocket-testee": obj({**BASE, "options": WEBSOCKET_OPTIONS}),
    # WAMP over HTTP long-poll (geonode.web.services.longpoll): Crossbar's options, seconds
    # and counts; geonode's max_sessions / max_body_size bound what clients can hold.
    "longpoll": obj({**BASE, "options": obj({
        "debug": BOOL, "debug_transport_id": STR,
        "request_timeout": {"type": "integer", "minimum": 0, "maximum": 3600},
        "session_timeout": {"type": "integer", "minimum": 0, "maximum": 86400},
        "queue_limit_bytes": {"type": "integer", "minimum": 1},
        "queue_limit_messages": {"type": "integer", "minimum": 1},
        "max_sessions": {"type": "integer", "minimum": 1},
        "max_body_size": {"type": "integer", "minimum": 1},
    }), "serializers": SERIALIZER_LIST}),
    "static": obj({
        **BASE, "directory": STR, "package": STR, "resource": STR,
        "options": obj({
            "enable_directory_listing": BOOL,
            "mime_types": {"type": "object", "additionalProperties": STR},
            "cache_timeout": {"type": ["integer", "null"], "minimum": 0},
            "default_file": STR,
        }),
    }),
    "redirect": obj({**BASE, "url": STR}, required=["url"]),
    "json": obj({**BASE, "value": _ANY, "options": obj({
        "prettify": BOOL, "allow_cross_origin": BOOL, "discourage_caching": BOOL})},
        required=["value"]),
    "nodeinfo": obj(BASE),
    # geonode additions (issue 13, docs/observability.md)
    "metrics": obj(BASE),
    "health": obj(BASE),
    "status": obj({**BASE, "realm": STR, "role": STR, "auth": AUTH},
                  required=["realm"]),
    "none": obj(BASE),
    "path": obj({**BASE, "paths": {"$ref": "#/$defs/paths"}}, required=["paths"]),
    "reverseproxy": obj({
        **BASE, "host": STR, "port": PORT, "path": STR, "forwarded_port": PORT,
        "forwarded_proto": {"enum": ["http", "https"]},
        # geonode: an upstream silent for this many seconds ends the request with 504.
        "timeout": {"type": "number", "exclusiveMinimum": 0},
        "max_body_size": BODY_SIZE,
    }, required=["host"]),
    # geonode.web.services.wap / archive / upload / wsproxy (docs/services.md): Crossbar's keys
    "wap": obj({
        **BASE, "path": STR, "sandbox": BOOL,
        "templates": {"anyOf": [STR, obj({"package": STR, "resource": STR},
                                         required=["package", "resource"])]},
        "routes": {"type": "array", "items": obj({
            "path": STR, "method": {"enum": ["GET", "POST"]},
            "call": {"type": ["string", "null"], "pattern": PROCEDURE}, "render": STR},
            required=["path", "render"])},
        "wamp": obj({"realm": STR, "authrole": STR, "authid": STR},
                    required=["realm", "authrole"]),
        "max_body_size": BODY_SIZE,
        # geonode: a call that never answers ends with 504 after this many seconds
        "timeout": {"type": "number", "exclusiveMinimum": 0},
    }, required=["templates", "routes", "wamp"]),
    "archive": obj({
        **BASE, "archive": STR, "origin": STR, "download": BOOL, "cache": BOOL,
        "default_object": STR, "object_prefix": STR,
        "mime_types": {"type": "object", "additionalProperties": STR},
        "hashes": {"type": "array", "items": {"type": "string",
                                               "pattern": "^[0-9a-fA-F]{64}$"}},
        "options": obj({"default_file": STR}),
    }, required=["archive"]),
    "upload": obj({
        **BASE, "realm": STR, "role": STR, "directory": STR, "temp_directory": STR,
        "form_fields": obj({
            **{k: STR for k in ("file_name", "mime_type", "total_size", "chunk_number",
                                "chunk_size", "total_chunks", "content", "on_progress",
                                "session", "chunk_extra", "finish_extra")},
        }, required=["file_name", "mime_type", "total_size", "chunk_number", "chunk_size",
                     "total_chunks", "content"]),
        "options": obj({
            "max_file_size": {"type": "integer", "minimum": 0},
            "file_types": STR_LIST,
            "file_permissions": {"type": "string", "pattern": "^0?[0-7]{3}$"},
        }),
    }, required=["realm", "role", "directory", "form_fields"]),
    "websocket-reverseproxy": obj({
        **BASE, "url": STR, "options": WEBSOCKET_OPTIONS,
        "backend": obj({"type": {"const": "websocket"}, "endpoint": {"$ref": "#/$defs/connect"},
                        "url": STR, "options": {"type": "object"},
                        "serializers": SERIALIZER_LIST},
                       required=["type", "endpoint"]),
    }, required=["backend"]),
    "publisher": obj({**BASE, "realm": STR, "role": STR, "options": obj(BRIDGE_OPTIONS)},
                     required=["realm", "role"]),
    "caller": obj({**BASE, "realm": STR, "role": STR, "options": obj(BRIDGE_OPTIONS)},
                  required=["realm", "role"]),
    "webhook": obj({**BASE, "realm": STR, "role": STR, "options": obj({
        "debug": BOOL, "topic": STR, "success_response": STR, "error_response": STR,
        "github_secret": STR, "timeout": {"type": "number", "exclusiveMinimum": 0},
        "post_body_limit": {"type": "integer", "minimum": 0, "maximum": 2 ** 20},
    }, required=["topic"])}, required=["realm", "role", "options"]),
}


PATHS = {
    "type": "object",
    "propertyNames": {"pattern": WEB_PATH},
    "additionalProperties": {"$ref": "#/$defs/service"},
}

# --- transports -------------------------------------------------------------------------------

WEB_TRANSPORT_OPTIONS = obj({
    "access_log": BOOL, "display_tracebacks": BOOL, "hsts": BOOL,
    "hsts_max_age": {"type": "integer", "minimum": 0},
    "client_timeout": {"type": ["integer", "null"], "minimum": 1, "maximum": 86400},
    "request_head_timeout": SECONDS, "keepalive_timeout": SECONDS,
    "max_body_size": BODY_SIZE, "max_connections": MAX_CONNECTIONS,
    # geonode (gunicorn's name): proxies whose X-Forwarded-*/Forwarded headers count
    "forwarded_allow_ips": {"oneOf": [STR, {"type": "array", "items": STR}]},
})
WEB_TRANSPORT = obj({
    "id": ID, "type": STR, "endpoint": ENDPOINT, "paths": {"$ref": "#/$defs/paths"},
    "options": WEB_TRANSPORT_OPTIONS,
}, required=["endpoint", "paths"])

RAWSOCKET_KEYS = {
    "id": ID, "type": STR, "serializers": SERIALIZER_LIST, "debug": BOOL,
    # Crossbar 0.x's one-serializer form; "serializers" wins when both are given
    "serializer": {"enum": SERIALIZERS},
    "options": obj({"max_message_size": {"type": "integer", "minimum": 512,
                                         "maximum": 64 * 1024 * 1024},
                    "max_queue": {"type": "integer", "minimum": 1},
                    "max_queue_bytes": {"type": "integer", "minimum": 1},
                    "max_connections": MAX_CONNECTIONS}),
    "auth": AUTH,
}
RAWSOCKET_TRANSPORT = obj({**RAWSOCKET_KEYS, "endpoint": ENDPOINT}, required=["endpoint"])

# Crossbar's stand-alone WebSocket transport: WAMP on every path of its endpoint.
WEBSOCKET_TRANSPORT = obj({
    "id": ID, "type": STR, "endpoint": ENDPOINT, "url": STR, "serializers": SERIALIZER_LIST,
    "debug": BOOL, "options": WEBSOCKET_OPTIONS, "auth": AUTH, "cookie": COOKIE,
}, required=["endpoint"])

# MQTT (docs/mqtt.md): Crossbar's options, plus geonode's limits (geonode.mqtt.service).
_MQTT_MATCH = {"enum": ["prefix"]}   # Crossbar's examples write it; prefix is all there is
_MQTT_PASSTHROUGH = obj({"type": STR, "match": _MQTT_MATCH})
MQTT_PAYLOAD_MAPPING = {
    "type": "object",
    "propertyNames": {"pattern": URI_PATTERN},
    "additionalProperties": dispatch({
        "passthrough": _MQTT_PASSTHROUGH,
        "passthru": _MQTT_PASSTHROUGH,
        "native": obj({"type": STR, "match": _MQTT_MATCH,
                       "serializer": {"enum": ["json", "msgpack", "cbor", "ubjson"]}},
                      required=["serializer"]),
        "dynamic": obj({"type": STR, "match": _MQTT_MATCH,
                        "realm": {"type": "string", "pattern": REALM_NAME},
                        "encoder": PROC, "decoder": PROC}, required=["encoder", "decoder"]),
    }, "payload mapping"),
}
MQTT_TRANSPORT = obj({
    "id": ID, "type": STR, "endpoint": ENDPOINT,
    "options": obj({
        "realm": {"type": "string", "pattern": REALM_NAME}, "role": STR, "auth": AUTH,
        "payload_mapping": MQTT_PAYLOAD_MAPPING,
        "max_message_size": {"type": "integer", "minimum": 64, "maximum": 268_435_455},
        "max_inflight_messages": {"type": "integer", "minimum": 1, "maximum": 65535},
        "max_queued_messages": {"type": "integer", "minimum": 0},
        "max_queued_bytes": {"type": "integer", "minimum": 0},
        "max_offline_sessions": {"type": "integer", "minimum": 0},
        "max_queue": {"type": "integer", "minimum": 1},
        "max_queue_bytes": {"type": "integer", "minimum": 1},
        "max_connections": MAX_CONNECTIONS,
    }, required=["realm"]),
}, required=["endpoint", "options"])

# One port, protocol by the first byte (geonode.web.universal): RawSocket (0x7F), else HTTP,
# whose request path picks a "websocket" entry or else the "web" paths.
UNIVERSAL_TRANSPORT = obj({
    "id": ID, "type": STR, "endpoint": ENDPOINT,
    "rawsocket": obj(RAWSOCKET_KEYS),
    "websocket": {"type": "object", "propertyNames": {"pattern": WEB_PATH},
                  "additionalProperties": SERVICE_SCHEMAS["websocket"]},
    "web": obj({"paths": {"$ref": "#/$defs/paths"}, "options": WEB_TRANSPORT_OPTIONS},
               required=["paths"]),
    # MQTT (first octet 0x10, CONNECT): the mqtt transport's options
    "mqtt": obj({"options": MQTT_TRANSPORT["properties"]["options"]}, required=["options"]),
}, required=["endpoint"])

TRANSPORT = dispatch({"web": WEB_TRANSPORT, "rawsocket": RAWSOCKET_TRANSPORT,
                      "websocket": WEBSOCKET_TRANSPORT, "universal": UNIVERSAL_TRANSPORT,
                      "mqtt": MQTT_TRANSPORT}, "transport")

# --- realms, roles (§5) -------------------------------------------------------------------------

PERMISSION = obj({
    "uri": {"type": "string", "pattern": URI_PATTERN},
    "match": {"enum": ["exact", "prefix", "wildcard"]},
    "allow": obj({"call": BOOL, "register": BOOL, "publish": BOOL, "subscribe": BOOL}),
    "disclose": obj({"caller": BOOL, "publisher": BOOL}),
    "validate": {"type": "object"}, "cache": BOOL,
}, required=["uri"])

ROLE = obj({"id": STR, "name": STR, "permissions": {"type": "array", "items": PERMISSION},
            "authorizer": PROC, "disclose": obj({"caller": BOOL, "publisher": BOOL}),
            # Crossbar 0.x: a URI no permission matches is allowed, not denied
            "allow-by-default": BOOL},
           required=["name"])

REALM = obj({
    "id": STR, "name": {"type": "string", "pattern": REALM_NAME},
    "roles": {"type": "array", "items": ROLE},
    "options": obj({
        "enable_meta_api": BOOL, "bridge_meta_api": BOOL,
        "uri_check": {"enum": ["strict", "loose"]},
        # geonode: longest URI accepted (geonode.uri.MAX_URI_LENGTH, docs/security.md)
        "max_uri_length": {"type": "integer", "minimum": 1, "maximum": 64 * 1024 * 1024},
        "event_dispatching_chunk_size": {"type": "integer", "minimum": 1},
    }),
    # event history (retained events), Crossbar's realm store
    "store": {"type": "object"},
    # Crossbar's realm statistics events and message tracing: accepted, not acted on
    # (geonode.config.semantic.warnings says so)
    "stats": {"type": "object"}, "trace": BOOL,
}, required=["name"], unsupported="realm")

COMPONENT = dispatch({
    "class": obj({"id": STR, "type": STR, "classname": STR, "realm": STR, "role": STR,
                  "extra": _ANY, "references": STR_LIST}, required=["classname", "realm"]),
}, "component")

# --- workers, top level (§1) ----------------------------------------------------------------

WORKER_OPTIONS = obj({
    "title": STR, "pythonpath": STR_LIST,
    "env": obj({"inherit": {"type": ["boolean", "array"], "items": STR},
                "vars": {"type": "object", "additionalProperties": STR}}),
    "cpu_affinity": {"type": "array", "items": INT}, "expose_controller": BOOL,
    "expose_shared": BOOL, "disabled": {"type": ["boolean", "string"]}, "extra": _ANY,
    "python": STR,
    # geonode: failed authentications slowed per address and authid (router/auth/throttle.py,
    # where the defaults and their reasons are; docs/security.md)
    "auth_throttle": obj({
        "delay": {"type": "number", "minimum": 0, "maximum": 3600},
        "max_delay": {"type": "number", "minimum": 0, "maximum": 3600},
        "max_pending_per_address": {"type": "integer", "minimum": 1},
        "max_pending_per_authid": {"type": "integer", "minimum": 1},
        "forget_after": {"type": "number", "exclusiveMinimum": 0},
        "max_addresses": {"type": "integer", "minimum": 1},
        "max_authids": {"type": "integer", "minimum": 1},
    }),
    # geonode: one router across processes (issue 11); the backplane's own module owns the
    # meaning of its keys, this only admits the object
    "backplane": {"type": "object", "properties": {
        "type": {"enum": ["redis"]}, "url": STR, "prefix": STR,
    }, "required": ["type", "url"], "additionalProperties": True},
})

# geonode (issue 11): several processes / machines as one router over Redis; defaults and why
# in geonode/config/backplane.py, docs/scaling.md
BACKPLANE = obj({
    "type": {"enum": ["redis"]},
    "url": {"type": "string", "pattern": r"^(redis|rediss|unix)://."},
    "prefix": {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]{1,64}$"},
    "heartbeat": {"type": "number", "minimum": 0.05, "maximum": 60},
    "timeout": {"type": "number", "minimum": 0.2, "maximum": 600},
    "connect_timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 60},
    "max_queue": {"type": "integer", "minimum": 100},
    "max_queue_bytes": {"type": "integer", "minimum": 65536},
    # a rediss:// url's files, named as a connecting endpoint's (CONNECTING_TLS)
    "tls": obj({"ca_certificates": STR_LIST, "certificate": STR, "key": STR}),
}, required=["type", "url"])
WORKER_OPTIONS["properties"]["backplane"] = BACKPLANE

ROUTER_WORKER = obj({
    "id": ID, "type": STR, "options": WORKER_OPTIONS,
    "realms": {"type": "array", "items": REALM},
    "transports": {"type": "array", "items": TRANSPORT},
    "components": {"type": "array", "items": COMPONENT},
}, unsupported="router")

# Crossbar's echo worker for Autobahn|Testsuite: its transport serves the websocket-testee
# service on every path.
TESTEE_WORKER = obj({
    "id": ID, "type": STR, "options": WORKER_OPTIONS,
    "transport": obj({"id": ID, "type": {"const": "websocket"}, "endpoint": ENDPOINT,
                      "url": STR, "debug": BOOL, "options": WEBSOCKET_OPTIONS},
                     required=["endpoint"]),
}, required=["transport"])

# --- container and guest workers (geonode/workers/, docs/workers.md) -------------------------

CONNECTING_TLS = obj({"hostname": STR, "certificate": STR, "key": STR,
                      "ca_certificates": STR_LIST})
CONNECTING_ENDPOINT = dispatch({
    "tcp": obj({"type": STR, "host": STR, "port": PORT, "version": {"enum": [4, 6]},
                "timeout": {"type": "integer", "minimum": 1}, "tls": CONNECTING_TLS},
               required=["host", "port"]),
    "unix": obj({"type": STR, "path": STR, "timeout": {"type": "integer", "minimum": 1}},
                required=["path"]),
}, "endpoint")
CONNECTING_TRANSPORT = dispatch({
    "websocket": obj({"type": STR, "endpoint": CONNECTING_ENDPOINT, "url": STR,
                      "serializers": SERIALIZER_LIST, "options": {"type": "object"}},
                     required=["endpoint", "url"]),
    "rawsocket": obj({"type": STR, "endpoint": CONNECTING_ENDPOINT, "url": STR,
                      "serializer": {"enum": SERIALIZERS}, "serializers": SERIALIZER_LIST,
                      "options": {"type": "object"}}, required=["endpoint"]),
}, "transport")
CONTAINER_COMPONENT = dispatch({
    "class": obj({"id": STR, "type": STR, "classname": STR, "realm": STR, "extra": _ANY,
                  "transport": CONNECTING_TRANSPORT},
                 required=["classname", "realm", "transport"]),
    "function": obj({"id": STR, "type": STR, "realm": STR, "role": STR, "extra": _ANY,
                     "transport": CONNECTING_TRANSPORT, "auth": {"type": "object"},
                     "callbacks": obj({"join": STR, "leave": STR, "connect": STR,
                                       "disconnect": STR})},
                    required=["realm", "transport"]),
}, "component")
RESTART = {"enum": ["restart-always", "restart-on-failed", "restart-never"]}
CONTAINER_WORKER = obj({
    "id": ID, "type": STR, "components": {"type": "array", "items": CONTAINER_COMPONENT},
    "options": obj({
        **WORKER_OPTIONS["properties"], "restart": RESTART,
        "shutdown": {"enum": ["shutdown-manual", "shutdown-on-last-component-stopped",
                              "shutdown-on-any-component-failed",
                              "shutdown-on-any-component-stopped"]},
        "reactor": {"type": "object"},  # Crossbar's reactor choice per platform: ignored
        # geonode: the components' framework; "auto" detects it from their classes
        "framework": {"enum": ["auto", "twisted", "asyncio"]},
    }),
    "manhole": {"type": "object"},
}, unsupported="container")
GUEST_WORKER = obj({
    "id": ID, "type": STR, "executable": STR, "arguments": STR_LIST,
    "options": obj({
        "env": WORKER_OPTIONS["properties"]["env"], "workdir": STR,
        "stdin": {"anyOf": [{"const": "close"}, obj({"type": {"const": "json"}, "value": _ANY,
                                                     "close": BOOL}, required=["type"])]},
        "stdout": {"enum": ["close", "log", "drop"]}, "stderr": {"enum": ["close", "log", "drop"]},
        "watch": obj({"directories": STR_LIST, "action": {"enum": ["restart"]},
                      "timeout": {"type": "number", "minimum": 0}}),
        "restart": RESTART,  # geonode: Crossbar never restarts a guest
        "disabled": {"type": ["boolean", "string"]},
    }),
}, required=["executable"])

WORKER = dispatch({"router": ROUTER_WORKER, "container": CONTAINER_WORKER,
                   "guest": GUEST_WORKER, "websocket-testee": TESTEE_WORKER}, "worker")

SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://geonode.invalid/node-config-v2.json",
    "title": "geonode node configuration (Crossbar.io v2 format)",
    **obj({
        "$schema": STR,
        "version": {"const": 2},
        "controller": obj({
            "id": ID,
            "options": obj({
                "title": STR,
                "shutdown": {"type": ["string", "array"], "items": STR},
                "enable_parallel_worker_start": BOOL,
                # geonode: the whole graceful stop, seconds (--shutdown-timeout; geonode.node)
                "shutdown_timeout": {"type": "number", "minimum": 0, "maximum": 3600},
                # geonode: the garbage collector's policy (geonode.gcpolicy, docs/sessions.md)
                "gc": obj({
                    "policy": {"enum": ["auto", "default", "freeze"]},
                    "backstop_interval": {"type": "number", "minimum": 1, "maximum": 604800},
                    "backstop_growth": {"type": "number", "exclusiveMinimum": 0,
                                        "maximum": 100},
                }),
            }),
            # Crossbar FX's uplink to its management master: accepted, not acted on (there is
            # no master to connect to; geonode.config.semantic.warnings says so)
            "fabric": {"type": "object"},
        }, unsupported="controller"),
        "workers": {"type": "array", "items": WORKER},
    }, required=["version"]),
    "$defs": {
        "paths": PATHS,
        "service": dispatch(SERVICE_SCHEMAS, "service"),
        "connect": CONNECTING_ENDPOINT,   # a websocket-reverseproxy's backend
    },
}

_VALIDATOR = Draft202012Validator(SCHEMA)

# --- error messages ---------------------------------------------------------------------------

_UNSUPPORTED_BY_KIND: dict[str, dict[str, str]] = {
    "worker": UNSUPPORTED_WORKERS,
    "transport": UNSUPPORTED_TRANSPORTS,
    "service": UNSUPPORTED_SERVICES,
    "component": UNSUPPORTED_COMPONENTS,
    "endpoint": {"twisted": "", "onion": "", "tor": ""},
    "cookie store": {"database": "use a 'file' store"},
}

_PATTERN_HINTS = {
    REALM_NAME: "a realm name starts with a letter and has 3-255 letters, digits or _ - @ .",
    ITEM_ID: "an id is 3-64 lower-case letters, digits or '_', starting with a letter",
    COOKIE_NAME: "a cookie name is lower-case letters, digits or '_', starting with a letter",
    "^[0-9a-fA-F]{64}$": "64 hex digits (a public key, a SHA-256 hash or a SCRAM key)",
    "^0?[0-7]{3}$": "file permissions are an octal mode such as '0644'",
    "^([0-9a-fA-F]{2})+$": "hex digits, an even number of them",
    "^[0-9a-fA-F]{2}(:?[0-9a-fA-F]{2}){19}$": "a SHA1 fingerprint: 40 hex digits, may be "
                                              "separated by ':'",
    URI_PATTERN: "a URI pattern has dot-separated parts without spaces or '#'",
    PROCEDURE: "a procedure URI has non-empty dot-separated parts without spaces or '#'",
}

_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
               int: "an integer", float: "a number", type(None): "null"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _where(parts: Iterable[Any]) -> str:
    p = ""
    for part in parts:
        p = join_path(p, part)
    return p or "(top level)"


def _format(err: ValidationError) -> list[tuple[str, str]]:
    """``[(json path, message)]`` for one jsonschema error (one entry per unknown key)."""
    where = list(err.absolute_path)
    v = err.validator
    inst = err.instance
    schema = err.schema
    if v == "required":
        missing = re.match(r"'(.*)' is a required property", err.message)
        key = missing.group(1) if missing else "?"
        return [(_where([*where, key]), f"'{key}' is required")]
    if v == "additionalProperties" and isinstance(inst, dict):
        known = set(schema.get("properties", {}))
        allowed = ", ".join(sorted(known - {"type"})) or "none"
        out = []
        for key in (k for k in inst if k not in known):
            if schema.get("x-kind") == "auth":
                if key in UNSUPPORTED_AUTH:
                    out.append((_where([*where, key]),
                                f"authentication method {key!r} {NOT_SUPPORTED} "
                                f"(supported: {allowed})"))
                else:
                    out.append((_where([*where, key]),
                                f"unknown authentication method {key!r} (known: {allowed})"))
            elif key in schema.get("x-unsupported", {}):
                what = schema["x-unsupported"][key]
                out.append((_where([*where, key]),
                            f"{key!r}{f' ({what})' if what else ''} {NOT_SUPPORTED}"))
            else:
                close = difflib.get_close_matches(str(key), sorted(known), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                out.append((_where([*where, key]),
                            f"unknown key {key!r} ({hint}allowed here: {allowed})"))
        return out
    if v == "pattern" and schema.get("pattern") == WEB_PATH:
        # propertyNames on ``paths``: jsonschema reports at the object; name the bad key.
        return [(_where([*where, inst]),
                 f"invalid path {inst!r}: a path is '/' or one segment of letters, digits, "
                 "'_' and '-' (nest deeper paths with a 'path' service)")]
    return [_format_one(err, where, v, inst, schema)]


def _format_one(err: ValidationError, where: list, v: str, inst: Any, schema: dict
                ) -> tuple[str, str]:
    if v == "enum" and where and where[-1] == "type" and "x-kind" in schema:
        kind = schema["x-kind"]
        hints = _UNSUPPORTED_BY_KIND.get(kind, {})
        if inst in hints:
            hint = f" ({hints[inst]})" if hints[inst] else ""
            return _where(where), f"{kind} type {inst!r} {NOT_SUPPORTED}{hint}"
        known = ", ".join(repr(x) for x in schema["enum"])
        close = difflib.get_close_matches(str(inst), schema["enum"], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return _where(where), f"unknown {kind} type {inst!r} ({hint}known: {known})"
    if v == "enum":
        known = ", ".join(repr(x) for x in schema["enum"])
        return _where(where), f"{inst!r} is not one of {known}"
    if v == "type":
        want = schema["type"]
        want = want if isinstance(want, list) else [want]
        names = " or ".join({"object": "an object", "array": "a list", "string": "a string",
                             "boolean": "true/false", "integer": "an integer",
                             "number": "a number", "null": "null"}.get(t, str(t)) for t in want)
        return _where(where), f"must be {names}, not {_json_type(inst)} ({_short(inst)})"
    if v == "pattern":
        hint = _PATTERN_HINTS.get(schema.get("pattern", ""), f"must match {err.validator_value}")
        return _where(where), f"invalid value {inst!r}: {hint}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        lo = schema.get("minimum", schema.get("exclusiveMinimum"))
        hi = schema.get("maximum")
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}" if "minimum" in schema else f"> {lo}"
        return _where(where), f"{inst!r} is out of range ({rng})"
    if v == "false":
        return _where(where), "not allowed here"
    return _where(where), err.message


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _leaves(errors: Iterable[ValidationError]) -> Iterable[ValidationError]:
    for e in errors:
        if e.context:
            yield from _leaves(e.context)
        else:
            yield e


def _document_order(data: Any) -> dict[str, int]:
    """Every JSON path in ``data`` → its position in the document (jsonschema's own error
    order is not the file's)."""
    order: dict[str, int] = {}

    def walk(value: Any, path: str) -> None:
        order[path or "(top level)"] = len(order)
        items = value.items() if isinstance(value, dict) else \
            enumerate(value) if isinstance(value, list) else ()
        for k, v in items:
            walk(v, join_path(path, k))

    walk(data, "")
    return order


def schema_errors(data: Any) -> list[str]:
    """Schema violations as ``path: message`` lines, one per problem, in document order."""
    found: list[tuple[str, str, bool]] = []
    for e in _leaves(_VALIDATOR.iter_errors(data)):
        for where, msg in _format(e):
            found.append((where, msg, e.validator == "type"))
    if len(found) > 1:
        order = _document_order(data)

        def position(item: tuple[str, str, bool]) -> int:
            where = item[0]
            while where not in order and where:  # a missing key: its parent's place
                where = where[:max(where.rfind("."), where.rfind("["), 0)]
            return order.get(where or "(top level)", 0)

        found.sort(key=position)
    # A value of the wrong type makes every other complaint about it (or inside it) noise.
    wrong_type = {w for w, _, is_type in found if is_type}
    out: list[str] = []
    seen: set[str] = set()
    for where, msg, is_type in found:
        if not is_type and any(where == w or where.startswith(w + ".") or
                               where.startswith(w + "[") for w in wrong_type):
            continue
        line = f"{where}: {msg}"
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out


def version_errors(data: Any) -> list[str]:
    """``[]`` for a version 2 config object, else why not (nothing else is worth checking)."""
    if not isinstance(data, dict):
        return ["(top level): the config must be an object"]
    version = data.get("version")
    if version != 2:
        if version is None or version == 1:
            return ["version: version 1 configs are not supported; geonode reads version 2"
                    + ("" if version is not None else " (add \"version\": 2)")]
        return [f"version: must be 2, not {version!r}"]
    return []

