"""Slowing down credential guessing: failed authentications answered late, per address and authid.

The rules (docs/security.md "Authentication" has the reasoning):

- A failed attempt (wrong ticket or signature, unknown authid or key, an authenticator's
  refusal) is answered after ``delay * 2**(n-1)`` seconds, at most ``max_delay``, where ``n``
  counts the recent failures of the peer's address or of the authid, whichever is larger.
  A success is never delayed, and clears no count: the address's must not be laundered by
  one valid account while it guesses at others, and the authid's must not tell a prober
  when its owner logged in (and so that it exists). Counts are forgotten ``forget_after``
  seconds after their last failure.
- While an answer is delayed the attempt stays "in flight" for its address and its authid,
  even if the client hung up: a guesser learns a failure from the missing WELCOME long before
  the ABORT, so what slows it is that it may not try again yet. An address with
  ``max_pending_per_address`` failures in flight gets its next attempts refused unexamined.
  For one authid, a guesser spread over many addresses is held back by refusing, once the
  authid has ``max_pending_per_authid`` failures in flight, every address that has a failure
  of its own in flight: each address then gets one try per delay period, while an address
  without failures in flight (the legitimate user) is still examined, and its correct
  credential still answered at once.
- Refusals "unexamined" carry no information about the credential or the authid (unknown
  authids have records like known ones).
- Memory is bounded: at most ``max_addresses`` and ``max_authids`` records (least recently
  used dropped first), each holding at most its bound of release times; authids are kept as
  a 16-byte digest, whatever their length. IPv6 addresses count per /64 (one host usually
  has the whole /64).

Nothing here sleeps: the session arms a hub timer for the delayed ABORT (session.py).
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

# Defaults, and why (docs/security.md restates them):
DEFAULTS: dict[str, Any] = {
    # a single typo costs 0.1 s, which nobody notices; the 9th failure in a row costs max_delay
    "delay": 0.1,
    # 4 in flight / 30 s: one address guesses at most ~0.13 times a second once it has failed
    # a few times (the issue measured 1,000-1,400/s without throttling)
    "max_delay": 30.0,
    "max_pending_per_address": 4,
    # more than any one legitimate user has failing at once; beyond it only addresses without
    # a failure of their own in flight are examined for that authid
    "max_pending_per_authid": 16,
    # an address or authid quiet this long starts again from delay
    "forget_after": 600.0,
    # measured, both tables full and every record at its bound of due times: 11.7 MB in all
    "max_addresses": 10000,
    "max_authids": 10000,
}

THROTTLED = ("too many failed authentication attempts in progress: wait for the answers to "
             "the earlier ones before trying again")


@dataclass
class ThrottleConfig:
    delay: float = DEFAULTS["delay"]
    max_delay: float = DEFAULTS["max_delay"]
    max_pending_per_address: int = DEFAULTS["max_pending_per_address"]
    max_pending_per_authid: int = DEFAULTS["max_pending_per_authid"]
    forget_after: float = DEFAULTS["forget_after"]
    max_addresses: int = DEFAULTS["max_addresses"]
    max_authids: int = DEFAULTS["max_authids"]

    @classmethod
    def from_options(cls, options: dict | None) -> ThrottleConfig:
        """From a router worker's ``options.auth_throttle`` (validated by the schema)."""
        return cls(**{k: v for k, v in (options or {}).items() if k in DEFAULTS})


class _Record:
    """Recent failures of one address or authid, and when its delayed answers are due."""

    __slots__ = ("failures", "last", "due")

    def __init__(self) -> None:
        self.failures = 0
        self.last = 0.0
        self.due: list[float] = []   # min-heap of release times, at most the record's bound

    def in_flight(self, now: float) -> int:
        due = self.due
        while due and due[0] <= now:
            heapq.heappop(due)
        return len(due)

    def hold(self, until: float, bound: int) -> None:
        heapq.heappush(self.due, until)
        # Only "is the bound reached" matters: the latest `bound` release times answer it.
        while len(self.due) > bound:
            heapq.heappop(self.due)


def address_key(transport_details: dict) -> str:
    """The unit an address is throttled by: the IP (IPv6: its /64), or the transport kind."""
    peer = str(transport_details.get("peer") or "")
    kind, _, rest = peer.partition(":")
    if kind == "tcp4":
        return rest.rpartition(":")[0] or rest
    if kind == "tcp6":
        host = rest.rpartition(":")[0].strip("[]")
        try:
            ip = ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            return host
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return peer   # "unix", or a test peer: one bucket per kind


def _authid_key(authid: Any) -> bytes | None:
    if authid is None:
        return None
    return hashlib.blake2b(str(authid).encode("utf-8", "surrogatepass"), digest_size=16).digest()


class AuthThrottle:
    """One per router: every transport's authentications share it (a guesser may use both a
    WebSocket and a RawSocket endpoint)."""

    def __init__(self, config: ThrottleConfig | None = None) -> None:
        self.config = config or ThrottleConfig()
        self._addresses: OrderedDict[str, _Record] = OrderedDict()
        self._authids: OrderedDict[bytes, _Record] = OrderedDict()

    def check(self, address: str, authid: Any) -> str | None:
        """Why an attempt is refused without being examined, or None. No side effects."""
        c = self.config
        now = time.monotonic()
        rec = self._addresses.get(address)
        mine = rec.in_flight(now) if rec is not None else 0
        if mine >= c.max_pending_per_address:
            return THROTTLED
        if mine:
            key = _authid_key(authid)
            arec = self._authids.get(key) if key is not None else None
            if arec is not None and arec.in_flight(now) >= c.max_pending_per_authid:
                return THROTTLED
        return None

    def failed(self, address: str, authid: Any) -> float:
        """Record a failure; returns how long to hold its answer (seconds)."""
        c = self.config
        now = time.monotonic()
        recs = [(self._record(self._addresses, address, c.max_addresses),
                 c.max_pending_per_address)]
        key = _authid_key(authid)
        if key is not None:
            recs.append((self._record(self._authids, key, c.max_authids),
                         c.max_pending_per_authid))
        n = 0
        for rec, _ in recs:
            if now - rec.last > c.forget_after:
                rec.failures = 0
            rec.failures = min(rec.failures + 1, 64)
            rec.last = now
            n = max(n, rec.failures)
        delay = min(c.max_delay, c.delay * 2 ** (n - 1))
        for rec, bound in recs:
            rec.hold(now + delay, bound)
        return delay

    def sizes(self) -> tuple[int, int]:
        """(addresses, authids) remembered: for tests and the memory bound."""
        return len(self._addresses), len(self._authids)

    @staticmethod
    def _record(table: OrderedDict, key: Any, limit: int) -> _Record:
        rec = table.get(key)
        if rec is None:
            rec = table[key] = _Record()
            if len(table) > limit:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        return rec
