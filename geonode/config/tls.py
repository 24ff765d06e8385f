"""An endpoint's TLS: the server context of its ``tls`` dict. Made by the node when it binds
(with gevent's ssl) and by ``geonode check`` (``verify``, with the standard one), so a
certificate that does not load is refused by both with the same line."""

from __future__ import annotations

import os
import ssl as _ssl
import tempfile
from pathlib import Path
from typing import Any

from geonode.config.reader import ConfigError


def server_context(tls: dict, base: Path, json_path: str, ssl: Any = _ssl) -> Any:
    """The server SSLContext for an endpoint's ``tls`` dict (files relative to ``base``);
    ``ssl``: the module whose SSLContext to make (the node's: gevent's)."""

    def path(key: str, value: str) -> str:
        p = (base / value).resolve()
        if not p.is_file():
            raise ConfigError(f"{json_path}.tls.{key}: file not found: {p}")
        return str(p)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    cert = path("certificate", tls["certificate"])
    key = path("key", tls["key"])
    chain = [path(f"chain_certificates[{i}]", c)
             for i, c in enumerate(tls.get("chain_certificates") or [])]
    try:
        if chain:
            # load_cert_chain wants the leaf and its intermediates in one file.
            with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as f:
                for p in [cert, *chain]:
                    f.write(Path(p).read_text().strip() + "\n")
            try:
                ctx.load_cert_chain(f.name, key)
            finally:
                os.unlink(f.name)
        else:
            ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as e:
        raise ConfigError(f"{json_path}.tls: cannot load certificate/key ({cert}, {key}): {e}") from e
    cas = tls.get("ca_certificates") or []
    for i, ca in enumerate(cas):
        try:
            ctx.load_verify_locations(cafile=path(f"ca_certificates[{i}]", ca))
        except ssl.SSLError as e:
            raise ConfigError(f"{json_path}.tls.ca_certificates[{i}]: {e}") from e
    if cas:
        ctx.verify_mode = ssl.CERT_REQUIRED
    if tls.get("ciphers"):
        try:
            ctx.set_ciphers(tls["ciphers"])
        except ssl.SSLError as e:
            raise ConfigError(f"{json_path}.tls.ciphers: {e}") from e
    if tls.get("dhparam"):
        try:
            ctx.load_dh_params(path("dhparam", tls["dhparam"]))
        except ssl.SSLError as e:
            # A group OpenSSL finds too weak (1024 bits, as several Crossbar examples ship)
            # only costs the DHE suites, which ECDHE replaces: serve without them
            # (geonode.config.semantic.warnings says so, in check and start alike).
            if not _too_small(e):
                raise ConfigError(f"{json_path}.tls.dhparam: {e}") from e
        except OSError as e:
            raise ConfigError(f"{json_path}.tls.dhparam: {e}") from e
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def client_context(tls: dict, base: Path, json_path: str, ssl: Any = _ssl) -> Any:
    """The client SSLContext for a connecting endpoint's ``tls`` dict (a
    websocket-reverseproxy's backend): the CA certificates it trusts besides the system's,
    its client certificate. Made by the service at start (gevent's ssl) and by ``check``."""
    ctx = ssl.create_default_context()
    for i, ca in enumerate(tls.get("ca_certificates") or []):
        try:
            ctx.load_verify_locations(str(Path(base, ca)))
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"{json_path}.tls.ca_certificates[{i}]: cannot load "
                              f"{str(Path(base, ca))!r}: {e}") from None
    if tls.get("certificate"):
        cert = str(Path(base, tls["certificate"]))
        key = str(Path(base, tls["key"])) if tls.get("key") else None
        try:
            ctx.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError, ValueError) as e:
            raise ConfigError(f"{json_path}.tls.certificate: cannot load certificate/key "
                              f"({cert}, {key}): {e}") from None
    return ctx


def _too_small(e: Exception) -> bool:
    """OpenSSL's security level refuses the group (1024 bits and less at level 2)."""
    return getattr(e, "reason", None) == "DH_KEY_TOO_SMALL"


def weak_dhparam(tls: dict, base: Path) -> str | None:
    """OpenSSL's refusal of ``tls["dhparam"]`` as too small (what ``server_context`` then
    serves without), else None: also None for a file that is missing or does not load at
    all, which ``server_context`` refuses."""
    value = tls.get("dhparam")
    if not isinstance(value, str) or not value:
        return None
    p = (base / value).resolve()
    if not p.is_file():
        return None
    ctx = _ssl.SSLContext(_ssl.PROTOCOL_TLS_SERVER)
    if isinstance(tls.get("ciphers"), str):
        try:
            ctx.set_ciphers(tls["ciphers"])  # may change the security level that decides
        except _ssl.SSLError:
            pass  # server_context's error
    try:
        ctx.load_dh_params(str(p))
    except _ssl.SSLError as e:
        return str(e) if _too_small(e) else None
    return None
