"""The URI matching tables, URI checks and answer caches against naive references, on random
patterns, and their cost on megabyte URIs and on crowded tables (issue 9, row 1)."""

from __future__ import annotations

import contextlib
import random
import re
import signal
import time

import pytest
from support import scaled

from geonode.config.model import Permission
from geonode.router.authorization import StaticRole
from geonode.router.matching import UriTable

pytestmark = pytest.mark.inprocess

# (geonode.uri and AnswerCache are imported by the tests using them, so that each test of
# this module fails on its own where they are missing)

MiB = 1024 * 1024


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail (rather than hang) when the block runs longer than ``seconds``: the quadratic
    code this guards against takes minutes on these inputs."""
    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds}s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# -- naive references ------------------------------------------------------------------------

def _wild_ok(pattern: str, uri: str) -> bool:
    p, u = pattern.split("."), uri.split(".")
    return len(p) == len(u) and all(not a or a == b for a, b in zip(p, u, strict=True))


def _rank(pattern: str) -> tuple:
    parts = pattern.split(".")
    return (sum(1 for x in parts if x), [1 if x else 0 for x in parts])


class Naive:
    """A list of (pattern, match, obj) searched from end to end."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], object] = {}

    def match_all(self, uri: str) -> list:
        exact = [o for (p, mt), o in self.items.items() if mt == "exact" and p == uri]
        prefix = sorted(((p, o) for (p, mt), o in self.items.items()
                         if mt == "prefix" and uri.startswith(p)), key=lambda x: len(x[0]))
        wild = [o for (p, mt), o in self.items.items() if mt == "wildcard" and _wild_ok(p, uri)]
        return exact + [o for _, o in prefix] + wild

    def ranked(self, uri: str) -> list:
        exact = [o for (p, mt), o in self.items.items() if mt == "exact" and p == uri]
        prefix = sorted(((p, o) for (p, mt), o in self.items.items()
                         if mt == "prefix" and uri.startswith(p)), key=lambda x: -len(x[0]))
        wild = sorted(((p, o) for (p, mt), o in self.items.items()
                       if mt == "wildcard" and _wild_ok(p, uri)),
                      key=lambda x: _rank(x[0]), reverse=True)
        return exact + [o for _, o in prefix] + [o for _, o in wild]

    def best(self, uri: str):
        r = self.ranked(uri)
        return r[0] if r else None


@pytest.mark.parametrize("seed", range(4))
def test_tables_agree_with_a_naive_reference(seed):
    """Random patterns over a tiny alphabet (so that they collide, nest and share prefixes),
    added and removed in rounds; every lookup kind compared after each round."""
    rnd = random.Random(seed)
    alphabet = "ab.."

    def word(n):
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, n)))

    for _ in range(300):
        table: UriTable = UriTable()
        ref = Naive()
        for round_ in range(4):
            for i in range(rnd.randint(0, 15)):
                key = (word(7), rnd.choice(["exact", "prefix", "wildcard", "wildcard"]))
                if key in ref.items:
                    continue
                obj = (key, round_, i)
                ref.items[key] = obj
                table.add(key[0], key[1], obj)
            for key in list(ref.items):
                if rnd.random() < 0.3:
                    assert table.remove(*key) is ref.items.pop(key)
            assert len(table) == len(ref.items)
            for _ in range(12):
                uri = word(10)
                assert table.match_all(uri) == ref.match_all(uri), (ref.items, uri)
                assert table.ranked(uri) == ref.ranked(uri), (ref.items, uri)
                assert table.best(uri) == ref.best(uri), (ref.items, uri)
        for key in list(ref.items):
            table.remove(*key)
        # everything removed: the trees are back to their empty roots
        assert not table._prefix_tree.root.children and not table._wild_tree.root.children


def _crowded_table() -> UriTable:
    t: UriTable = UriTable()
    for i in range(200):
        t.add(f"com.app.{i}", "exact", ("e", i))
        t.add(f"com.app.{i}", "prefix", ("p", i))
        t.add(f"com..{i}", "wildcard", ("w", i))
    t.add("", "prefix", "everything")
    t.add("com.", "prefix", "com")
    t.add("com..a", "wildcard", "wild")
    return t


