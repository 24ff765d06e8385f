"""WAMP-Cryptosign: the client signs a random challenge with its Ed25519 key.

Channel binding (``tls-unique``) is not implemented: a HELLO asking for it is refused at once
(ABORT ``wamp.error.not_authorized`` saying so), before any principal lookup or authenticator
call; CHALLENGE always carries ``channel_binding: null``.
"""

from __future__ import annotations

import binascii
import hmac
import os

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from geonode.router.auth import AUTHENTICATION_FAILED, Accept, Challenge, Deny, PendingAuth


def _check_hello(msg) -> str | Deny:
    """The client's public key (lower-case hex), or why its HELLO is refused."""
    extra = msg.authextra or {}
    binding = extra.get("channel_binding")
    if binding is not None:
        return Deny(message=f"cryptosign channel binding {binding!r} is not supported by this "
                            "router: connect without channel_binding")
    pk = extra.get("pubkey")
    if not isinstance(pk, str):
        return Deny(message="cryptosign needs authextra.pubkey")
    return pk.lower()


class StaticAuth(PendingAuth):
    method = "cryptosign"

    def hello(self, realm, msg):
        self.realm, self.hello_msg, self.authid = realm, msg, msg.authid
        pubkey = _check_hello(msg)
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
        return Deny(message="no principal with that authid and public key")

    def _challenge(self, pubkey: str, principal: dict) -> Challenge | Deny:
        try:
            self.verify_key = VerifyKey(binascii.a2b_hex(pubkey))
        except Exception:
            return Deny(message="invalid public key")
        self.principal = principal
        self.challenge = os.urandom(32)
        return Challenge(self.method, {"challenge": self.challenge.hex(), "channel_binding": None})

    def authenticate(self, signature, extra):
        try:
            raw = binascii.a2b_hex(signature)
            if len(raw) != 96 or not hmac.compare_digest(raw[64:], self.challenge):
                raise ValueError("wrong length or challenge")
            self.verify_key.verify(self.challenge, raw[:64])
        except (ValueError, TypeError, binascii.Error, BadSignatureError):
            return Deny(AUTHENTICATION_FAILED, "invalid signature")
        p = self.principal
        return Accept(p.get("realm", self.realm), p.get("authid", self.authid),
                      p.get("role", "anonymous"), self.method, self.provider, p.get("extra"))


class DynamicAuth(StaticAuth):
    blocking = True

    def hello(self, realm, msg):
        self.realm, self.hello_msg, self.authid = realm, msg, msg.authid
        pubkey = _check_hello(msg)
        if isinstance(pubkey, Deny):
            return pubkey
        try:
            principal = self.call_authenticator(msg.authid, {})
        except Exception as e:
            return self.deny_from_error(e)
        if not isinstance(principal, dict) or not isinstance(principal.get("role"), str):
            return Deny(message="authenticator returned no principal")
        expected = str(principal.get("pubkey", "")).lower()
        if not hmac.compare_digest(expected, pubkey):
            return Deny(message="public key not authorized")
        self.authid = principal.get("authid") or msg.authid or expected
        return self._challenge(pubkey, principal)
