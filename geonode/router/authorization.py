"""Roles: who may publish/subscribe/call/register which URIs.

Static roles hold permission rules in a ``UriTable`` (the most specific rule wins: exact, then
longest prefix, then wildcard). Dynamic roles ask an ``authorizer`` procedure; the answer may be
cached per session. The built-in ``trusted`` role allows everything.

Besides the action a client asks for, the broker and dealer ask about concrete URIs: an event
on ``com.app.secret`` reaches a pattern subscriber only if its role may subscribe to
``com.app.secret`` itself, an invocation reaches a pattern callee only if its role may register
that procedure (``CONCRETE`` options; docs/router.md "Pattern subscriptions and registrations").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gevent.local

from geonode.config.model import Permission, RoleConfig
from geonode.router.matching import UriTable
from geonode.uri import uri_text

log = logging.getLogger("geonode.router")

ACTIONS = ("publish", "subscribe", "call", "register")

# Answer caches are bounded in entries and in the characters of the URIs they hold, so a
# session hitting many distinct (or long) URIs cannot grow memory without limit: a full cache
# is simply cleared. A role's static answers are shared by its sessions; a dynamic
# authorizer's are kept per session (the answer may depend on the session).
CACHE_LIMIT = 1024
ROLE_CACHE_CHARS = 1024 * 1024
SESSION_CACHE_CHARS = 64 * 1024
AUTHORIZER_TIMEOUT = 30.0
# An authorizer asked, while answering, about its own callee's role (a pattern registration
# of the authorizer by a session whose role is dynamic) would recurse without end.
MAX_AUTHORIZER_NESTING = 4

#: The options of a question about a concrete URI: may the session subscribe to / register
#: exactly this topic / procedure (an event's topic, a call's procedure).
CONCRETE: dict = {"match": "exact"}


class AnswerCache(dict):
    """Authorization answers by (uri, action): a dict (lookups stay C ``dict.get``), bounded
    by entries and by the characters of the URIs held."""

    __slots__ = ("chars", "max_entries", "max_chars")

    def __init__(self, max_entries: int = CACHE_LIMIT, max_chars: int = SESSION_CACHE_CHARS):
        super().__init__()
        self.chars = 0
        self.max_entries = max_entries
        self.max_chars = max_chars

    def put(self, key: tuple, ans: Authorization) -> None:
        size = len(key[0])
        if size > self.max_chars:
            return
        if len(self) >= self.max_entries or self.chars + size > self.max_chars:
            self.clear()
            self.chars = 0
        if key not in self:
            self.chars += size
        self[key] = ans


@dataclass(frozen=True, slots=True)
class Authorization:
    allow: bool
    disclose: bool = False
    cache: bool = False


DENY = Authorization(False)
ALLOW = Authorization(True)


class Role:
    name: str
    #: True when answers depend on the session (dynamic authorizer): the broker and dealer then
    #: ask per session; otherwise once per role.
    per_session = False

    def authorize_now(self, session: Any, uri: str, action: str, options: dict) -> Authorization | None:
        """The answer without waiting, or None when only ``authorize`` (which may block) knows."""
        raise NotImplementedError

    def authorize(self, session: Any, uri: str, action: str, options: dict) -> Authorization:
        return self.authorize_now(session, uri, action, options) or DENY


class TrustedRole(Role):
    name = "trusted"

    def authorize_now(self, session, uri, action, options):
        return ALLOW


def _authorization(p: Permission, action: str) -> Authorization:
    disclose = False
    if action == "call":
        disclose = p.disclose_caller
    elif action == "publish":
        disclose = p.disclose_publisher
    return Authorization(getattr(p, action), disclose, p.cache)


class StaticRole(Role):
    def __init__(self, name: str, permissions: list[Permission],
                 allow_by_default: bool = False) -> None:
        self.name = name
        # Crossbar 0.x's "allow-by-default": a URI no permission matches is allowed (all four
        # actions, nothing disclosed) instead of denied; real configs still carry it.
        self._default = ALLOW if allow_by_default else DENY
        self.table: UriTable[Permission] = UriTable()
        for p in permissions:
            self.table.add(p.uri, p.match, p)
        self._answers = AnswerCache(CACHE_LIMIT, ROLE_CACHE_CHARS)

    def authorize_now(self, session, uri, action, options):
        key = (uri, action)
        ans = self._answers.get(key)
        if ans is None:
            perm = self.table.best(uri)
            ans = _authorization(perm, action) if perm is not None else self._default
            self._answers.put(key, ans)
        return ans


_nesting = gevent.local.local()


class DynamicRole(Role):
    """Asks ``authorizer(session_details, uri, action, options)`` on the realm."""

    per_session = True

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
        depth = getattr(_nesting, "depth", 0)
        if depth >= MAX_AUTHORIZER_NESTING:
            log.warning("authorizer %s: asked about %s %s while answering %d questions of its "
                        "own: denied", self.authorizer, action, uri_text(uri), depth)
            return DENY
        _nesting.depth = depth + 1
        try:
            result = self.realm.service.call(
                self.authorizer, [session.details(), uri, action, options],
                timeout=AUTHORIZER_TIMEOUT)
        except Exception as e:  # the authorizer failed: deny, the client sees not_authorized
            log.warning("authorizer %s failed for %s %s: %s", self.authorizer, action,
                        uri_text(uri), e)
            return DENY
        finally:
            _nesting.depth = depth
        ans = parse_authorizer_result(result)
        if ans is None:
            log.warning("authorizer %s returned %.200r for %s %s: denied", self.authorizer,
                        result, action, uri_text(uri))
            return DENY
        if ans.cache:
            session.authz_cache.put((uri, action), ans)
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


def build_roles(roles_cfg: list[RoleConfig], realm: Any) -> dict[str, Role]:
    roles: dict[str, Role] = {"trusted": TrustedRole()}
    for r in roles_cfg:
        if r.authorizer is not None:
            roles[r.name] = DynamicRole(r.name, r.authorizer, realm)
        else:
            roles[r.name] = StaticRole(r.name, r.permissions, r.allow_by_default)
    return roles
