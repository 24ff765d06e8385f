"""WAMP-Ticket: a shared secret sent in AUTHENTICATE, compared in constant time.

An unknown authid gets a CHALLENGE like a known one and fails at AUTHENTICATE with the wrong
ticket's words (Crossbar refuses it at HELLO, naming it, which lists the valid authids): the
two are told apart neither by the answer nor by its timing. Both sides are hashed before the
comparison, so its time depends on neither the ticket's length nor whether there is one.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from geonode.router.auth import Accept, Challenge, Deny, PendingAuth
from geonode.router.errors import AUTHENTICATION_FAILED

# What an unknown authid's ticket is compared with: no ticket hashes to it (but who knows
# the process's random bytes).
_NOBODY = os.urandom(32)
INVALID_TICKET = "ticket in static WAMP-Ticket authentication is invalid"   # Crossbar's words


def _digest(ticket: str) -> bytes:
    return hashlib.sha256(ticket.encode("utf-8", "surrogatepass")).digest()


class StaticAuth(PendingAuth):
    method = "ticket"

    def hello(self, realm, msg):
        self.realm, self.hello_msg, self.authid = realm, msg, msg.authid
        if msg.authid is None:
            # names no principal, so it tells nothing about which exist (Crossbar's words)
            return Deny(message='no principal with authid "None" exists', counts=False)
        self.principal = self.cfg.get("principals", {}).get(msg.authid)
        return Challenge("ticket")

    def authenticate(self, signature, extra):
        p = self.principal
        expected = _digest(str(p.get("ticket", ""))) if p is not None else _NOBODY
        given = _digest(signature) if isinstance(signature, str) else b""
        if not hmac.compare_digest(given, expected) or p is None:
            # Crossbar's message; the URI stays the spec's authentication_failed (Crossbar:
            # not_authorized), see docs/router.md
            return Deny(AUTHENTICATION_FAILED, INVALID_TICKET)
        return Accept(p.get("realm", self.realm), self.authid, p.get("role", "anonymous"),
                      self.method, self.provider, p.get("extra"))


class DynamicAuth(PendingAuth):
    method = "ticket"
    blocking = True

    def hello(self, realm, msg):
        self.realm, self.hello_msg, self.authid = realm, msg, msg.authid
        return Challenge("ticket")

    def authenticate(self, signature, extra):
        try:
            principal = self.call_authenticator(self.authid, {"ticket": signature})
        except Exception as e:
            return self.deny_from_error(e)
        return self.accept_principal(principal, self.authid)
