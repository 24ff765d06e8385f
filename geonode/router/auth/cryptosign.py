"""WAMP-Cryptosign: the client signs a random challenge with its Ed25519 key.

Channel binding, as Crossbar and autobahn do it: a HELLO with
``authextra.channel_binding = "tls-unique"`` binds the signature to the TLS connection. The
transport puts the connection's id (SHA-256 of the tls-unique bytes, 32 bytes, see
``geonode.transport.channel``) in ``transport_details["channel_id"]``; the client must then
sign ``challenge XOR channel_id`` instead of the bare challenge, so a signature captured on one
TLS connection is refused on any other. CHALLENGE echoes the requested binding
(``channel_binding: "tls-unique"`` or ``null``).

Refusals follow Crossbar 26.10 (ABORT ``wamp.error.not_authorized``, same wording): a binding
type other than tls-unique, and tls-unique over a connection without TLS (plain TCP, Unix
socket), so a client asking for binding never authenticates unbound. Both are settled before
any principal lookup or authenticator call.

A limit of the scheme itself (autobahn's and Crossbar's, kept for compatibility): the client
cannot tell a genuine challenge from one an active man-in-the-middle rewrote to
``challenge XOR id_A XOR id_B``, which makes the client's signature valid on the middle's own
connection B. Binding stops replaying a captured signature on another connection; it does not
stop a relay that terminates the client's TLS (the client's certificate check does).
"""

from __future__ import annotations

import binascii
import hmac
import logging
import os

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from geonode.router.auth import Accept, Challenge, Deny, PendingAuth
from geonode.router.errors import AUTHENTICATION_FAILED

log = logging.getLogger("geonode.router")

CHANNEL_BINDINGS = ("tls-unique",)
UNKNOWN_KEY = "no principal with that authid and public key"


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


class StaticAuth(PendingAuth):
    method = "cryptosign"
    binding: str | None = None
    channel_id: bytes | None = None

    def _check_hello(self, msg) -> str | Deny:
        """The client's public key (lower-case hex), or why its HELLO is refused.

        Also settles the channel binding (``self.binding``, ``self.channel_id``).
        """
        extra = msg.authextra or {}
        binding = extra.get("channel_binding")
        if binding is not None:
            if binding not in CHANNEL_BINDINGS:
                return Deny(message=f'invalid channel binding type "{binding}" requested '
                                    f"(supported: {', '.join(CHANNEL_BINDINGS)})", counts=False)
            ids = self.session.transport_details.get("channel_id") or {}
            cid = ids.get(binding)
            try:
                raw = binascii.a2b_hex(cid) if isinstance(cid, str) else None
            except binascii.Error:
                raw = None
            if raw is None or len(raw) != 32:
                # Crossbar's words, then what to do about it
                return Deny(message=f'channel binding "{binding}" requested, but the transport '
                                    "has no TLS channel ID: connect over TLS (wss://, or RawSocket "
                                    "over TLS) or without channel_binding", counts=False)
            self.binding, self.channel_id = binding, raw
        pk = extra.get("pubkey")
        if not isinstance(pk, str):
            return Deny(message="cryptosign needs authextra.pubkey", counts=False)
        return pk.lower()

    def hello(self, realm, msg):
        self.realm, self.hello_msg, self.authid = realm, msg, msg.authid
        pubkey = self._check_hello(msg)
        if isinstance(pubkey, Deny):
            return pubkey
        principals = self.cfg.get("principals", {})
        if msg.authid is not None:
            principal = principals.get(msg.authid)
            candidates = [(msg.authid, principal)] if principal else []
        else:
            candidates = list(principals.items())
        for authid, p in candidates:
            keys = [k.lower() for k in p.get("authorized_keys", [])]
            if any(hmac.compare_digest(k, pubkey) for k in keys):
                self.authid = authid
                return self._challenge(pubkey, p)
        # One answer for an unknown authid and for a known one with another key: which
        # authids exist stays unsaid (the key is public; guessing its private half is not a
        # threat, but failures are throttled like any other).
        return Deny(message=UNKNOWN_KEY)

    def _challenge(self, pubkey: str, principal: dict) -> Challenge | Deny:
        try:
            self.verify_key = VerifyKey(binascii.a2b_hex(pubkey))
        except Exception:
            return Deny(message="invalid public key", counts=False)
        self.principal = principal
        self.challenge = os.urandom(32)
        # what the client has to sign: the bare challenge, or bound to this TLS connection
        self.expected = (_xor(self.challenge, self.channel_id) if self.channel_id is not None
                         else self.challenge)
        return Challenge(self.method, {"challenge": self.challenge.hex(),
                                       "channel_binding": self.binding})

    def authenticate(self, signature, extra):
        # 96 bytes: the Ed25519 signature, then the message signed (as autobahn sends it)
        try:
            raw = binascii.a2b_hex(signature)
        except (TypeError, ValueError, binascii.Error):
            return Deny(AUTHENTICATION_FAILED, "invalid signature: not a hex string")
        if len(raw) != 96:
            return Deny(AUTHENTICATION_FAILED,
                        f"invalid signature: {len(raw)} bytes, expected 96")
        if not hmac.compare_digest(raw[64:], self.expected):
            if self.channel_id is not None:
                return Deny(AUTHENTICATION_FAILED, "invalid signature: the message signed is not "
                                                   "the challenge bound to this TLS channel "
                                                   f"({self.binding})")
            return Deny(AUTHENTICATION_FAILED, "invalid signature: the message signed is not "
                                               "the challenge")
        try:
            self.verify_key.verify(self.expected, raw[:64])
        except (ValueError, TypeError, BadSignatureError):
            return Deny(AUTHENTICATION_FAILED, "invalid signature")
        p = self.principal
        return Accept(p.get("realm", self.realm), p.get("authid", self.authid),
                      p.get("role", "anonymous"), self.method, self.provider, p.get("extra"))


class DynamicAuth(StaticAuth):
    blocking = True

    def hello(self, realm, msg):
        self.realm, self.hello_msg, self.authid = realm, msg, msg.authid
        pubkey = self._check_hello(msg)
        if isinstance(pubkey, Deny):
            return pubkey
        proc = self.authenticator_name
        try:
            principal = self.call_authenticator(msg.authid, {})
        except Exception as e:
            deny = self.deny_from_error(e)
            if not deny.counts:   # the router's own error, or a broken config: told as is
                return deny
            # The authenticator's refusal is about this authid: answered like a wrong key.
            log.info("cryptosign authenticator %s refused authid %r: %s %s", proc, msg.authid,
                     deny.reason, deny.message)
            return Deny(message=UNKNOWN_KEY)
        if not isinstance(principal, dict) or not isinstance(principal.get("role"), str):
            log.warning("cryptosign authenticator %s returned no principal (a dict with 'role' "
                        "and 'pubkey') for authid %r", proc, msg.authid)
            return Deny(message=UNKNOWN_KEY)
        expected = str(principal.get("pubkey", "")).lower()
        if not hmac.compare_digest(expected, pubkey):
            return Deny(message=UNKNOWN_KEY)
        self.authid = principal.get("authid") or msg.authid or expected
        return self._challenge(pubkey, principal)
