"""permessage-deflate (RFC 7692): offer negotiation and per-message (de)compression."""

from __future__ import annotations

import zlib
from typing import Any

from geonode.websocket.frames import CLOSE_TOO_BIG, ProtocolError
from geonode.websocket.options import DeflateOptions

EXTENSION = "permessage-deflate"
_TAIL = b"\x00\x00\xff\xff"
# Inflate limit when the endpoint has no max_message_size: a zip bomb still ends in 1009.
DEFAULT_INFLATE_LIMIT = 64 * 1024 * 1024
# Tiny messages grow when deflated; RFC 7692 lets us send any message uncompressed.
_MIN_COMPRESS = 16


def parse_extensions(header: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """``Sec-WebSocket-Extensions`` → [(name, [(param, value|None), ...]), ...] in offer order."""
    offers = []
    for item in header.split(","):
        parts = [p.strip() for p in item.split(";")]
        if not parts[0]:
            continue
        params: list[tuple[str, str | None]] = []
        for p in parts[1:]:
            if not p:
                continue
            if "=" in p:
                k, v = p.split("=", 1)
                params.append((k.strip().lower(), v.strip().strip('"')))
            else:
                params.append((p.lower(), None))
        offers.append((parts[0].lower(), params))
    return offers


def _bits(value: str | None) -> int | None:
    if value is None or not value.isdigit():
        return None
    n = int(value)
    return n if 8 <= n <= 15 else None


class PerMessageDeflate:
    """The agreed parameters and the zlib state of one connection (server side)."""

    def __init__(self, server_no_context_takeover: bool = False,
                 client_no_context_takeover: bool = False, server_max_window_bits: int = 15,
                 level: int | None = None, memory_level: int | None = None):
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.level = zlib.Z_DEFAULT_COMPRESSION if level is None else level
        self.memory_level = memory_level or 8
        # Created on first use: a deflate context costs ~256 KB, many peers never send large data.
        # zlib compress/decompress objects (private classes), made on first use
        self._compressor: Any = None
        self._decompressor: Any = None
        self._inflated = 0

    # -- outgoing -------------------------------------------------------------------------
    def compress(self, data: bytes) -> bytes | None:
        """The compressed payload of one message, or None to send it uncompressed."""
        if len(data) < _MIN_COMPRESS:
            return None
        c = self._compressor
        if c is None:
            c = zlib.compressobj(self.level, zlib.DEFLATED, -self.server_max_window_bits,
                                 self.memory_level)
        out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
        if out.endswith(_TAIL):
            out = out[:-4]
        self._compressor = None if self.server_no_context_takeover else c
        return out

    # -- incoming -------------------------------------------------------------------------
    def start_message(self) -> None:
        if self._decompressor is None:
            # Always inflate with the largest window: it reads any smaller-window stream.
            self._decompressor = zlib.decompressobj(-15)
        self._inflated = 0

    def decompress(self, data: bytes, limit: int, final: bool = False) -> bytes:
        """Inflate one frame's payload; ``limit`` caps the whole message (ProtocolError 1009)."""
        d = self._decompressor
        if limit <= 0:
            limit = DEFAULT_INFLATE_LIMIT
        budget = limit - self._inflated
        try:
            out = d.decompress(data, budget + 1) if data else b""
            if not d.unconsumed_tail and len(out) <= budget and final:
                out += d.decompress(_TAIL, budget + 1 - len(out))
        except zlib.error as e:
            raise ProtocolError(1007, f"invalid deflate data: {e}") from None
        self._inflated += len(out)
        if d.unconsumed_tail or self._inflated > limit:
            raise ProtocolError(CLOSE_TOO_BIG, f"message over {limit} bytes after inflating")
        if final and self.client_no_context_takeover:
            self._decompressor = None
        return out


def negotiate(header: str, opts: DeflateOptions) -> tuple[PerMessageDeflate, str] | None:
    """Pick the first acceptable permessage-deflate offer: (state, response header) or None."""
    for name, params in parse_extensions(header):
        if name != EXTENSION:
            continue
        agreed = _accept_offer(params, opts)
        if agreed is not None:
            return agreed
    return None


def _accept_offer(params, opts: DeflateOptions) -> tuple[PerMessageDeflate, str] | None:  # noqa: C901 - RFC 7692 7.1: a branch per parameter rule, in the RFC's order
    seen: set[str] = set()
    server_nct = client_nct = False
    server_bits: int | None = None
    client_bits_offered = False
    client_bits: int | None = None
    for key, value in params:
        if key in seen:
            return None   # a parameter twice: decline this offer (RFC 7692 §7)
        seen.add(key)
        if key == "server_no_context_takeover":
            if value is not None:
                return None
            server_nct = True
        elif key == "client_no_context_takeover":
            if value is not None:
                return None
            client_nct = True
        elif key == "server_max_window_bits":
            server_bits = _bits(value)
            if server_bits is None:
                return None
        elif key == "client_max_window_bits":
            client_bits_offered = True
            if value is not None:
                client_bits = _bits(value)
                if client_bits is None:
                    return None
        else:
            return None   # unknown parameter

    # zlib cannot deflate a raw stream with a 256-byte window: 9 bits is our floor.
    wbits = max(9, min(15, opts.max_window_bits or 15))
    if server_bits is not None:
        wbits = min(wbits, server_bits)
    if wbits < 9:
        return None   # the client demands an 8-bit window from us: decline this offer
    if opts.no_context_takeover:
        server_nct = True

    response = [EXTENSION]
    if server_nct:
        response.append("server_no_context_takeover")
    if opts.request_no_context_takeover:
        client_nct = True
    if client_nct:
        response.append("client_no_context_takeover")
    if server_bits is not None or wbits < 15:
        response.append(f"server_max_window_bits={wbits}")
    if client_bits_offered and opts.request_max_window_bits:
        cb = opts.request_max_window_bits
        if client_bits is not None:
            cb = min(cb, client_bits)
        response.append(f"client_max_window_bits={cb}")
    state = PerMessageDeflate(server_no_context_takeover=server_nct,
                              client_no_context_takeover=client_nct,
                              server_max_window_bits=wbits, level=opts.level,
                              memory_level=opts.memory_level)
    return state, "; ".join(response)
