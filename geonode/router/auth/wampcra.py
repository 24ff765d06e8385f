"""WAMP-CRA: HMAC-SHA256 over a router challenge; salted secrets via PBKDF2.

An unknown authid gets a decoy CHALLENGE and fails at AUTHENTICATE with a wrong signature's
words, so the answer does not tell which authids exist (Crossbar refuses unknown ones at
HELLO, naming them). The decoy is built like a real user's: the configured users' most
common role; salted when most users are, with their most common iterations/keylen and a salt
of their most common length and alphabet, the same salt every time for one authid (an HMAC
of it under a key derived from the configured secrets, so it survives restarts and cannot be
computed from outside). It costs the same PBKDF2 work as a real user. Its secret is random
bytes, and a decoy never authenticates even if a signature matched.

A dynamic authenticator that refuses an authid (raises, or returns no principal) gets the
same treatment, shaped like the authenticator's last real answer; its error is logged, not
sent. Errors of the router's own (no authenticator registered, timeout) still ABORT at once:
they are the same for every authid.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import string
import time
from collections import Counter
from dataclasses import dataclass

from autobahn.wamp.auth import compute_wcs, derive_key

from geonode.router.auth import Accept, Challenge, Deny, PendingAuth
from geonode.router.errors import AUTHENTICATION_FAILED

log = logging.getLogger("geonode.router")

INVALID_SIGNATURE = "WAMP-CRA client signature is invalid"   # Crossbar's words
_ALPHABETS = ("0123456789abcdef", "0123456789ABCDEF", string.ascii_letters + string.digits,
              string.ascii_letters + string.digits + "+/=",
              string.ascii_letters + string.digits + "-_=",
              "".join(chr(c) for c in range(33, 127)))


@dataclass(frozen=True)
class Shape:
    """What a decoy CHALLENGE looks like: the common case of the real users."""

    role: str = "anonymous"
    salted: bool = False
    iterations: int = 1000
    keylen: int = 32
    salt_len: int = 16
    alphabet: str = _ALPHABETS[2]

    @classmethod
    def of(cls, users: list[dict]) -> Shape:
        users = [u for u in users if isinstance(u, dict) and isinstance(u.get("role"), str)]
        if not users:
            return cls()
        role = Counter(u["role"] for u in users).most_common(1)[0][0]
        salted = [u for u in users if _salted(u)]
        if len(salted) * 2 < len(users):
            return cls(role=role)
        iterations, keylen = Counter((u["iterations"], u["keylen"])
                                     for u in salted).most_common(1)[0][0]
        salts = [str(u["salt"]) for u in salted]
        salt_len = Counter(len(s) for s in salts).most_common(1)[0][0]
        seen = set("".join(salts))
        alphabet = next((a for a in _ALPHABETS if seen <= set(a)), _ALPHABETS[2])
        return cls(role, True, iterations, keylen, max(salt_len, 1), alphabet)

    def decoy(self, key: bytes, authid: str) -> dict:
        user = {"secret": os.urandom(24).hex(), "role": self.role, "decoy": True}
        if self.salted:
            stream = b""
            counter = 0
            while len(stream) < self.salt_len:
                stream += hmac.new(key, f"{counter}:{authid}".encode("utf-8", "surrogatepass"),
                                   hashlib.sha256).digest()
                counter += 1
            a = self.alphabet
            user.update(salt="".join(a[b % len(a)] for b in stream[:self.salt_len]),
                        iterations=self.iterations, keylen=self.keylen)
        return user


def _salted(user: dict) -> bool:
    return all(user.get(k) is not None for k in ("salt", "iterations", "keylen"))


# Static configs: (the users dict, its Shape, its decoy key), by id of the users dict (configs
# live as long as the process; the dict is kept to make the id safe).
_STATIC: dict[int, tuple[dict, Shape, bytes]] = {}
# Dynamic authenticators: the shape of the last real answer, by procedure (bounded).
_DYNAMIC: dict[str, Shape] = {}
_DYNAMIC_KEY = os.urandom(32)


def _static_shape(users: dict) -> tuple[Shape, bytes]:
    entry = _STATIC.get(id(users))
    if entry is None or entry[0] is not users:
        key = hashlib.sha256(b"geonode wampcra decoy\0" + json.dumps(
            users, sort_keys=True, default=str).encode("utf-8", "surrogatepass")).digest()
        entry = _STATIC[id(users)] = (users, Shape.of(list(users.values())), key)
    return entry[1], entry[2]


class StaticAuth(PendingAuth):
    method = "wampcra"

    def hello(self, realm, msg):
        self.realm, self.hello_msg, self.authid = realm, msg, msg.authid
        if msg.authid is None:
            # names no principal, so it tells nothing about which exist (Crossbar's words)
            return Deny(message='no principal with authid "None" exists', counts=False)
        users = self.cfg.get("users", {})
        user = users.get(msg.authid)
        if user is None:
            shape, key = _static_shape(users)
            user = shape.decoy(key, msg.authid)
        return self._challenge(user)

    def _challenge(self, user: dict) -> Challenge | Deny:
        if not isinstance(user.get("secret"), str) or not isinstance(user.get("role"), str):
            return Deny(message="principal has no secret or role", counts=False)
        self.user = user
        self.challenge = json.dumps({
            "authid": self.authid, "authrole": user["role"], "authmethod": self.method,
            "authprovider": self.provider, "session": self.session.pending_id,
            "nonce": os.urandom(16).hex(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        }, separators=(",", ":"))
        extra = {"challenge": self.challenge}
        key = user["secret"].encode("utf-8")
        if _salted(user):
            extra.update(salt=user["salt"], iterations=user["iterations"], keylen=user["keylen"])
            key = derive_key(key, user["salt"], user["iterations"], user["keylen"])
        self.expected = compute_wcs(key, self.challenge.encode("utf-8"))
        return Challenge(self.method, extra)

    def authenticate(self, signature, extra):
        if not isinstance(signature, str) or not hmac.compare_digest(
                signature.encode("ascii", "replace"), self.expected) or self.user.get("decoy"):
            return Deny(AUTHENTICATION_FAILED, INVALID_SIGNATURE)
        return Accept(self.user.get("realm", self.realm), self.authid, self.user["role"],
                      self.method, self.provider, self.user.get("extra"))


class DynamicAuth(StaticAuth):
    blocking = True

    def hello(self, realm, msg):
        self.realm, self.hello_msg, self.authid = realm, msg, msg.authid
        proc = self.authenticator_name
        try:
            user = self.call_authenticator(msg.authid, {})
        except Exception as e:
            deny = self.deny_from_error(e)
            if not deny.counts:   # the router's own error, or a broken config: told as is
                return deny
            log.info("wampcra authenticator %s refused authid %r: %s %s (the client gets a "
                     "decoy challenge)", proc, msg.authid, deny.reason, deny.message)
            user = None
        if not isinstance(user, dict) or not isinstance(user.get("secret"), str) \
                or not isinstance(user.get("role"), str):
            if user is not None:
                log.warning("wampcra authenticator %s returned no principal (a dict with "
                            "'secret' and 'role') for authid %r", proc, msg.authid)
            return self._challenge(_DYNAMIC.get(proc, Shape()).decoy(
                _DYNAMIC_KEY, str(msg.authid)))
        if proc in _DYNAMIC or len(_DYNAMIC) < 256:
            _DYNAMIC[proc] = Shape.of([user])
        if user.get("realm"):
            self.realm = user["realm"]
        self.authid = user.get("authid") or self.authid
        return self._challenge(user)


__all__ = ["StaticAuth", "DynamicAuth", "AUTHENTICATION_FAILED"]
