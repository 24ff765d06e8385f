"""URI matching tables for exact, prefix and wildcard patterns.

One ``UriTable`` holds objects keyed by (pattern, match policy). Used for subscriptions,
registrations and static role permissions, all of which need the same two questions answered:
"everything matching this URI" (broker) and "the most specific match" (dealer, permissions).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

MATCHES = ("exact", "prefix", "wildcard")


def wildcard_matches(parts: tuple[str, ...], uri_parts: list[str]) -> bool:
    if len(parts) != len(uri_parts):
        return False
    for p, u in zip(parts, uri_parts, strict=True):
        if p and p != u:
            return False
    return True


def _wildcard_rank(parts: tuple[str, ...]) -> tuple:
    # More fixed components is more specific; at equal count, fixed components earlier win
    # (``a.b.`` beats ``a..c``), which is the WAMP spec's tie-break.
    return (sum(1 for p in parts if p), [1 if p else 0 for p in parts])


class UriTable(Generic[T]):
    """Objects stored under a URI pattern and a match policy."""

    __slots__ = ("exact", "prefix", "wildcard", "_wild_by_len")

    def __init__(self) -> None:
        self.exact: dict[str, T] = {}
        self.prefix: dict[str, T] = {}
        self.wildcard: dict[str, T] = {}
        # component count -> {pattern: (parts, obj)}: a URI can only match patterns of its length
        self._wild_by_len: dict[int, dict[str, tuple[tuple[str, ...], T]]] = {}

    def _table(self, match: str) -> dict[str, T]:
        if match == "exact":
            return self.exact
        if match == "prefix":
            return self.prefix
        if match == "wildcard":
            return self.wildcard
        raise ValueError(f"invalid match policy {match!r}")

    def get(self, uri: str, match: str = "exact") -> T | None:
        return self._table(match).get(uri)

    def add(self, uri: str, match: str, obj: T) -> None:
        self._table(match)[uri] = obj
        if match == "wildcard":
            parts = tuple(uri.split("."))
            self._wild_by_len.setdefault(len(parts), {})[uri] = (parts, obj)

    def remove(self, uri: str, match: str) -> T | None:
        obj = self._table(match).pop(uri, None)
        if obj is not None and match == "wildcard":
            n = uri.count(".") + 1
            bucket = self._wild_by_len.get(n)
            if bucket is not None:
                bucket.pop(uri, None)
                if not bucket:
                    del self._wild_by_len[n]
        return obj

    def __len__(self) -> int:
        return len(self.exact) + len(self.prefix) + len(self.wildcard)

    def values(self) -> Iterator[T]:
        yield from self.exact.values()
        yield from self.prefix.values()
        yield from self.wildcard.values()

    def match_all(self, uri: str) -> list[T]:
        """Every object whose pattern matches ``uri`` (order: exact, prefixes shortest first,
        wildcards)."""
        out: list[T] = []
        obj = self.exact.get(uri)
        if obj is not None:
            out.append(obj)
        if self.prefix:
            # Shortest prefix first, the order Crossbar's trie delivers events in.
            prefix = self.prefix
            if len(prefix) < len(uri):
                hits = [(p, o) for p, o in prefix.items() if uri.startswith(p)]
                if len(hits) > 1:
                    hits.sort(key=lambda h: len(h[0]))
                out.extend(o for _, o in hits)
            else:
                for i in range(len(uri) + 1):
                    o = prefix.get(uri[:i])
                    if o is not None:
                        out.append(o)
        if self._wild_by_len:
            uri_parts = uri.split(".")
            bucket = self._wild_by_len.get(len(uri_parts))
            if bucket:
                out.extend(o for parts, o in bucket.values() if wildcard_matches(parts, uri_parts))
        return out

    def best(self, uri: str) -> T | None:
        """The most specific match: exact, else longest prefix, else best wildcard."""
        obj = self.exact.get(uri)
        if obj is not None:
            return obj
        if self.prefix:
            for i in range(len(uri), -1, -1):
                o = self.prefix.get(uri[:i])
                if o is not None:
                    return o
        if self._wild_by_len:
            uri_parts = uri.split(".")
            bucket = self._wild_by_len.get(len(uri_parts))
            if bucket:
                best = None
                best_rank = None
                for parts, o in bucket.values():
                    if wildcard_matches(parts, uri_parts):
                        rank = _wildcard_rank(parts)
                        if best_rank is None or rank > best_rank:
                            best, best_rank = o, rank
                return best
        return None


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
