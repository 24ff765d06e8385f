"""WAMP URI rules shared by the transports' message parser and the router.

A URI is checked in O(len) with plain character-class scans and substring tests; autobahn's
anchored regexes (``^([^\\s.#]+\\.)*([^\\s.#]+)$``) give the same answers but capture every
component (~90 ms per MiB of ``a.a.a…``). URIs longer than :data:`MAX_URI_LENGTH` are refused
before any of that (``wamp.error.invalid_uri``; docs/security.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

#: Longest URI a realm accepts unless its ``options.max_uri_length`` says otherwise. A URI is a
#: name, not a payload: real ones are tens of characters, ids and hashes included. 8 KiB is the
#: request-line limit of common HTTP servers, ample headroom for names built from ids, and
#: small enough that every table keyed by URIs (subscriptions, registrations, retained events,
#: authorization caches) stays small per entry. Crossbar has no limit (only the message size).
MAX_URI_LENGTH = 8192

# "loose" (Crossbar's default): a component is anything but whitespace, "." and "#";
# "strict": lowercase letters, digits and "_".
_LOOSE_BAD = re.compile(r"[\s#]").search
_STRICT_OK = re.compile(r"[0-9a-z_.]*").fullmatch


def checker(strict: bool = False,
            max_length: int = MAX_URI_LENGTH) -> Callable[[Any, str], bool]:
    """``check(uri, match)``: the WAMP spec's URI rules for ``match`` (a realm binds its
    settings once: one call per check on the hot path). Exact URIs have no empty component,
    prefix patterns may end in one (``com.app.``; ``""`` matches everything), wildcard
    patterns may have them anywhere (``com..update``)."""
    def check(uri: Any, match: str = "exact") -> bool:
        if type(uri) is not str or len(uri) > max_length:
            return False
        if strict:
            if _STRICT_OK(uri) is None:
                return False
        elif _LOOSE_BAD(uri) is not None:
            return False
        if match == "exact":
            return uri != "" and uri[0] != "." and uri[-1] != "." and ".." not in uri
        if match == "prefix":
            return uri == "" or (uri[0] != "." and ".." not in uri)
        return match == "wildcard"
    return check


def valid_uri(uri: Any, match: str = "exact", strict: bool = False,
              max_length: int = MAX_URI_LENGTH) -> bool:
    return checker(strict, max_length)(uri, match)


def uri_text(uri: Any, limit: int = 200) -> str:
    """``uri`` for an error message or a log line: quoted, cut to ``limit`` characters."""
    if type(uri) is str and len(uri) > limit:
        return f"{uri[:limit]!r}... ({len(uri)} characters)"
    return repr(uri)


def infer_match(uri: str) -> tuple[str, str]:
    """A permission without ``match``, as Crossbar reads it (starred URIs): ``a.b.*`` is prefix
    ``a.b.``, ``a.*.c`` is wildcard ``a..c``; and, per the reference, ``a..c`` is wildcard too.
    Returns (uri, match)."""
    stars = uri.count("*")
    if stars == 1 and uri.endswith("*"):
        return uri[:-1], "prefix"
    if stars:
        return uri.replace("*", ""), "wildcard"
    if uri and "" in uri.split("."):
        return uri, "wildcard"
    return uri, "exact"
