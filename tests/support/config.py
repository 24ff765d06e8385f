"""Node configs (Crossbar v2 format) for tests, benchmarks and conformance runs.

Ports may be given as placeholders: ``"$PORT"``, ``"$PORT2"``… are replaced by free ports when
the config is launched (``support.nodes.launch``), so one dict describes a node anywhere.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ALL", "NONE", "allow_all", "endpoint", "node_config", "rawsocket_transport",
           "realm", "role", "router_config", "substitute", "web_node", "web_transport", "wsgi"]

#: every action allowed / none
ALL = {"call": True, "register": True, "publish": True, "subscribe": True}
NONE = {"call": False, "register": False, "publish": False, "subscribe": False}


def allow_all(uri: str = "", match: str = "prefix", **extra: Any) -> dict:
    """One permission: every action on ``uri`` (default: everything)."""
    return {"uri": uri, "match": match, "allow": dict(ALL), **extra}


def role(name: str = "anonymous", permissions: list | None = None) -> dict:
    """A static role; may do everything unless ``permissions`` are given."""
    return {"name": name, "permissions": permissions if permissions is not None
            else [allow_all()]}


def realm(name: str = "realm1", roles: list | None = None, **options: Any) -> dict:
    """A realm (anonymous may do everything unless ``roles`` are given); ``options`` as given."""
    cfg: dict = {"name": name, "roles": roles if roles is not None else [role()]}
    if options:
        cfg["options"] = options
    return cfg


def endpoint(port: int | str = "$PORT", interface: str = "127.0.0.1") -> dict:
    return {"type": "tcp", "port": port, "interface": interface}


def web_transport(paths: dict, port: int | str = "$PORT", options: dict | None = None) -> dict:
    transport: dict = {"type": "web", "endpoint": endpoint(port), "paths": paths}
    if options:
        transport["options"] = options
    return transport


def rawsocket_transport(port: int | str = "$PORT2", **extra: Any) -> dict:
    return {"type": "rawsocket", "endpoint": endpoint(port), **extra}


def wsgi(module: str, obj: str = "app", **extra: Any) -> dict:
    """A ``wsgi`` path service."""
    return {"type": "wsgi", "module": module, "object": obj, **extra}


def node_config(transports: list, realms: list | None = None,
                worker_options: dict | None = None, components: list | None = None,
                controller: dict | None = None) -> dict:
    """A node with one router worker."""
    worker: dict = {"type": "router", "realms": realms if realms is not None else [],
                    "transports": transports}
    if worker_options:
        worker["options"] = worker_options
    if components:
        worker["components"] = components
    return {"version": 2, "controller": controller if controller is not None else {},
            "workers": [worker]}


def web_node(paths: dict, realms: list | None = None, options: dict | None = None,
             worker_options: dict | None = None, components: list | None = None,
             port: int | str = "$PORT") -> dict:
    """A one-worker, one-web-transport node config (on ``$PORT`` unless told)."""
    return node_config([web_transport(paths, port, options)], realms, worker_options,
                       components)


def router_config(transports: list) -> dict:
    """One router worker, realm1 where anonymous may do everything (callers and publishers
    disclosed, authorization cached)."""
    perm = allow_all(disclose={"caller": True, "publisher": True}, cache=True)
    return node_config(transports, [realm(roles=[role(permissions=[perm])])])


def substitute(obj: Any, mapping: dict[str, Any]) -> Any:
    """``obj`` with every string equal to a key of ``mapping`` replaced by its value."""
    if isinstance(obj, str):
        return mapping.get(obj, obj)
    if isinstance(obj, list):
        return [substitute(x, mapping) for x in obj]
    if isinstance(obj, dict):
        return {k: substitute(v, mapping) for k, v in obj.items()}
    return obj
