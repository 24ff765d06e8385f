"""Authentication methods: one module per WAMP authmethod.

Each module exposes ``PendingAuth`` subclasses, built per HELLO from the transport's
``auth[<method>]`` config. ``hello()`` answers Accept, Deny or Challenge; ``authenticate()``
(after a CHALLENGE) answers Accept or Deny. Dynamic methods call the configured
``authenticator`` procedure and may block the calling greenlet (``blocking = True``); the
session runs those in a greenlet of their own. ``"type": "function"`` is a dynamic method whose
authenticator is a Python function instead of a WAMP procedure (``function_authenticator``).

``cookie`` is not chosen like the others: it applies only when the connection carries a cookie
that an earlier session authenticated (``PendingAuth.usable``); otherwise the client's next
method is tried.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autobahn.util import DEFAULT_TOKEN_CHARS

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

log = logging.getLogger("geonode.router")

METHODS = ("anonymous", "ticket", "wampcra", "cryptosign", "scram", "tls", "cookie")
# The configured kinds of a method that consult an authenticator (procedure or function).
DYNAMIC_TYPES = ("dynamic", "function")


# serial_number(): byte b (< _SERIAL_KEEP) is DEFAULT_TOKEN_CHARS[b % 27]; bytes from
# _SERIAL_KEEP up are dropped, so every character is equally likely (243 = 9 * 27).
_SERIAL_KEEP = 243
_SERIAL_TABLE = bytes(ord(DEFAULT_TOKEN_CHARS[b % len(DEFAULT_TOKEN_CHARS)])
                      for b in range(256))
_SERIAL_DROP = bytes(range(_SERIAL_KEEP, 256))


def serial_number() -> str:
    """A fresh authid like ``YRAC-EL4X-FQQE-AW4T-WNUV-VN6T``: autobahn's
    ``generate_serial_number`` (its alphabet and format, ~114 bits from the OS's random
    source), in two C calls instead of ~100 Python ones: every anonymous join makes one."""
    while True:
        # 48 random bytes keep >= 24 of them but with probability ~1 - 1e-9
        chars = os.urandom(48).translate(_SERIAL_TABLE, _SERIAL_DROP)
        if len(chars) >= 24:
            c = chars[:24].decode("ascii")
            return "-".join((c[0:4], c[4:8], c[8:12], c[12:16], c[16:20], c[20:24]))


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
        kind = self.cfg.get("type")
        return kind if kind in DYNAMIC_TYPES else "static"

    @property
    def authenticator_name(self) -> str:
        """The procedure or function that decides (for log lines)."""
        return str(self.cfg.get("authenticator") or self.cfg.get("create"))

    def usable(self, msg: Any) -> bool:
        """Whether this method can judge the HELLO at all (False: try the client's next one)."""
        return True

    def hello(self, realm: str | None, msg: Any) -> Accept | Deny | Challenge:
        raise NotImplementedError

    def authenticate(self, signature: str, extra: dict | None) -> Accept | Deny:
        return Deny(AUTHENTICATION_FAILED, "unexpected AUTHENTICATE")

    # -- dynamic authenticators ---------------------------------------------------------
    def call_authenticator(self, authid: str | None, details: dict) -> Any:
        """Call the configured authenticator as ``(realm, authid, details)`` (blocks): the
        ``authenticator`` procedure, or for ``"type": "function"`` the Python function."""
        base = {"transport": self.session.transport_details, "session": self.session.pending_id,
                "authmethod": self.method, "authextra": self.hello_msg.authextra}
        base.update(details)
        if self.cfg.get("type") == "function":
            return function_authenticator(self.cfg)(self.realm, authid, base)
        proc = self.cfg.get("authenticator")
        realm = (self.cfg.get("authenticator-realm") or self.cfg.get("authenticator_realm")
                 or self.realm)
        return self.session.router.call(realm, proc, [self.realm, authid, base],
                                        timeout=AUTHENTICATOR_TIMEOUT)

    def accept_principal(self, principal: Any, authid: str | None,
                         extra: dict | None = None) -> Accept | Deny:
        """Turn an authenticator's answer (role string or dict) into Accept/Deny."""
        if isinstance(principal, str):
            return Accept(self.realm, authid or serial_number(), principal,
                          self.method, self.provider, extra)
        if isinstance(principal, dict) and isinstance(principal.get("role"), str):
            return Accept(principal.get("realm") or self.realm,
                          principal.get("authid") or authid or serial_number(),
                          principal["role"], self.method, self.provider,
                          principal.get("extra", extra))
        return Deny(NOT_AUTHORIZED, "authenticator returned no role")

    def deny_from_error(self, e: Exception) -> Deny:
        error = getattr(e, "error", None)
        if isinstance(error, str) and error.startswith(WAMP_ERROR_PREFIX):
            # the router's own errors judge no credential: not counted by the throttle
            return Deny(error, str(getattr(e, "args", [""])[0] if e.args else ""),
                        counts=error not in ROUTER_ERRORS)
        if isinstance(e, FunctionAuthenticatorError):
            # the config's fault, the same for every client: told at once, not counted
            return Deny(AUTHENTICATION_FAILED, str(e), counts=False)
        if self.cfg.get("type") == "function" and not isinstance(error, str):
            # a bug in the function, not a refusal: the node's log gets its traceback
            log.error("%s authenticator %s raised", self.method, self.cfg.get("create"),
                      exc_info=e)
        return Deny(AUTHENTICATION_FAILED, f"authenticator failed: {e}")


class FunctionAuthenticatorError(Exception):
    """The ``create`` of a function authenticator cannot be imported or gives no function."""


# ``create`` name -> the authenticator it made: Crossbar calls each factory once per process.
_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def function_authenticator(cfg: dict) -> Callable[..., Any]:
    """The authenticator of a ``"type": "function"`` config (made on first use, then kept).

    As Crossbar: ``create`` names a factory ``create(config, controller)`` (``config``: the
    method's ``config`` dict) that returns the authenticator, a function called as
    ``authenticator(realm, authid, details)`` that returns the principal (a role, or a dict as
    a dynamic authenticator's) or raises (an ``ApplicationError`` refuses with its URI). geonode
    has no controller session to give: ``controller`` is None.
    """
    name = cfg.get("create") or ""
    fn = _FUNCTIONS.get(name)
    if fn is not None:
        return fn
    module_name, _, attr = name.rpartition(".")
    if not module_name:
        raise FunctionAuthenticatorError(f"function authenticator {name!r} has no module")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        log.error("function authenticator %r cannot be loaded: %s", name, e)
        raise FunctionAuthenticatorError(
            f"function authenticator {name!r} cannot be loaded") from e
    try:
        fn = factory(cfg.get("config") or {}, None)
    except Exception as e:
        log.error("function authenticator %r: its factory raised", name, exc_info=e)
        raise FunctionAuthenticatorError(
            f"function authenticator {name!r} cannot be created") from e
    if not callable(fn):
        log.error("function authenticator %r: %r returned %r, not a function", name, name,
                  type(fn).__name__)
        raise FunctionAuthenticatorError(f"function authenticator {name!r} gave no function")
    _FUNCTIONS[name] = fn
    return fn


def pending_auth(method: str, cfg: dict, session: Any) -> PendingAuth:
    module = importlib.import_module(f"geonode.router.auth.{method}")
    cls = module.DynamicAuth if cfg.get("type") in DYNAMIC_TYPES else module.StaticAuth
    return cls(cfg, session)
