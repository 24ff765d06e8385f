"""Roles: who may publish/subscribe/call/register which URIs.

Static roles hold permission rules in a ``UriTable`` (the most specific rule wins: exact, then
longest prefix, then wildcard). Dynamic roles ask an ``authorizer`` procedure; the answer may be
cached per session. The built-in ``trusted`` role allows everything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from geonode.router.matching import MATCHES, UriTable, infer_match

log = logging.getLogger("geonode.router")

ACTIONS = ("publish", "subscribe", "call", "register")

# Per-session cache of dynamic authorizer answers: bounded so a session hitting many distinct
# URIs cannot grow memory without limit (the cache is simply cleared when full).
CACHE_LIMIT = 1024
AUTHORIZER_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Authorization:
    allow: bool
    disclose: bool = False
    cache: bool = False


DENY = Authorization(False)
ALLOW = Authorization(True)


class Role:
    name: str

    def authorize_now(self, session: Any, uri: str, action: str, options: dict) -> Authorization | None:
        """The answer without waiting, or None when only ``authorize`` (which may block) knows."""
        raise NotImplementedError

    def authorize(self, session: Any, uri: str, action: str, options: dict) -> Authorization:
        return self.authorize_now(session, uri, action, options) or DENY


class TrustedRole(Role):
    name = "trusted"

    def authorize_now(self, session, uri, action, options):
        return ALLOW


class _Permission:
    __slots__ = ("publish", "subscribe", "call", "register", "disclose_caller",
                 "disclose_publisher", "cache")

    def __init__(self, cfg: dict) -> None:
        allow = cfg.get("allow", {})
        for action in ACTIONS:
            # Crossbar's older flat form ({"uri": ..., "call": true}) is accepted too.
            setattr(self, action, bool(allow.get(action, cfg.get(action, False))))
        disclose = cfg.get("disclose", {})
        self.disclose_caller = bool(disclose.get("caller", False))
        self.disclose_publisher = bool(disclose.get("publisher", False))
        self.cache = bool(cfg.get("cache", False))

    def authorization(self, action: str) -> Authorization:
        disclose = False
        if action == "call":
            disclose = self.disclose_caller
        elif action == "publish":
            disclose = self.disclose_publisher
        return Authorization(getattr(self, action), disclose, self.cache)


class StaticRole(Role):
    def __init__(self, name: str, permissions: list[dict]) -> None:
        self.name = name
        self.table: UriTable[_Permission] = UriTable()
        for p in permissions:
            uri = p.get("uri", "")
            match = p.get("match")
            if match is None:
                uri, match = infer_match(uri)
            elif match == "prefix" and uri.endswith("*"):
                uri = uri[:-1]
            if match not in MATCHES:
                raise ValueError(f"role {name!r}: invalid match {match!r} for {uri!r}")
            self.table.add(uri, match, _Permission(p))
        self._answers: dict[tuple[str, str], Authorization] = {}

    def authorize_now(self, session, uri, action, options):
        key = (uri, action)
        ans = self._answers.get(key)
        if ans is None:
            perm = self.table.best(uri)
            ans = perm.authorization(action) if perm is not None else DENY
            if len(self._answers) >= CACHE_LIMIT:
                self._answers.clear()
            self._answers[key] = ans
        return ans


class DynamicRole(Role):
    """Asks ``authorizer(session_details, uri, action, options)`` on the realm."""

    def __init__(self, name: str, authorizer: str, realm: Any) -> None:
        self.name = name
        self.authorizer = authorizer
        self.realm = realm

    def authorize_now(self, session, uri, action, options):
        return session.authz_cache.get((uri, action))

    def authorize(self, session, uri, action, options):
        ans = self.authorize_now(session, uri, action, options)
        if ans is not None:
            return ans
        try:
            result = self.realm.service.call(
                self.authorizer, [session.details(), uri, action, options],
                timeout=AUTHORIZER_TIMEOUT)
        except Exception as e:  # the authorizer failed: deny, the client sees not_authorized
            log.warning("authorizer %s failed for %s %s: %s", self.authorizer, action, uri, e)
            return DENY
        ans = parse_authorizer_result(result)
        if ans is None:
            log.warning("authorizer %s returned %r for %s %s: denied", self.authorizer,
                        result, action, uri)
            return DENY
        if ans.cache:
            if len(session.authz_cache) >= CACHE_LIMIT:
                session.authz_cache.clear()
            session.authz_cache[(uri, action)] = ans
        return ans


def parse_authorizer_result(result: Any) -> Authorization | None:
    if isinstance(result, list) and len(result) == 1:
        result = result[0]
    if isinstance(result, bool):
        return Authorization(result)
    if isinstance(result, dict) and isinstance(result.get("allow"), bool):
        return Authorization(result["allow"], bool(result.get("disclose", False)),
                             bool(result.get("cache", False)))
    return None


def build_roles(roles_cfg: list[dict], realm: Any) -> dict[str, Role]:
    roles: dict[str, Role] = {"trusted": TrustedRole()}
    for r in roles_cfg:
        name = r["name"]
        if "authorizer" in r:
            roles[name] = DynamicRole(name, r["authorizer"], realm)
        else:
            roles[name] = StaticRole(name, r.get("permissions", []))
    return roles
