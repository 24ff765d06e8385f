"""The router worker's ``options.backplane``: defaults, and the checks the schema cannot do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: the JSON path every message about the backplane names (relative to the worker)
OPTION = "options.backplane"

# Heartbeat every second, a node silent for 5 s is gone: issue 11 asks for "within 10 s" with
# the defaults; 5 heartbeats of slack ride out a busy machine's stalls (a gevent hub blocked
# by a CPU-heavy request for a second must not cost a node its cluster membership).
HEARTBEAT = 1.0
TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
# Messages (and their bytes) waiting for Redis: the node's outgoing bound, as a session's
# queue is bounded. 100,000 events of ~100 bytes is ~10 MB: a second of a busy node's
# cross-node traffic; past it messages are dropped (counted, one log line per episode).
MAX_QUEUE = 100_000
MAX_QUEUE_BYTES = 64 * 1024 * 1024
PREFIX = "geonode"
#: redis-py's URL query parameters that name files (opened by redis-py, relative to the node's
#: working directory): ``geonode check`` looks for them as ``start`` would
URL_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
CERT_REQS = ("none", "optional", "required")


@dataclass(frozen=True)
class BackplaneTLS:
    """``options.backplane.tls``: the files of a ``rediss://`` connection, named as Crossbar
    names a connecting endpoint's TLS files, relative to the config's folder."""
    ca_certificates: tuple[str, ...] = ()
    certificate: str | None = None
    key: str | None = None

    @classmethod
    def from_options(cls, tls: dict[str, Any]) -> BackplaneTLS:
        return cls(ca_certificates=tuple(tls.get("ca_certificates") or ()),
                   certificate=tls.get("certificate"), key=tls.get("key"))


@dataclass(frozen=True)
class BackplaneConfig:
    url: str
    prefix: str = PREFIX
    heartbeat: float = HEARTBEAT
    timeout: float = TIMEOUT
    connect_timeout: float = CONNECT_TIMEOUT
    max_queue: int = MAX_QUEUE
    max_queue_bytes: int = MAX_QUEUE_BYTES
    tls: BackplaneTLS | None = None

    @classmethod
    def from_options(cls, opts: dict[str, Any]) -> BackplaneConfig:
        tls = opts.get("tls")
        return cls(url=opts["url"], prefix=opts.get("prefix", PREFIX),
                   tls=BackplaneTLS.from_options(tls) if isinstance(tls, dict) else None,
                   heartbeat=float(opts.get("heartbeat", HEARTBEAT)),
                   timeout=float(opts.get("timeout", TIMEOUT)),
                   connect_timeout=float(opts.get("connect_timeout", CONNECT_TIMEOUT)),
                   max_queue=int(opts.get("max_queue", MAX_QUEUE)),
                   max_queue_bytes=int(opts.get("max_queue_bytes", MAX_QUEUE_BYTES)))

    def safe_url(self) -> str:
        """The URL without its password (for log lines)."""
        return redact(self.url)

    def ssl_options(self, base: Path) -> dict[str, Any]:
        """redis-py's keyword arguments for ``tls`` (files relative to ``base``, the config's
        folder). Read at every connection, so renewed files are used at the next reconnect;
        an unreadable file fails that connection (one log line), as an unreachable Redis."""
        tls = self.tls
        if tls is None or not self.url.lower().startswith("rediss://"):
            return {}
        out: dict[str, Any] = {}
        if tls.ca_certificates:
            # redis-py takes one CA file or PEM text: several files are one text
            out["ssl_ca_data"] = "\n".join((base / f).read_text() for f in tls.ca_certificates)
        if tls.certificate:
            out["ssl_certfile"] = str(base / tls.certificate)
        if tls.key:
            out["ssl_keyfile"] = str(base / tls.key)
        return out


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


def errors(opts: Any, path: str, config_dir: Path | None = None) -> list[str]:
    """What the schema cannot say about ``options.backplane`` at ``path`` (its JSON path);
    ``config_dir``: where ``tls``'s files are (default: the working directory)."""
    if not isinstance(opts, dict):
        return []
    out: list[str] = []
    hb = opts.get("heartbeat", HEARTBEAT)
    to = opts.get("timeout", TIMEOUT)
    if isinstance(hb, int | float) and isinstance(to, int | float) and to < 2 * hb:
        out.append(f"{path}.timeout: {to} is less than two heartbeats ({2 * hb}): nodes "
                   "would forget each other between two heartbeats")
    url = opts.get("url")
    if isinstance(url, str):
        try:
            from redis.connection import parse_url

            parse_url(url)
        except ImportError:
            out.append(f"{path}: the backplane needs redis-py and hiredis: "
                       "pip install 'geonode[cluster]'")
        except ValueError as e:
            out.append(f"{path}.url: {redact(url)!r}: {e}")
        else:
            out += _url_errors(url, f"{path}.url")
    tls = opts.get("tls")
    if isinstance(tls, dict):
        out += _tls_errors(tls, url, f"{path}.tls", config_dir or Path.cwd())
    return out


def _url_errors(url: str, upath: str) -> list[str]:
    """The TLS query parameters redis-py reads from the URL (its own way to name the files)."""
    out: list[str] = []
    query = parse_qs(urlsplit(url).query)
    for name in URL_FILES:
        for value in query.get(name, [])[:1]:
            if not Path(value).is_file():
                out.append(f"{upath}: {name}: file {value!r} not found "
                           f"(looked for {Path(value).resolve()})")
    for value in query.get("ssl_cert_reqs", [])[:1]:
        if value.lower() not in CERT_REQS:
            out.append(f"{upath}: ssl_cert_reqs: {value!r} is not one of {', '.join(CERT_REQS)}")
    return out


def _tls_errors(tls: dict, url: Any, tpath: str, base: Path) -> list[str]:
    """``tls``'s files exist and load, as the connection will load them."""
    import ssl

    out: list[str] = []
    if isinstance(url, str) and not url.lower().startswith("rediss://"):
        out.append(f"{tpath}: TLS needs a rediss:// url (the url is {redact(url)!r})")
    cert, key = tls.get("certificate"), tls.get("key")
    if isinstance(cert, str) != isinstance(key, str):
        missing = "key" if isinstance(cert, str) else "certificate"
        out.append(f"{tpath}.{missing}: required with {tpath}."
                   f"{'certificate' if missing == 'key' else 'key'} (a client certificate "
                   "and its private key)")
    cas = tls.get("ca_certificates")
    files = [(f"{tpath}.ca_certificates[{i}]", "certificate", ca)
             for i, ca in enumerate(cas if isinstance(cas, list) else [])]
    files += [(f"{tpath}.certificate", "TLS certificate", cert), (f"{tpath}.key", "TLS key", key)]
    found = True
    for where, what, name in files:
        if isinstance(name, str) and not (base / name).is_file():
            out.append(f"{where}: {what} file {name!r} not found "
                       f"(looked for {(base / name).resolve()})")
            found = False
    if not found:
        return out
    ctx = ssl.create_default_context()
    for where, _what, name in files[:-2]:
        try:
            ctx.load_verify_locations(cadata=(base / name).read_text())
        except (ssl.SSLError, ValueError, OSError) as e:
            out.append(f"{where}: {name!r} is not a PEM certificate: {e}")
    if isinstance(cert, str) and isinstance(key, str):
        try:
            ctx.load_cert_chain(base / cert, base / key)
        except (ssl.SSLError, OSError) as e:
            out.append(f"{tpath}: cannot load certificate/key ({cert}, {key}): {e}")
    return out
