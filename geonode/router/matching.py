"""URI matching tables for exact, prefix and wildcard patterns.

One ``UriTable`` holds objects keyed by (pattern, match policy). Used for subscriptions,
registrations and static role permissions, all of which need the same two questions answered:
"everything matching this URI" (broker) and "the most specific match" (dealer, permissions).

Every lookup costs O(len(uri)) plus the matches found, whatever the table holds (docs/security.md):
prefix patterns live in a radix tree walked with ``str.startswith`` (C speed) along the URI,
wildcard patterns in a trie of components walked once over ``uri.split(".")``. Trying every
prefix length of the URI instead (``uri[:i]`` for each ``i``) was quadratic: one 512 KiB URI
froze the node for 38 s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from geonode.uri import infer_match  # noqa: F401  (Crossbar's starred URIs; re-exported)

T = TypeVar("T")

MATCHES = ("exact", "prefix", "wildcard")


def wildcard_matches(parts: tuple[str, ...], uri_parts: list[str]) -> bool:
    if len(parts) != len(uri_parts):
        return False
    for p, u in zip(parts, uri_parts, strict=True):
        if p and p != u:
            return False
    return True


def wildcard_rank(parts: tuple[str, ...]) -> tuple[int, int]:
    """Sort key of a wildcard pattern among those of its length: more fixed components is more
    specific; at equal count, fixed components earlier win (``a.b.`` beats ``a..c``), the WAMP
    spec's tie-break. The second item is the fixed/empty mask read as a binary number, first
    component highest, so comparing it compares the masks left to right."""
    bits = "".join("1" if p else "0" for p in parts)
    return (bits.count("1"), int(bits, 2))


def _common_prefix_len(a: str, b: str, start: int) -> int:
    """Length of the common prefix of ``a`` and ``b[start:]``: a binary search over
    ``startswith`` (O(n log n) in C) instead of a Python loop over characters."""
    lo, hi = 0, min(len(a), len(b) - start)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if b.startswith(a[:mid], start):
            lo = mid
        else:
            hi = mid - 1
    return lo


_EMPTY = object()


class _RadixNode:
    """A radix tree node: ``label`` is the key piece on the edge from its parent (a str, or a
    tuple of components), ``children`` maps a child's first label item to the child."""

    __slots__ = ("label", "children", "value")

    def __init__(self, label: Any, value: object = _EMPTY) -> None:
        self.label = label
        self.children: dict[str, Any] = {}
        self.value = value

    def relabel(self, label: Any) -> None:
        self.label = label


class _RadixTree:
    """The insert and remove walks ``PrefixTree`` and ``WildcardTree`` share: ``add(key,
    value)`` and ``remove(key)`` (a missing key is no error). The trees differ in the key (a
    str, or a tuple of components), the node class, the "no value" marker and how the common
    part of a label and a key is measured. Both walks cost O(len(key)) plus the label
    comparisons along one path."""

    __slots__ = ("root",)
    #: set by each subclass: its node class (called with a label, and a value unless empty),
    #: the value of a node that holds none, an empty key (the root's label, never read), and
    #: ``_common(label, key, start)``: how many leading items of ``label`` equal ``key[start:]``'s
    _node: type = _RadixNode
    _empty: object = _EMPTY
    _root_label: Any = ""
    _common: Callable[[Any, Any, int], int]

    def __init__(self) -> None:
        self.root: Any = self._node(self._root_label)

    def add(self, key: Any, value: Any) -> None:
        new_node, common_len = self._node, self._common
        node, pos, n = self.root, 0, len(key)
        while pos < n:
            child = node.children.get(key[pos])
            if child is None:
                node.children[key[pos]] = new_node(key[pos:], value)
                return
            label = child.label
            common = common_len(label, key, pos)
            if common < len(label):
                # split the edge: node -> mid (label[:common]) -> child (label[common:])
                mid = new_node(label[:common])
                child.relabel(label[common:])
                mid.children[child.label[0]] = child
                node.children[key[pos]] = mid
                child = mid
            node, pos = child, pos + common
        node.value = value

    def remove(self, key: Any) -> None:
        path = [self.root]
        node, pos, n = self.root, 0, len(key)
        while pos < n:
            child = node.children.get(key[pos])
            if child is None:
                return
            end = pos + len(child.label)
            if key[pos:end] != child.label:
                return
            node, pos = child, end
            path.append(node)
        node.value = self._empty
        # Drop or merge nodes that no longer hold a value or a branch.
        while len(path) > 1:
            node = path.pop()
            parent = path[-1]
            if node.value is not self._empty:
                break
            if not node.children:
                del parent.children[node.label[0]]
                continue          # the parent may now be mergeable too
            if len(node.children) == 1:
                (only,) = node.children.values()
                only.relabel(node.label + only.label)
                parent.children[node.label[0]] = only
            break


