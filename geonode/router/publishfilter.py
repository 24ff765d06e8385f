"""Black/white listing of event receivers (WAMP "subscriber black- and whitelisting")."""

from __future__ import annotations

from typing import Any, Literal


def has_filter(publish: Any) -> bool:
    p = publish
    return not (p.exclude is None and p.eligible is None and p.exclude_authid is None
                and p.eligible_authid is None and p.exclude_authrole is None
                and p.eligible_authrole is None)


class Filter:
    """A publication's lists as sets, built once per publication (not once per matching
    subscription: a PUBLISH with 100,000-entry lists costs O(lists + subscribers))."""

    __slots__ = ("eligible", "eligible_authid", "eligible_authrole", "exclude",
                 "exclude_authid", "exclude_authrole")

    def __init__(self, publish: Any) -> None:
        p = publish
        self.eligible = set(p.eligible) if p.eligible is not None else None
        self.eligible_authid = set(p.eligible_authid) if p.eligible_authid is not None else None
        self.eligible_authrole = (set(p.eligible_authrole)
                                  if p.eligible_authrole is not None else None)
        self.exclude = set(p.exclude or ())
        self.exclude_authid = set(p.exclude_authid or ())
        self.exclude_authrole = set(p.exclude_authrole or ())


def compile_filter(publish: Any) -> Filter | Literal[False]:
    """The publication's ``Filter``, or False when it has no lists (the common case)."""
    return Filter(publish) if has_filter(publish) else False


def receivers(subscribers, publisher: Any, publish: Any,
              flt: Filter | Literal[False] | None = None) -> list:
    """The sessions among ``subscribers`` that get the event of ``publish`` from ``publisher``
    (``flt``: ``compile_filter(publish)``, for a publication matching several subscriptions;
    None: not compiled yet).

    Whitelists intersect, blacklists subtract; the publisher itself is left out unless it
    said ``exclude_me: false``.
    """
    exclude_me = publish.exclude_me is None or publish.exclude_me
    if not flt:
        if flt is False or not has_filter(publish):
            if exclude_me:
                return [s for s in subscribers if s is not publisher]
            return list(subscribers)
        flt = Filter(publish)
    eligible, eligible_authid, eligible_authrole = (flt.eligible, flt.eligible_authid,
                                                    flt.eligible_authrole)
    exclude, exclude_authid, exclude_authrole = (flt.exclude, flt.exclude_authid,
                                                 flt.exclude_authrole)
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
