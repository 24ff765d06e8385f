"""A web transport's ``forwarded_allow_ips`` (geonode.web.forwarded acts on it): read here so
the config model refuses a bad entry with the message start would give."""

from __future__ import annotations

import ipaddress
from typing import Any

from geonode.config.reader import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def allowed_proxies(spec: Any, json_path: str) -> tuple[bool, bool, list[Network]]:
    """(any peer, Unix-socket peers, the networks) of a ``forwarded_allow_ips`` value (a list,
    or a comma-separated string as gunicorn takes it); ConfigError names a bad entry."""
    if isinstance(spec, str):
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    networks: list[Network] = []
    for i, entry in enumerate(spec):
        if entry in ("*", "unix"):
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ConfigError(f"{json_path}[{i}]: {entry!r} is not an IP address or CIDR "
                              "(nor \"*\" or \"unix\")") from None
    return "*" in spec, "unix" in spec, networks
