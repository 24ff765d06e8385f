"""WAMP-SCRAM: RFC 5802's exchange as autobahn's ``AuthScram`` client speaks it (SHA-256,
KDF Argon2id or PBKDF2, no channel binding: the draft spec, wamp-proto issue 135).

The router never sees the password nor runs the KDF: a principal holds what the KDF made of
it, ``stored-key`` = SHA256(HMAC(salted, "Client Key")) and ``server-key`` =
HMAC(salted, "Server Key") (hex, Crossbar's config), with the ``salt`` (hex), ``kdf``,
``iterations`` and ``memory`` the client needs to redo the KDF. ``principal()`` makes one from
a password (argon2-cffi for Argon2id; the ``scram`` extra).

HELLO carries ``authextra.nonce`` (base64, the client's); CHALLENGE answers the server nonce
(the client's followed by 16 random bytes), salt (base64), kdf, iterations, memory;
AUTHENTICATE carries the base64 ClientProof. The router checks
``SHA256(proof XOR HMAC(stored-key, AuthMessage)) == stored-key`` and sends
``scram_server_signature`` in WELCOME's authextra so the client can check the router.

A client that lies about the nonce (a server nonce in AUTHENTICATE's extra other than the one
sent, a HELLO nonce that is not base64 or not 16-64 bytes) is refused; the proof covers the
nonces, so one computed for another exchange never verifies. An unknown authid gets a decoy
CHALLENGE shaped like a real one and fails at AUTHENTICATE (as wampcra; Crossbar refuses it at
HELLO, naming it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
from collections import Counter
from typing import Any

from geonode.router.auth import Accept, Challenge, Deny, PendingAuth
from geonode.router.errors import AUTHENTICATION_FAILED

log = logging.getLogger("geonode.router")

KDFS = ("argon2id-13", "pbkdf2")
SCRAM_FAILED = "SCRAM authentication failed"   # Crossbar's words
# Bounds on the client nonce (autobahn sends 16 bytes): enough entropy, a bounded message.
MIN_NONCE, MAX_NONCE = 16, 64
# What an unknown authid's stored key is compared with: random, so nothing verifies.
_DECOY_KEY = os.urandom(32)


def saslprep(text: str) -> str:
    """RFC 4013 SASLprep of a name, as the client applies it to its authid (passlib's, which
    autobahn's client uses too; ASCII names without control characters pass unchanged)."""
    if text.isascii() and text.isprintable():
        return text
    from passlib.utils import saslprep as _saslprep
    return _saslprep(text)


def salted_password(password: str, salt: bytes, kdf: str, iterations: int,
                    memory: int) -> bytes:
    """The KDF's output as autobahn's client computes it. Argon2id: the base64 (unpadded)
    text of the 32-byte hash, as autobahn uses it; PBKDF2-HMAC-SHA256: the raw 32 bytes over
    the raw salt (what the spec says; autobahn's client crashes on it, docs/auth.md)."""
    secret = password.encode("utf-8")
    if kdf == "argon2id-13":
        from argon2.low_level import Type, hash_secret
        encoded = hash_secret(secret=secret, salt=salt, time_cost=iterations,
                              memory_cost=memory, parallelism=1, hash_len=32, type=Type.ID,
                              version=0x13)
        return encoded.split(b"$")[-1]
    if kdf == "pbkdf2":
        return hashlib.pbkdf2_hmac("sha256", secret, salt, iterations, 32)
    raise ValueError(f"unknown SCRAM kdf {kdf!r} (known: {', '.join(KDFS)})")


def principal(password: str, kdf: str = "argon2id-13", iterations: int | None = None,
              memory: int = 512, salt: bytes | None = None, role: str | None = None) -> dict:
    """A static principal (Crossbar's keys) for ``password``: what goes in the config."""
    salt = salt if salt is not None else os.urandom(16)
    if iterations is None:
        iterations = 4096 if kdf == "pbkdf2" else 4
    salted = salted_password(password, salt, kdf, iterations, memory)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    p = {"kdf": kdf, "iterations": iterations, "memory": memory, "salt": salt.hex(),
         "stored-key": hashlib.sha256(client_key).hexdigest(),
         "server-key": hmac.new(salted, b"Server Key", hashlib.sha256).hexdigest()}
    if role is not None:
        p["role"] = role
    return p


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unhex(value: Any, length: int | None = None) -> bytes | None:
    try:
        raw = binascii.a2b_hex(value) if isinstance(value, str) else None
    except (binascii.Error, ValueError):
        return None
    if raw is None or (length is not None and len(raw) != length):
        return None
    return raw


def _decoy(principals: dict, authid: str) -> dict:
    """A principal for an unknown authid: the common kdf/iterations/memory, a salt fixed per
    authid (not computable from outside), keys that match nothing."""
    real = [p for p in principals.values() if isinstance(p, dict) and p.get("kdf") in KDFS]
    shape = (Counter((p["kdf"], p.get("iterations", 4), p.get("memory", 512))
                     for p in real).most_common(1)[0][0] if real else ("argon2id-13", 4, 512))
    salt = hmac.new(_DECOY_KEY, authid.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return {"kdf": shape[0], "iterations": shape[1], "memory": shape[2],
            "salt": salt.hexdigest()[:32], "stored-key": _DECOY_KEY.hex(),
            "server-key": _DECOY_KEY.hex(), "decoy": True}


class StaticAuth(PendingAuth):
    method = "scram"

    def _check_hello(self, msg) -> Deny | None:
        extra = msg.authextra or {}
        if extra.get("channel_binding") is not None:
            # autobahn never asks; refusing beats silently authenticating unbound
            return Deny(message="WAMP-SCRAM channel binding is not supported", counts=False)
        nonce = extra.get("nonce")
        if not isinstance(nonce, str):
            return Deny(message="client must send a nonce", counts=False)   # Crossbar's words
        try:
            raw = base64.b64decode(nonce.encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return Deny(message="client nonce must be base64", counts=False)
        if not MIN_NONCE <= len(raw) <= MAX_NONCE:
            return Deny(message=f"client nonce must be {MIN_NONCE}-{MAX_NONCE} bytes",
                        counts=False)
        if not isinstance(msg.authid, str) or not msg.authid:
            return Deny(message="cannot identify client: no authid requested", counts=False)
        self.client_nonce = raw
        return None

    def hello(self, realm, msg):
        self.realm, self.hello_msg, self.authid = realm, msg, msg.authid
        deny = self._check_hello(msg)
        if deny is not None:
            return deny
        principals = self.cfg.get("principals", {})
        p = principals.get(msg.authid)
        if p is None:
            p = _decoy(principals, msg.authid)
        return self._challenge(p)

    def _challenge(self, p: dict) -> Challenge | Deny:
        salt = _unhex(p.get("salt"))
        stored, server = _unhex(p.get("stored-key"), 32), _unhex(p.get("server-key"), 32)
        kdf, iterations, memory = p.get("kdf"), p.get("iterations"), p.get("memory", -1)
        if (salt is None or stored is None or server is None or kdf not in KDFS
                or not isinstance(iterations, int) or not isinstance(memory, int)
                or not isinstance(p.get("role", ""), str)):
            log.warning("scram principal for authid %r is malformed (salt, stored-key, "
                        "server-key hex; kdf one of %s; iterations, memory integers)",
                        self.authid, ", ".join(KDFS))
            return Deny(message="principal has malformed SCRAM keys", counts=False)
        try:
            authid = saslprep(self.authid or "")
        except (ValueError, ImportError) as e:
            return Deny(message=f"authid cannot be SASLprep'd: {e}", counts=False)
        self.principal, self.stored_key, self.server_key = p, stored, server
        self.server_nonce = self.client_nonce + os.urandom(16)
        cnonce, snonce, b64salt = _b64(self.client_nonce), _b64(self.server_nonce), _b64(salt)
        self.auth_message = (f"n={authid},r={cnonce},r={snonce},s={b64salt},i={iterations},"
                             f"c=,r={snonce}").encode()
        return Challenge(self.method, {"nonce": snonce, "kdf": kdf, "salt": b64salt,
                                       "iterations": iterations, "memory": memory})

    def authenticate(self, signature, extra):
        nonce = (extra or {}).get("nonce")
        if nonce is not None and nonce != _b64(self.server_nonce):
            return Deny(AUTHENTICATION_FAILED, "SCRAM nonce does not match the challenge's")
        if isinstance(signature, bytes):   # autobahn sends the base64 text as bytes
            signature = signature.decode("ascii", "replace")
        try:
            proof = base64.b64decode(signature.encode("ascii"), validate=True)
        except (AttributeError, binascii.Error, ValueError, UnicodeEncodeError):
            return Deny(AUTHENTICATION_FAILED, f"{SCRAM_FAILED}: the proof is not base64")
        if len(proof) != 32:
            return Deny(AUTHENTICATION_FAILED, f"{SCRAM_FAILED}: the proof is not 32 bytes")
        client_signature = hmac.new(self.stored_key, self.auth_message, hashlib.sha256).digest()
        client_key = bytes(a ^ b for a, b in zip(client_signature, proof, strict=True))
        ok = hmac.compare_digest(hashlib.sha256(client_key).digest(), self.stored_key)
        p = self.principal
        if not ok or p.get("decoy"):
            return Deny(AUTHENTICATION_FAILED, SCRAM_FAILED)
        server_signature = hmac.new(self.server_key, self.auth_message, hashlib.sha256).digest()
        authextra = dict(p.get("extra") or {})
        authextra["scram_server_signature"] = _b64(server_signature)
        return Accept(p.get("realm") or self.realm, p.get("authid") or self.authid,
                      p.get("role", "anonymous"), self.method, self.provider, authextra)


class DynamicAuth(StaticAuth):
    """The authenticator returns the principal (the static keys, plus role/realm/authid/extra)
    for ``(realm, authid, details)``; a refusal gets the decoy, its reason goes to the log."""

    blocking = True

    def hello(self, realm, msg):
        self.realm, self.hello_msg, self.authid = realm, msg, msg.authid
        deny = self._check_hello(msg)
        if deny is not None:
            return deny
        try:
            p = self.call_authenticator(msg.authid, {})
        except Exception as e:
            deny = self.deny_from_error(e)
            if not deny.counts:   # the router's own error, or a broken config: told as is
                return deny
            log.info("scram authenticator %s refused authid %r: %s %s (the client gets a decoy "
                     "challenge)", self.authenticator_name, msg.authid, deny.reason,
                     deny.message)
            p = None
        if not isinstance(p, dict):
            if p is not None:
                log.warning("scram authenticator %s returned no principal (a dict with kdf, "
                            "iterations, memory, salt, stored-key, server-key) for authid %r",
                            self.authenticator_name, msg.authid)
            return self._challenge(_decoy({}, msg.authid))
        if isinstance(p.get("realm"), str):
            self.realm = p["realm"]
        return self._challenge(p)
