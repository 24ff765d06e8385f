"""WebSocket transport options, read from a Crossbar-style ``options`` dict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DeflateOptions:
    """permessage-deflate (RFC 7692) settings, Crossbar's ``compression.deflate`` object."""

    request_no_context_takeover: bool = False   # ask clients not to keep their context
    request_max_window_bits: int = 0            # 0: no limit asked of clients (else 8..15)
    no_context_takeover: bool | None = None     # None: follow the client's request
    max_window_bits: int | None = None          # our compressor's window limit (9..15)
    memory_level: int | None = None             # zlib memLevel 1..9
    level: int | None = None                    # zlib compression level 0..9 (geonode extra)

    @classmethod
    def from_config(cls, cfg: dict | None) -> DeflateOptions:
        cfg = cfg or {}
        return cls(
            request_no_context_takeover=bool(cfg.get("request_no_context_takeover", False)),
            request_max_window_bits=int(cfg.get("request_max_window_bits", 0) or 0),
            no_context_takeover=cfg.get("no_context_takeover"),
            max_window_bits=cfg.get("max_window_bits"),
            memory_level=cfg.get("memory_level"),
            level=cfg.get("level"),
        )


@dataclass
class WebSocketOptions:
    """Limits and behaviours of one WebSocket endpoint; times are in milliseconds like Crossbar."""

    allowed_origins: list[str] = field(default_factory=lambda: ["*"])
    allow_null_origin: bool = True
    require_websocket_subprotocol: bool | None = None   # None: required when subprotocols given
    max_message_size: int = 0        # bytes, 0 = unlimited (over it: close 1009)
    max_frame_size: int = 0          # bytes, 0 = unlimited (over it: close 1009)
    auto_ping_interval: int = 0      # ms, 0 = off
    auto_ping_timeout: int = 0       # ms, 0 = never time out waiting for the pong
    auto_ping_size: int = 4          # bytes of random ping payload
    auto_ping_restart_on_any_traffic: bool = False   # any frame received counts as a pong
    open_handshake_timeout: int = 0  # ms, 0 = off
    close_handshake_timeout: int = 1000  # ms
    validate_utf8: bool = True
    deflate: DeflateOptions | None = None   # None: permessage-deflate not offered

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> WebSocketOptions:
        cfg = cfg or {}
        compression = cfg.get("compression")
        deflate = None
        if isinstance(compression, dict) and "deflate" in compression:
            deflate = DeflateOptions.from_config(compression.get("deflate"))
        req = cfg.get("require_websocket_subprotocol")
        return cls(
            allowed_origins=list(cfg.get("allowed_origins", ["*"])),
            allow_null_origin=bool(cfg.get("allow_null_origin", True)),
            require_websocket_subprotocol=None if req is None else bool(req),
            max_message_size=int(cfg.get("max_message_size", 0) or 0),
            max_frame_size=int(cfg.get("max_frame_size", 0) or 0),
            auto_ping_interval=int(cfg.get("auto_ping_interval", 0) or 0),
            auto_ping_timeout=int(cfg.get("auto_ping_timeout", 0) or 0),
            auto_ping_size=max(1, min(125, int(cfg.get("auto_ping_size", 4) or 4))),
            auto_ping_restart_on_any_traffic=bool(cfg.get("auto_ping_restart_on_any_traffic",
                                                          False)),
            open_handshake_timeout=int(cfg.get("open_handshake_timeout", 0) or 0),
            close_handshake_timeout=int(cfg.get("close_handshake_timeout", 1000) or 0),
            validate_utf8=bool(cfg.get("validate_utf8", True)),
            deflate=deflate,
        )
