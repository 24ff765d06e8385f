"""WAMP-CRA: HMAC-SHA256 over a router challenge; salted secrets via PBKDF2."""

from __future__ import annotations

import hmac
import json
import os
import time

from autobahn.wamp.auth import compute_wcs, derive_key

from geonode.router.auth import AUTHENTICATION_FAILED, Accept, Challenge, Deny, PendingAuth


class StaticAuth(PendingAuth):
    method = "wampcra"

    def hello(self, realm, msg):
        self.realm, self.hello_msg, self.authid = realm, msg, msg.authid
        user = self.cfg.get("users", {}).get(msg.authid) if msg.authid else None
        if user is None:
            return Deny(message=f'no principal with authid "{msg.authid}" exists')   # Crossbar's
        return self._challenge(user)

    def _challenge(self, user: dict) -> Challenge | Deny:
        if not isinstance(user.get("secret"), str) or not isinstance(user.get("role"), str):
            return Deny(message="principal has no secret or role")
        self.user = user
        self.challenge = json.dumps({
            "authid": self.authid, "authrole": user["role"], "authmethod": self.method,
            "authprovider": self.provider, "session": self.session.pending_id,
            "nonce": os.urandom(16).hex(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        }, separators=(",", ":"))
        extra = {"challenge": self.challenge}
        key = user["secret"].encode("utf-8")
        if all(user.get(k) is not None for k in ("salt", "iterations", "keylen")):
            extra.update(salt=user["salt"], iterations=user["iterations"], keylen=user["keylen"])
            key = derive_key(key, user["salt"], user["iterations"], user["keylen"])
        self.expected = compute_wcs(key, self.challenge.encode("utf-8"))
        return Challenge(self.method, extra)

    def authenticate(self, signature, extra):
        if not isinstance(signature, str) or not hmac.compare_digest(
                signature.encode("ascii", "replace"), self.expected):
            return Deny(AUTHENTICATION_FAILED, "WAMP-CRA client signature is invalid")
        return Accept(self.user.get("realm", self.realm), self.authid, self.user["role"],
                      self.method, self.provider, self.user.get("extra"))


class DynamicAuth(StaticAuth):
    blocking = True

    def hello(self, realm, msg):
        self.realm, self.hello_msg, self.authid = realm, msg, msg.authid
        try:
            user = self.call_authenticator(msg.authid, {})
        except Exception as e:
            return self.deny_from_error(e)
        if not isinstance(user, dict):
            return Deny(message="authenticator returned no principal")
        if user.get("realm"):
            self.realm = user["realm"]
        self.authid = user.get("authid") or self.authid
        return self._challenge(user)


__all__ = ["StaticAuth", "DynamicAuth", "AUTHENTICATION_FAILED"]
