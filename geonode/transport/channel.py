"""TLS channel ids for channel binding (RFC 5929), as transports hand them to the router.

The router never sees a socket, so a transport computes the ids once, right after its TLS
handshake, and puts them in ``transport_details["channel_id"]``:
``{"tls-unique": "<64 hex digits>"}`` over TLS, ``{}`` over plain TCP or Unix sockets.

The value is SHA-256 over the raw ``tls-unique`` bytes, the way autobahn (both its asyncio and
Twisted flavours) derives a cryptosign channel id: clients sign ``challenge XOR channel_id``,
and both have to be 32 bytes. Hex, not bytes, because transport details travel through every
serializer (``wamp.session.get``, dynamic authenticators).
"""

from __future__ import annotations

import hashlib
from typing import Any

TLS_UNIQUE = "tls-unique"


def tls_unique(sock: Any) -> bytes | None:
    """SHA-256 of the connection's ``tls-unique`` binding, or None when there is none.

    Python's ``SSLSocket.get_channel_binding`` returns the first Finished message of the
    handshake as RFC 5929 defines it (the client's on a full handshake, the server's on a
    resumed one), picking our own or the peer's copy by role, so a client and this server
    get the same bytes. None before the handshake ends and on non-TLS sockets.
    """
    get = getattr(sock, "get_channel_binding", None)
    if get is None:
        return None
    try:
        raw = get(TLS_UNIQUE)
    except (ValueError, OSError):   # handshake not done, or the socket is already closed
        return None
    if not isinstance(raw, bytes) or not raw:
        return None
    return hashlib.sha256(raw).digest()


def channel_ids(sock: Any) -> dict[str, str]:
    """``transport_details["channel_id"]`` for ``sock``: binding type -> hex id."""
    cid = tls_unique(sock)
    return {TLS_UNIQUE: cid.hex()} if cid is not None else {}


def peer_cert(sock: Any) -> dict | None:
    """The verified client certificate of a TLS connection, as Crossbar's
    ``transport_details["peer_cert"]`` (autobahn's ``peer_certificate_details``): fingerprints
    (``sha1`` "AB:CD:…"), ``subject``, ``issuer``, validity… None without TLS or certificate.
    The WAMP-TLS authmethod reads it (geonode.router.auth.tls)."""
    get = getattr(sock, "getpeercert", None)
    if get is None:
        return None
    try:
        der = get(binary_form=True)
    except (ValueError, OSError):
        return None
    if not der:
        return None
    from autobahn.util import peer_certificate_details
    from cryptography import x509
    try:
        return peer_certificate_details(x509.load_der_x509_certificate(der))
    except ValueError:   # the handshake accepted it, cryptography cannot read it
        return None
