"""WAMP-TLS: the client certificate of the TLS connection authenticates the session.

The transport verifies the certificate in the handshake (the endpoint's ``ca_certificates``:
a client without a certificate from one of those CAs, or with an expired one, never gets a
TLS connection) and puts its details in ``transport_details["peer_cert"]`` (autobahn's
``peer_certificate_details``: ``sha1`` fingerprint, ``subject``, ``issuer``, ``not_after``…).
No CHALLENGE: HELLO is answered with WELCOME or ABORT.

Static: Crossbar's ``principals`` ``{authid: {"certificate-sha1": "AB:CD:…", "role": …}}``;
fingerprints compared without colons and case. Dynamic/function: the authenticator gets the
certificate in ``details["transport"]["peer_cert"]`` and returns the principal.
"""

from __future__ import annotations

from geonode.router.auth import Accept, Deny, PendingAuth

NO_CERTIFICATE = "client did not send a TLS client certificate"   # Crossbar's words


def fingerprint_key(value: object) -> str:
    """A SHA1 fingerprint in one spelling: upper-case hex without colons."""
    return str(value).replace(":", "").strip().upper()


class StaticAuth(PendingAuth):
    method = "tls"

    def _cert(self) -> dict | None:
        cert = self.session.transport_details.get("peer_cert")
        return cert if isinstance(cert, dict) and cert.get("sha1") else None

    def hello(self, realm, msg):
        self.realm, self.hello_msg, self.authid = realm, msg, msg.authid
        cert = self._cert()
        if cert is None:
            return Deny(message=NO_CERTIFICATE, counts=False)
        sha1 = fingerprint_key(cert["sha1"])
        for authid, p in self.cfg.get("principals", {}).items():
            if fingerprint_key(p.get("certificate-sha1", "")) == sha1:
                return Accept(p.get("realm") or realm, authid, p.get("role", "anonymous"),
                              self.method, self.provider, p.get("extra"))
        # Crossbar's words: the fingerprint is the certificate's, which its holder knows
        return Deny(message=f'no principal with authid "{cert["sha1"]}" exists')


class DynamicAuth(StaticAuth):
    blocking = True

    def hello(self, realm, msg):
        self.realm, self.hello_msg, self.authid = realm, msg, msg.authid
        if self._cert() is None:
            return Deny(message=NO_CERTIFICATE, counts=False)
        try:
            principal = self.call_authenticator(msg.authid, {})
        except Exception as e:
            return self.deny_from_error(e)
        return self.accept_principal(principal, msg.authid or self._cert()["sha1"])
