"""Signed HTTP bridge requests (Crossbar's scheme) and GitHub webhook signatures.

A signed request carries the query parameters ``key``, ``timestamp`` (UTC,
``%Y-%m-%dT%H:%M:%S.%fZ``), ``seq`` and ``nonce`` (integers) and ``signature`` =
urlsafe-base64(HMAC-SHA256(secret, key + timestamp + seq + nonce + body)).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import os
from urllib.parse import urlencode

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def compute_signature(secret: str | bytes, key: str, timestamp: str, seq: str, nonce: str,
                      body: bytes) -> str:
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    hm = hmac.new(secret, None, hashlib.sha256)
    for part in (key, timestamp, seq, nonce):
        hm.update(part.encode("utf-8"))
    hm.update(body)
    return base64.urlsafe_b64encode(hm.digest()).decode("ascii")


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
           delta_limit: float) -> None:
    """Raise SignatureError(400) for a missing/malformed field, (401) for a wrong key,
    signature or a timestamp outside ``delta_limit`` seconds (0: not checked)."""
    for field in ("key", "timestamp", "seq", "nonce", "signature"):
        if field not in query:
            raise SignatureError(400, f"signed request required: mandatory '{field}' field missing")
    try:
        ts = datetime.datetime.strptime(query["timestamp"], TIMESTAMP_FORMAT)
    except ValueError:
        raise SignatureError(400, f"invalid timestamp '{query['timestamp']}' (must be UTC "
                                  "ISO-8601, e.g. '2011-10-14T16:59:51.123Z')") from None
    for field in ("seq", "nonce"):
        try:
            int(query[field])
        except ValueError:
            raise SignatureError(400, f"invalid {field} '{query[field]}' (must be an integer)"
                                 ) from None
    if key is not None and not hmac.compare_digest(query["key"].encode(), key.encode()):
        raise SignatureError(401, f"unknown key '{query['key']}' in signed request")
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    if delta_limit and abs((ts - now).total_seconds()) > delta_limit:
        raise SignatureError(401, "request expired: timestamp outside the allowed delta")
    expected = compute_signature(secret, query["key"], query["timestamp"], query["seq"],
                                 query["nonce"], body)
    if not hmac.compare_digest(expected.encode(), query["signature"].encode()):
        raise SignatureError(401, "invalid request signature")


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