@pytest.mark.parametrize("shape", ["plain", "dotted", "dots"])
def test_megabyte_uri_lookups_are_linear(shape):
    uri = {"plain": "com." + "a" * MiB, "dotted": "com." + "a." * (MiB // 2) + "a",
           "dots": "." * MiB}[shape]
    t = _crowded_table()
    # also a megabyte pattern of each kind in the table
    t.add(uri, "exact", "big-exact")
    t.add(uri[:-1], "prefix", "big-prefix")
    t.add(uri.rsplit(".", 1)[0] + ".", "wildcard", "big-wild")
    with deadline(scaled(5.0)):
        t0 = time.perf_counter()
        for _ in range(3):
            all_ = t.match_all(uri)
            t.best(uri)
            t.ranked(uri)
            t.match_all(uri + "x")
            t.best(uri[: MiB // 2])
        took = time.perf_counter() - t0
    assert "everything" in all_ and "big-prefix" in all_
    assert took < scaled(2.5), f"{took:.2f}s"


def test_crowded_tables_cost_per_lookup_does_not_grow_with_the_table():
    """20,000 prefix and 20,000 wildcard patterns (as one session's subscriptions could be): a
    lookup visits only the patterns on its way, not all of those of the URI's length."""
    t: UriTable = UriTable()
    for i in range(20_000):
        t.add(f"org.{i}.", "prefix", i)
        t.add(f"org.{i}..end", "wildcard", i)
        t.add(f"com.x{i}", "prefix", i)
    with deadline(scaled(10.0)):
        t0 = time.perf_counter()
        for i in range(20_000):
            t.match_all(f"com.app.{i}.end")     # 4 components, like every wildcard above
            t.best(f"com.app.{i}.end")
        took = time.perf_counter() - t0
    assert took < scaled(3.0), f"{took:.2f}s for 40,000 lookups"
    assert t.match_all("org.7.x.end") == [7, 7]


# -- URI checks ------------------------------------------------------------------------------

# The URI rules as regexes (the WAMP spec's, as autobahn writes them), anchored with \Z:
# "$" also matches before a final newline.
_RULES = {
    ("strict", "exact"): r"([0-9a-z_]+\.)*([0-9a-z_]+)\Z",
    ("strict", "prefix"): r"([0-9a-z_]+\.)*([0-9a-z_]*)\Z",
    ("strict", "wildcard"): r"(([0-9a-z_]+\.)|\.)*([0-9a-z_]+)?\Z",
    ("loose", "exact"): r"([^\s.#]+\.)*([^\s.#]+)\Z",
    ("loose", "prefix"): r"([^\s.#]+\.)*([^\s.#]*)\Z",
    ("loose", "wildcard"): r"(([^\s.#]+\.)|\.)*([^\s.#]+)?\Z",
}


def test_uri_check_agrees_with_the_spec_regexes():
    from geonode.uri import checker, valid_uri

    rnd = random.Random(9)
    alphabet = "ab.A_1 #\n\t."
    checks = {mode: checker(mode == "strict", MiB) for mode in ("strict", "loose")}
    for _ in range(20_000):
        uri = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 8)))
        for (mode, match), rule in _RULES.items():
            want = re.match(rule, uri) is not None
            assert checks[mode](uri, match) is want, (uri, mode, match)
    assert not valid_uri(None) and not valid_uri(7) and not valid_uri(b"com.x")


@pytest.mark.parametrize("strict", [False, True])
def test_uri_check_on_megabyte_uris(strict):
    from geonode.uri import MAX_URI_LENGTH, checker, valid_uri

    check = checker(strict, 4 * MiB)
    samples = ["a" * MiB, "a." * (MiB // 2) + "a", "a." * (MiB // 2) + " ", "." * MiB,
               "a" * MiB + "#", "a.." * (MiB // 3)]
    with deadline(scaled(5.0)):
        t0 = time.perf_counter()
        for uri in samples:
            for match in ("exact", "prefix", "wildcard"):
                check(uri, match)
        took = time.perf_counter() - t0
    assert took < scaled(1.0), f"{took:.2f}s"
    # over the limit: refused before looking at a character
    assert not valid_uri("a" * (MAX_URI_LENGTH + 1))
    assert valid_uri("a" * MAX_URI_LENGTH)


# -- answer caches ---------------------------------------------------------------------------

def test_answer_caches_are_bounded_by_entries_and_characters():
    from geonode.router.authorization import AnswerCache

    cache = AnswerCache(max_entries=100, max_chars=10_000)
    for i in range(1000):
        cache.put((f"{i}." + "x" * 500, "call"), object())
        assert len(cache) <= 100 and cache.chars <= 10_000
        assert cache.chars == sum(len(k[0]) for k in cache)
    cache.put(("y" * 20_000, "call"), object())   # bigger than the whole cache: not kept
    assert ("y" * 20_000, "call") not in cache
    role = StaticRole("r", [Permission("com.", "prefix", call=True)])
    for i in range(300):
        assert role.authorize_now(None, f"com.{i}." + "a" * 8000, "call", {}).allow
    assert role._answers.chars <= role._answers.max_chars