class PrefixTree(_RadixTree, Generic[T]):
    """Prefix patterns in a radix tree (nodes <= 2 x patterns + 1: removal merges).

    A lookup walks one path: one dict lookup and one ``startswith`` per node, the labels it
    compares adding up to at most ``len(uri)`` characters."""

    __slots__ = ()
    _common = staticmethod(_common_prefix_len)
    # add(key, obj) and remove(key): _RadixTree's, with the key a str

    def prefixes_of(self, uri: str) -> list[T]:
        """Values of every key that is a prefix of ``uri``, shortest first."""
        node = self.root
        out: list = [] if node.value is _EMPTY else [node.value]
        children, pos, n = node.children, 0, len(uri)
        while pos < n:
            child = children.get(uri[pos])
            if child is None or not uri.startswith(child.label, pos):
                break
            pos += len(child.label)
            if child.value is not _EMPTY:
                out.append(child.value)
            children = child.children
        return out

    def longest(self, uri: str) -> T | None:
        """The value of the longest key that is a prefix of ``uri``."""
        node = self.root
        best = node.value
        children, pos, n = node.children, 0, len(uri)
        while pos < n:
            child = children.get(uri[pos])
            if child is None or not uri.startswith(child.label, pos):
                break
            pos += len(child.label)
            if child.value is not _EMPTY:
                best = child.value
            children = child.children
        return None if best is _EMPTY else best


class _WildNode(_RadixNode):
    """A node of the wildcard radix tree: ``label`` is the run of components on the edge from
    its parent ("" = any one component), ``fixed`` whether the run holds no wildcard;
    ``children`` is keyed by their first component ("" the wildcard child), ``value`` is (rank,
    insertion number, object) of the pattern ending here, or None."""

    __slots__ = ("fixed",)

    def __init__(self, label: tuple[str, ...], value: tuple | None = None) -> None:
        # not super().__init__: one call less per node made
        self.label = label
        self.children: dict[str, Any] = {}
        self.value = value
        self.fixed = "" not in label

    def relabel(self, label: tuple[str, ...]) -> None:
        self.label = label
        self.fixed = "" not in label


def _common_run(a: tuple[str, ...], b: tuple[str, ...], start: int) -> int:
    n = min(len(a), len(b) - start)
    i = 0
    while i < n and a[i] == b[start + i]:
        i += 1
    return i


