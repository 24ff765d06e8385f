"""WAMP-Ticket: a shared secret sent in AUTHENTICATE, compared in constant time."""

from __future__ import annotations

import hmac

from geonode.router.auth import AUTHENTICATION_FAILED, Accept, Challenge, Deny, PendingAuth


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


class StaticAuth(PendingAuth):
    method = "ticket"

    def hello(self, realm, msg):
        self.realm, self.hello_msg, self.authid = realm, msg, msg.authid
        self.principal = self.cfg.get("principals", {}).get(msg.authid) if msg.authid else None
        if self.principal is None:
            return Deny(message=f'no principal with authid "{msg.authid}" exists')
        return Challenge("ticket")

    def authenticate(self, signature, extra):
        ticket = str(self.principal.get("ticket", ""))
        if not isinstance(signature, str) or not _same(signature, ticket):
            # Crossbar's message; the URI stays the spec's authentication_failed (Crossbar:
            # not_authorized), see docs/router.md
            return Deny(AUTHENTICATION_FAILED,
                        "ticket in static WAMP-Ticket authentication is invalid")
        return Accept(self.principal.get("realm", self.realm), self.authid,
                      self.principal.get("role", "anonymous"), self.method, self.provider,
                      self.principal.get("extra"))


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
