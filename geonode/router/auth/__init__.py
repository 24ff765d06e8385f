"""Authentication methods: one module per WAMP authmethod.

Each module exposes ``PendingAuth`` subclasses, built per HELLO from the transport's
``auth[<method>]`` config. ``hello()`` answers Accept, Deny or Challenge; ``authenticate()``
(after a CHALLENGE) answers Accept or Deny. Dynamic methods call the configured
``authenticator`` procedure and may block the calling greenlet (``blocking = True``); the
session runs those in a greenlet of their own.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from autobahn.util import generate_serial_number

from geonode.router.errors import (
    AUTHENTICATION_FAILED,
    CANCELED,
    NO_SUCH_PROCEDURE,
    NO_SUCH_REALM,
    NOT_AUTHORIZED,
    TIMEOUT,
    WAMP_ERROR_PREFIX,
)

AUTHENTICATOR_TIMEOUT = 30.0
# Errors the router itself raises around an authenticator call (none registered, no answer):
# the same for every authid, so they may be told to the client as they are.
ROUTER_ERRORS = frozenset({NO_SUCH_PROCEDURE, TIMEOUT, CANCELED, NO_SUCH_REALM})

METHODS = ("anonymous", "ticket", "wampcra", "cryptosign")


@dataclass
class Accept:
    realm: str | None
    authid: str
    authrole: str
    authmethod: str
    authprovider: str
    authextra: dict | None = None


@dataclass
class Deny:
    reason: str = NOT_AUTHORIZED
    message: str = ""
    # False for refusals that judge no credential (a malformed HELLO, a channel binding the
    # transport cannot give): they are answered at once and not counted by the throttle.
    counts: bool = True


@dataclass
class Challenge:
    method: str
    extra: dict = field(default_factory=dict)


class PendingAuth:
    """One authentication attempt for one HELLO (state between HELLO and AUTHENTICATE)."""

    method = ""
    blocking = False
    # Whether this method judges a credential (its failures are throttled, its attempts gated):
    # everything but static anonymous, which never refuses.
    checks_credentials = True

    def __init__(self, cfg: dict, session: Any) -> None:
        self.cfg = cfg
        self.session = session
        self.realm: str | None = None
        self.authid: str | None = None
        self.hello_msg: Any = None

    @property
    def provider(self) -> str:
        return "dynamic" if self.cfg.get("type") == "dynamic" else "static"

    def hello(self, realm: str | None, msg: Any) -> Accept | Deny | Challenge:
        raise NotImplementedError

    def authenticate(self, signature: str, extra: dict | None) -> Accept | Deny:
        return Deny(AUTHENTICATION_FAILED, "unexpected AUTHENTICATE")

    # -- dynamic authenticators ---------------------------------------------------------
    def call_authenticator(self, authid: str | None, details: dict) -> Any:
        """Call the configured authenticator as ``(realm, authid, details)`` (blocks)."""
        proc = self.cfg.get("authenticator")
        realm = (self.cfg.get("authenticator-realm") or self.cfg.get("authenticator_realm")
                 or self.realm)
        base = {"transport": self.session.transport_details, "session": self.session.pending_id,
                "authmethod": self.method, "authextra": self.hello_msg.authextra}
        base.update(details)
        return self.session.router.call(realm, proc, [self.realm, authid, base],
                                        timeout=AUTHENTICATOR_TIMEOUT)

    def accept_principal(self, principal: Any, authid: str | None,
                         extra: dict | None = None) -> Accept | Deny:
        """Turn an authenticator's answer (role string or dict) into Accept/Deny."""
        if isinstance(principal, str):
            return Accept(self.realm, authid or generate_serial_number(), principal,
                          self.method, self.provider, extra)
        if isinstance(principal, dict) and isinstance(principal.get("role"), str):
            return Accept(principal.get("realm") or self.realm,
                          principal.get("authid") or authid or generate_serial_number(),
                          principal["role"], self.method, self.provider,
                          principal.get("extra", extra))
        return Deny(NOT_AUTHORIZED, "authenticator returned no role")

    def deny_from_error(self, e: Exception) -> Deny:
        error = getattr(e, "error", None)
        if isinstance(error, str) and error.startswith(WAMP_ERROR_PREFIX):
            # the router's own errors judge no credential: not counted by the throttle
            return Deny(error, str(getattr(e, "args", [""])[0] if e.args else ""),
                        counts=error not in ROUTER_ERRORS)
        return Deny(AUTHENTICATION_FAILED, f"authenticator failed: {e}")


def pending_auth(method: str, cfg: dict, session: Any) -> PendingAuth:
    module = importlib.import_module(f"geonode.router.auth.{method}")
    cls = module.DynamicAuth if cfg.get("type") == "dynamic" else module.StaticAuth
    return cls(cfg, session)