class WildcardTree(_RadixTree, Generic[T]):
    """Wildcard patterns in a radix tree over components (runs of single-child components
    share one node, so a long pattern costs one node, not one per component).

    A lookup follows, from each node, the child for the URI's next component and the
    wildcard child: each node is visited at most once, and only nodes on the way to a pattern
    that matches the URI so far, so the cost is O(components) per live branch, never a scan of
    every pattern of the URI's length."""

    __slots__ = ("_seq",)
    _node = _WildNode
    _empty = None
    _root_label = ()
    _common = staticmethod(_common_run)

    def __init__(self) -> None:
        super().__init__()
        self._seq = 0

    def add(self, parts: tuple[str, ...], obj: T) -> None:
        self._seq += 1
        _RadixTree.add(self, parts, (wildcard_rank(parts), self._seq, obj))

    # remove(parts): _RadixTree's

    def _matches(self, uri: str) -> list[tuple]:
        parts = uri.split(".")
        n = len(parts)
        found = []
        stack = [(self.root, 0)]
        while stack:
            node, i = stack.pop()
            if i == n:
                if node.value is not None:
                    found.append(node.value)
                continue
            children = node.children
            comp = parts[i]
            for child in (children.get(comp), children.get("") if comp else None):
                if child is None:
                    continue
                label = child.label
                j = i + len(label)
                if j > n:
                    continue
                if j > i + 1:   # the first component is the key just looked up
                    if child.fixed:
                        if tuple(parts[i + 1:j]) != label[1:]:
                            continue
                    elif not wildcard_matches(label[1:], parts[i + 1:j]):
                        continue
                stack.append((child, j))
        return found

    def matching(self, uri: str) -> list[T]:
        """Every matching pattern's value, in insertion order."""
        found = self._matches(uri)
        if len(found) > 1:
            found.sort(key=lambda v: v[1])
        return [v[2] for v in found]

    def best(self, uri: str) -> T | None:
        found = self._matches(uri)
        if not found:
            return None
        return max(found, key=lambda v: v[0])[2]

    def ranked(self, uri: str) -> list[T]:
        """Every matching pattern's value, most specific first."""
        found = self._matches(uri)
        if len(found) > 1:
            found.sort(key=lambda v: (v[0], -v[1]), reverse=True)
        return [v[2] for v in found]


class UriTable(Generic[T]):
    """Objects stored under a URI pattern and a match policy."""

    __slots__ = ("exact", "prefix", "wildcard", "_prefix_tree", "_wild_tree")

    def __init__(self) -> None:
        self.exact: dict[str, T] = {}
        self.prefix: dict[str, T] = {}
        self.wildcard: dict[str, T] = {}
        self._prefix_tree: PrefixTree[T] = PrefixTree()
        self._wild_tree: WildcardTree[T] = WildcardTree()

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
        if match == "prefix":
            self._prefix_tree.add(uri, obj)
        elif match == "wildcard":
            self._wild_tree.add(tuple(uri.split(".")), obj)

    def remove(self, uri: str, match: str) -> T | None:
        obj = self._table(match).pop(uri, None)
        if obj is not None:
            if match == "prefix":
                self._prefix_tree.remove(uri)
            elif match == "wildcard":
                self._wild_tree.remove(tuple(uri.split(".")))
        return obj

    def __len__(self) -> int:
        return len(self.exact) + len(self.prefix) + len(self.wildcard)

    def values(self) -> Iterator[T]:
        yield from self.exact.values()
        yield from self.prefix.values()
        yield from self.wildcard.values()

    def match_all(self, uri: str) -> list[T]:
        """Every object whose pattern matches ``uri`` (order: exact, prefixes shortest first,
        wildcards in the order they were added)."""
        obj = self.exact.get(uri)
        out: list[T] = [] if obj is None else [obj]
        if self.prefix:
            # Shortest prefix first, the order Crossbar's trie delivers events in.
            out.extend(self._prefix_tree.prefixes_of(uri))
        if self.wildcard:
            out.extend(self._wild_tree.matching(uri))
        return out

    def best(self, uri: str) -> T | None:
        """The most specific match: exact, else longest prefix, else best wildcard."""
        obj = self.exact.get(uri)
        if obj is not None:
            return obj
        if self.prefix:
            obj = self._prefix_tree.longest(uri)
            if obj is not None:
                return obj
        if self.wildcard:
            return self._wild_tree.best(uri)
        return None

    def ranked(self, uri: str) -> list[T]:
        """Every match, most specific first: exact, prefixes longest first, wildcards best
        first (``best(uri)`` is the first of these)."""
        obj = self.exact.get(uri)
        out: list[T] = [] if obj is None else [obj]
        if self.prefix:
            hits = self._prefix_tree.prefixes_of(uri)
            hits.reverse()
            out.extend(hits)
        if self.wildcard:
            out.extend(self._wild_tree.ranked(uri))
        return out
