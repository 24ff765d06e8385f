"""WAMP-Anonymous: no credentials; static role or an authenticator decides the role."""

from __future__ import annotations

from geonode.router.auth import Accept, PendingAuth, serial_number


class StaticAuth(PendingAuth):
    method = "anonymous"
    checks_credentials = False

    def hello(self, realm, msg):
        self.realm = realm
        # The client's authid is not trusted: anonymous sessions get a fresh one, or with
        # cookie tracking one stable per cookie (auth/cookie.py).
        ref = getattr(self.session.peer, "cookie", None)
        authid = (self.cfg.get("authid") or (ref.anonymous_authid() if ref is not None else None)
                  or serial_number())
        return Accept(realm, authid, self.cfg.get("role", "anonymous"), self.method, self.provider)


class DynamicAuth(PendingAuth):
    method = "anonymous"
    blocking = True

    def hello(self, realm, msg):
        self.realm, self.hello_msg = realm, msg
        try:
            principal = self.call_authenticator(msg.authid, {})
        except Exception as e:
            return self.deny_from_error(e)
        return self.accept_principal(principal, serial_number())
