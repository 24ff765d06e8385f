"""Signed HTTP bridge requests (Crossbar's scheme) and GitHub webhook signatures.

A signed request carries the query parameters ``key``, ``timestamp`` (UTC,
``%Y-%m-%dT%H:%M:%S.%fZ``), ``seq`` and ``nonce`` (integers) and ``signature`` =
urlsafe-base64(HMAC-SHA256(secret, key + timestamp + seq + nonce + body)).

Replays. Crossbar checks neither the nonce ("FIXME: check nonce") nor anything else, so a
captured request can be sent again as long as its timestamp is in the window. And because the
fields are joined without separators, ``seq=1, nonce=2345`` and ``seq=12, nonce=345`` sign the
same bytes: one signature is valid for both. The format stays Crossbar's (clients sign that
way); instead ``ReplayGuard`` remembers, for every request it accepted, its nonce and its
signature until its timestamp leaves the window. A second request with the same nonce is
refused, and so is any request with a signature already seen: that covers an exact replay
and every re-splitting of the signed fields, whatever the nonce then says. ``seq`` and
``nonce`` must be plain ASCII decimal integers (``int()`` would also take ``" 1"``, ``"+1"``,
``"1_0"`` or other scripts' digits), at most 32 characters.

Memory is bounded (``max_entries``): when full, the entry with the oldest timestamp goes and
the guard refuses from then on every request whose timestamp is not newer than it (it can no
longer tell whether it saw it). Under a flood of distinct valid nonces (only the secret's
holder can sign them) the window thus shrinks to what the table holds; clients that sign with
the current time are not affected. The guard lives in the process: gunicorn workers do not
share it.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import heapq
import hmac
import os
import re
import time
from urllib.parse import urlencode

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_EPOCH = datetime.datetime(1970, 1, 1)
_INTEGER = re.compile(r"-?[0-9]{1,32}")
# ~260 bytes an entry (measured): 100,000 entries ~26 MB, a window of 20 s at the bridge's
# full rate (~5,000 requests/s), or 300 s at 330/s.
REPLAY_ENTRIES = 100_000


def _mac(secret: str | bytes, key: str, timestamp: str, seq: str, nonce: str,
         body: bytes) -> bytes:
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    hm = hmac.new(secret, None, hashlib.sha256)
    for part in (key, timestamp, seq, nonce):
        hm.update(part.encode("utf-8"))
    hm.update(body)
    return hm.digest()


def compute_signature(secret: str | bytes, key: str, timestamp: str, seq: str, nonce: str,
                      body: bytes) -> str:
    return base64.urlsafe_b64encode(_mac(secret, key, timestamp, seq, nonce, body)
                                    ).decode("ascii")


class ReplayGuard:
    """The nonces and signatures of accepted requests while their timestamps are in the window
    (``window`` seconds either side of now; 0: no window, only ``max_entries`` bounds it)."""

    def __init__(self, window: float, max_entries: int = REPLAY_ENTRIES) -> None:
        self.window = window
        self.max_entries = max_entries
        self._seen: set[int | bytes] = set()            # nonces (int), signatures (bytes)
        self._by_time: list[tuple[float, int, bytes]] = []   # heap: (timestamp, nonce, sig)
        self._floor = float("-inf")    # newest timestamp forgotten for want of room

    def __len__(self) -> int:
        return len(self._by_time)

    def admit(self, timestamp: float, nonce: int, signature: bytes) -> str | None:
        """Remember the request and return None, or say why it is refused."""
        heap, seen = self._by_time, self._seen
        if self.window:
            horizon = time.time() - self.window
            while heap and heap[0][0] < horizon:
                _, n, sig = heapq.heappop(heap)
                seen.discard(n)
                seen.discard(sig)
        if timestamp <= self._floor:
            return ("request too old to be checked for replay (the replay cache is full): "
                    "sign with the current time")
        if nonce in seen:
            return "request replayed: nonce already used"
        if signature in seen:
            return "request replayed: signature already used"
        while len(heap) >= self.max_entries:
            ts, n, sig = heapq.heappop(heap)
            self._floor = max(self._floor, ts)
            seen.discard(n)
            seen.discard(sig)
        heapq.heappush(heap, (timestamp, nonce, signature))
        seen.add(nonce)
        seen.add(signature)
        return None


_GUARDS: dict[tuple, ReplayGuard] = {}


def replay_guard(key: str | None, secret: str, window: float) -> ReplayGuard:
    """The guard of one signing identity: bridge paths sharing key and secret share it, so a
    request signed for one path cannot be replayed on the other."""
    ident = (key, hashlib.sha256(secret.encode("utf-8")).digest(), window)
    guard = _GUARDS.get(ident)
    if guard is None:
        guard = _GUARDS[ident] = ReplayGuard(window)
    return guard


def sign_query(key: str, secret: str, body: bytes, seq: int = 1,
               now: datetime.datetime | None = None) -> str:
    """The query string for a signed request (for clients, tests and benchmarks)."""
    now = now or datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    timestamp = now.strftime(TIMESTAMP_FORMAT)
    nonce = str(int.from_bytes(os.urandom(6), "big"))
    sig = compute_signature(secret, key, timestamp, str(seq), nonce, body)
    return urlencode({"key": key, "timestamp": timestamp, "seq": str(seq), "nonce": nonce,
                      "signature": sig})


class SignatureError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def verify(query: dict[str, str], body: bytes, key: str | None, secret: str,
           delta_limit: float, guard: ReplayGuard | None = None) -> None:
    """Raise SignatureError(400) for a missing/malformed field, (401) for a wrong key,
    signature, a timestamp outside ``delta_limit`` seconds (0: not checked) or, with a
    ``guard``, a nonce or signature already accepted."""
    for field in ("key", "timestamp", "seq", "nonce", "signature"):
        if field not in query:
            raise SignatureError(400, f"signed request required: mandatory '{field}' field missing")
    try:
        ts = datetime.datetime.strptime(query["timestamp"], TIMESTAMP_FORMAT)
    except ValueError:
        raise SignatureError(400, f"invalid timestamp '{query['timestamp']}' (must be UTC "
                                  "ISO-8601, e.g. '2011-10-14T16:59:51.123Z')") from None
    for field in ("seq", "nonce"):
        if not _INTEGER.fullmatch(query[field]):
            raise SignatureError(400, f"invalid {field} '{query[field][:40]}' (must be an "
                                      "integer: ASCII digits, at most 32)")
    if key is not None and not hmac.compare_digest(query["key"].encode(), key.encode()):
        raise SignatureError(401, f"unknown key '{query['key']}' in signed request")
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    if delta_limit and abs((ts - now).total_seconds()) > delta_limit:
        raise SignatureError(401, "request expired: timestamp outside the allowed delta")
    expected = _mac(secret, query["key"], query["timestamp"], query["seq"], query["nonce"], body)
    if not hmac.compare_digest(base64.urlsafe_b64encode(expected),
                               query["signature"].encode("utf-8", "replace")):
        raise SignatureError(401, "invalid request signature")
    if guard is not None:
        # after the signature: only the secret's holder can make the guard remember anything
        why = guard.admit((ts - _EPOCH).total_seconds(), int(query["nonce"]), expected[:16])
        if why is not None:
            raise SignatureError(401, why)


def github_signature_ok(secret: str, headers: dict[str, str], body: bytes) -> bool | None:
    """None when no signature header is present; else whether X-Hub-Signature-256
    (preferred) or X-Hub-Signature (SHA-1, what Crossbar checks) matches."""
    for header, algo in (("X-Hub-Signature-256", hashlib.sha256), ("X-Hub-Signature", hashlib.sha1)):
        given = headers.get(header)
        if given is None:
            continue
        ours = algo().name + "=" + hmac.new(secret.encode("utf-8"), body, algo).hexdigest()
        return hmac.compare_digest(ours.encode(), given.strip().lower().encode())
    return None
