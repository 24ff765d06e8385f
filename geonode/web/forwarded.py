"""Behind a proxy: the web transport option ``forwarded_allow_ips`` (gunicorn's name).

From a peer in that list (addresses or CIDRs, ``"unix"`` for Unix-socket endpoints, or ``"*"``),
RFC 7239 ``Forwarded`` (preferred when present) or ``X-Forwarded-For``/``-Proto``/``-Host``
set ``REMOTE_ADDR`` (and ``REMOTE_PORT`` when the header names one), ``wsgi.url_scheme`` and
``HTTP_HOST`` (with ``SERVER_NAME``/``SERVER_PORT``) before anything else sees the request: the
hosted apps, the access log, the bridge's ``require_ip``/``require_tls`` and the WAMP transport
details (``peer``). From any other peer the headers are ignored (left for the app to see, never
acted on). The originals are kept in ``environ["geonode.proxy"]``.

The client is found as uvicorn and RFC 7239 section 7.4 suggest: the forwarded addresses are
read from the right (the hop nearest to us) and the first one that is not itself a trusted
proxy is the client; with ``"*"`` every hop is trusted and the leftmost address wins. Proto and
host come from the same ``Forwarded`` element; for ``X-Forwarded-Proto``/``-Host`` (one value
per proxy that sets it, often overwritten rather than appended) the nearest one counts, as in
werkzeug's ``ProxyFix`` with ``x_proto=1, x_host=1``.

Why not werkzeug's ``ProxyFix`` itself (docs/observability.md): it trusts a fixed number of hops
whoever the peer is (no address list), reads no ``Forwarded`` header, and its fixed count gets a
chain of several proxies wrong when the number of hops varies (direct and via a CDN).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from geonode.config.proxies import allowed_proxies

# Peers judged once each (a node behind a proxy sees the same few addresses); bounded.
_CACHE_MAX = 4096
# A forwarded header longer than this is not from a proxy we trust to be sane: ignored.
MAX_HEADER = 8192
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                        "-._~:[]%!$&'()*+,;=")


class TrustedProxies:
    """Which peers' forwarding headers are believed."""

    def __init__(self, spec: Any, json_path: str = "forwarded_allow_ips") -> None:
        # the config model checks the same spec with the same function (check == start)
        self.any, self.unix, self.networks = allowed_proxies(spec, json_path)
        self._cache: dict[str, bool] = {}
        self._valid: dict[str, bool] = {}

    def __call__(self, addr: str) -> bool:
        known = self._cache.get(addr)
        if known is not None:
            return known
        ok = self._judge(addr)
        if len(self._cache) < _CACHE_MAX:
            self._cache[addr] = ok
        return ok

    def valid_ip(self, text: str) -> bool:
        """Is ``text`` an IP address (cached like the judgements: clients repeat)."""
        known = self._valid.get(text)
        if known is None:
            known = _valid_ip(text)
            if len(self._valid) < _CACHE_MAX:
                self._valid[text] = known
        return known

    def _judge(self, addr: str) -> bool:
        if addr in ("", "unix"):
            return self.any or self.unix
        if self.any:
            return True
        try:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)


def _split_host_port(node: str) -> tuple[str, str]:
    """RFC 7239 node / X-Forwarded-For entry → (address, port or "")."""
    node = node.strip()
    if node.startswith("["):
        end = node.find("]")
        if end < 0:
            return "", ""
        host, rest = node[1:end], node[end + 1:]
        return host, rest[1:] if rest.startswith(":") else ""
    if ":" not in node:
        return node, ""
    if node.count(":") == 1:
        host, _, port = node.partition(":")
        return host, port
    return node, ""   # IPv4 without port, or a bare IPv6 address (X-Forwarded-For)


