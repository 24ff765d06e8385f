"""Black/white listing of event receivers (WAMP "subscriber black- and whitelisting")."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def has_filter(publish: Any) -> bool:
    p = publish
    return not (p.exclude is None and p.eligible is None and p.exclude_authid is None
                and p.eligible_authid is None and p.exclude_authrole is None
                and p.eligible_authrole is None)


def selector(publisher: Any, publish: Any) -> Callable[[Iterable], list]:
    """``select(subscribers)``: the sessions among ``subscribers`` that get the event of
    ``publish`` from ``publisher``.

    Whitelists intersect, blacklists subtract; the publisher itself is left out unless it
    said ``exclude_me: false``. The lists become sets once per publication, not once per
    matching subscription: a PUBLISH with a 100,000-entry list costs O(list + subscribers).
    """
    exclude_me = publish.exclude_me is None or publish.exclude_me
    if not has_filter(publish):
        if exclude_me:
            return lambda subscribers: [s for s in subscribers if s is not publisher]
        return list

    eligible = set(publish.eligible) if publish.eligible is not None else None
    eligible_authid = set(publish.eligible_authid) if publish.eligible_authid is not None else None
    eligible_authrole = (set(publish.eligible_authrole)
                         if publish.eligible_authrole is not None else None)
    exclude = set(publish.exclude or ())
    exclude_authid = set(publish.exclude_authid or ())
    exclude_authrole = set(publish.exclude_authrole or ())

    def select(subscribers: Iterable) -> list:
        out = []
        for s in subscribers:
            if exclude_me and s is publisher:
                continue
            if eligible is not None and s.id not in eligible:
                continue
            if eligible_authid is not None and s.authid not in eligible_authid:
                continue
            if eligible_authrole is not None and s.authrole not in eligible_authrole:
                continue
            if s.id in exclude or s.authid in exclude_authid or s.authrole in exclude_authrole:
                continue
            out.append(s)
        return out
    return select


def receivers(subscribers: Iterable, publisher: Any, publish: Any) -> list:
    """``selector(publisher, publish)(subscribers)``, for one set of subscribers."""
    return selector(publisher, publish)(subscribers)
