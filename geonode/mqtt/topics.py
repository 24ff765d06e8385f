"""MQTT topic names and filters as WAMP URIs and subscriptions (Crossbar's mapping).

A topic level separator ``/`` is a URI component separator ``.``: MQTT ``a/b/c`` is WAMP
``a.b.c`` and back. A filter becomes one WAMP subscription, or two for ``#``:

====================  ===========================================================
MQTT filter           WAMP subscriptions
====================  ===========================================================
``a/b``               ``a.b`` exact
``a/+/c``, ``+``      ``a..c`` wildcard, ``""`` wildcard (one component)
``a/#``               ``a.`` prefix, and ``a`` exact: MQTT's ``#`` also matches the
                      parent level itself (MQTT 4.7.1.2), WAMP's prefix ``a.`` does not
``#``                 ``""`` prefix (everything)
``a/+/b/#``           ``a.`` prefix, each event matched against the filter here (WAMP has
                      no pattern mixing both wildcards; Crossbar refuses such filters)
====================  ===========================================================

Filters starting with a wildcard do not match topics starting with ``$`` (MQTT-4.7.2-1), nor
the router's own ``wamp.`` topics (the meta API's events: WAMP's ``$SYS``); ``wamp/#`` or an
exact ``wamp/session/on_join`` gets them, as the role allows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from geonode.mqtt.codec import Malformed


def check_topic_name(topic: str) -> None:
    """A PUBLISH's (or a will's) topic name as the standard wants it, else ``Malformed``."""
    if not topic:
        raise Malformed("empty topic name")                        # MQTT-4.7.3-1
    if "+" in topic or "#" in topic:
        raise Malformed(f"wildcard in topic name {topic[:100]!r}")  # MQTT-3.3.2-2


def check_filter(topic_filter: str) -> None:
    """A topic filter's wildcards where the standard allows them, else ``Malformed``."""
    if not topic_filter:
        raise Malformed("empty topic filter")                       # MQTT-4.7.3-1
    hash_at = topic_filter.find("#")
    if hash_at >= 0 and (hash_at != len(topic_filter) - 1
                         or (hash_at and topic_filter[hash_at - 1] != "/")):
        # MQTT-4.7.1-2: '#' alone or after '/', and last
        raise Malformed(f"misplaced '#' in topic filter {topic_filter[:100]!r}")
    if "+" in topic_filter:
        for level in topic_filter.split("/"):
            if "+" in level and level != "+":
                # MQTT-4.7.1-3: '+' occupies a whole level
                raise Malformed(f"misplaced '+' in topic filter {topic_filter[:100]!r}")


def name_to_uri(topic: str) -> str:
    return topic.replace("/", ".")


def uri_to_name(uri: str) -> str:
    return uri.replace(".", "/")


@dataclass(frozen=True, slots=True)
class FilterPlan:
    """How one MQTT filter is served by WAMP subscriptions."""

    required: tuple[str, str]             # (uri, match): refused -> the filter is refused
    optional: tuple[str, str] | None      # best effort: ``a`` exact for ``a/#``
    check: Callable[[str], bool] | None   # is an event's WAMP URI really matched; None: yes


def _no_dollar(uri: str) -> bool:
    return not uri.startswith(("$", "wamp."))


def _levels_matcher(levels: list[str]) -> Callable[[str], bool]:
    """MQTT matching of a filter mixing ``+`` and ``#`` on a WAMP URI (O(URI length))."""
    multi = levels[-1] == "#"
    fixed = levels[:-1] if multi else levels
    n = len(fixed)
    dollar = levels[0] in ("+", "#")

    def check(uri: str) -> bool:
        if dollar and uri.startswith(("$", "wamp.")):
            return False
        parts = uri.split(".")
        if len(parts) < n if multi else len(parts) != n:
            return False
        for want, got in zip(fixed, parts, strict=False):
            if want != "+" and want != got:
                return False
        return True

    return check


def plan(topic_filter: str) -> FilterPlan:
    """The WAMP subscriptions for a filter ``check_filter`` accepted."""
    dollar = _no_dollar if topic_filter[0] in "+#" else None
    has_plus = "+" in topic_filter
    if topic_filter.endswith("#"):
        base = topic_filter[:-1]                 # "" or "a/b/"
        if not has_plus:
            parent = name_to_uri(base[:-1]) if base else ""
            return FilterPlan((name_to_uri(base), "prefix"),
                              (parent, "exact") if parent else None, dollar)
        # both wildcards: the literal levels before the first '+' as a prefix, then match here
        levels = topic_filter.split("/")
        first = levels.index("+")
        prefix = "".join(f"{level}." for level in levels[:first])
        return FilterPlan((prefix, "prefix"), None, _levels_matcher(levels))
    if has_plus:
        uri = ".".join("" if level == "+" else level for level in topic_filter.split("/"))
        return FilterPlan((uri, "wildcard"), None, dollar)
    return FilterPlan((name_to_uri(topic_filter), "exact"), None, None)