def _valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """RFC 7239 ``Forwarded``: one dict per element (lower-case keys, values unquoted), in
    order. Malformed pairs are skipped; a quoted comma does not split elements."""
    elements: list[dict[str, str]] = []
    current: dict[str, str] = {}
    i, n = 0, len(value)
    while i < n:
        # a pair: token "=" (token / quoted-string)
        while i < n and value[i] in " \t;":
            i += 1
        if i < n and value[i] == ",":
            elements.append(current)
            current = {}
            i += 1
            continue
        start = i
        while i < n and value[i] not in "=,;":
            i += 1
        key = value[start:i].strip().lower()
        if i >= n or value[i] != "=":
            continue
        i += 1
        if i < n and value[i] == '"':
            i += 1
            buf = []
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(value[i])
                i += 1
            i += 1
            val = "".join(buf)
        else:
            start = i
            while i < n and value[i] not in ",;":
                i += 1
            val = value[start:i].strip()
        if key and key not in current:
            current[key] = val
    elements.append(current)
    return [e for e in elements if e]


def _pick(hops: list[str], trusted: TrustedProxies) -> int:
    """Index of the client among forwarded addresses (rightmost untrusted, else leftmost)."""
    for i in range(len(hops) - 1, -1, -1):
        if not trusted(hops[i]):
            return i
    return 0


def _host_ok(host: str) -> bool:
    return 0 < len(host) <= 255 and all(c in _HOST_CHARS for c in host)


def resolve(environ: dict, trusted: TrustedProxies) -> dict[str, str] | None:
    """What the headers of a trusted peer say: {"addr", "port", "proto", "host"} (any may be
    missing); None when the request carries none."""
    fwd = environ.get("HTTP_FORWARDED")
    if fwd and len(fwd) <= MAX_HEADER:
        elements = parse_forwarded(fwd)
        if elements:
            addrs = [_split_host_port(e.get("for", ""))[0] for e in elements]
            i = _pick(addrs, trusted)
            e = elements[i]
            out: dict[str, str] = {}
            addr, port = _split_host_port(e.get("for", ""))
            if trusted.valid_ip(addr):   # "unknown" and obfuscated "_ids" leave the peer as it is
                out["addr"] = addr
                if port.isdigit():
                    out["port"] = port
            if "proto" in e:
                out["proto"] = e["proto"]
            if "host" in e:
                out["host"] = e["host"]
            return out
    out = {}
    xff = environ.get("HTTP_X_FORWARDED_FOR")
    if xff and len(xff) <= MAX_HEADER:
        hops = [_split_host_port(h)[0] for h in xff.split(",")]
        addr = hops[_pick(hops, trusted)]
        if trusted.valid_ip(addr):
            out["addr"] = addr
    proto = environ.get("HTTP_X_FORWARDED_PROTO")
    if proto and len(proto) <= MAX_HEADER:
        out["proto"] = proto.rsplit(",", 1)[-1].strip()
    host = environ.get("HTTP_X_FORWARDED_HOST")
    if host and len(host) <= MAX_HEADER:
        out["host"] = host.rsplit(",", 1)[-1].strip()
    return out or None


_ORIGINALS = ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME",
              "SERVER_PORT")


def apply(environ: dict, facts: dict[str, str]) -> None:
    """Rewrite ``environ`` with what a trusted proxy said (keeping the originals)."""
    environ["geonode.proxy"] = {k: environ.get(k) for k in _ORIGINALS}
    addr = facts.get("addr")
    if addr:
        environ["REMOTE_ADDR"] = addr
        environ["REMOTE_PORT"] = facts.get("port", "")
    proto = facts.get("proto", "").lower()
    if proto in ("http", "https"):
        environ["wsgi.url_scheme"] = proto
    elif proto in ("ws", "wss"):
        environ["wsgi.url_scheme"] = "https" if proto == "wss" else "http"
    host = facts.get("host")
    if host and _host_ok(host):
        environ["HTTP_HOST"] = host
        name, port = _split_host_port(host)
        environ["SERVER_NAME"] = name
        environ["SERVER_PORT"] = port if port.isdigit() else (
            "443" if environ.get("wsgi.url_scheme") == "https" else "80")


class ProxyHeaders:
    """WSGI middleware: the web transport's outermost layer when ``forwarded_allow_ips`` is set."""

    def __init__(self, app: Callable, trusted: TrustedProxies) -> None:
        self.app = app
        self.trusted = trusted

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if self.trusted(environ.get("REMOTE_ADDR") or ""):
            facts = resolve(environ, self.trusted)
            if facts:
                apply(environ, facts)
        return self.app(environ, start_response)
