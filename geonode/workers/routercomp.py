"""Which of a router worker's components are autobahn ``ApplicationSession``s (run in a child,
geonode.workers.container) and which are geonode's plain classes (run in the node,
geonode.components) — decided without importing user code into the node.

A class whose module's source names ``ApplicationSession`` (or imports autobahn's Twisted or
asyncio flavour) is an autobahn component; importing it in the node would pick txaio's
flavour under geonode's feet. The child imports it and says clearly if it is not one.
"""

from __future__ import annotations

import importlib.util
import re

_AUTOBAHN = re.compile(rb"ApplicationSession|autobahn\.twisted|autobahn\.asyncio")
#: Source read to decide (a module whose first megabyte does not say so is not one of them).
MAX_SOURCE = 1 << 20


def is_autobahn_component(classname: str) -> bool:
    if classname.startswith("crossbar.bridge.rest.") or classname.startswith("geonode."):
        return False
    module = classname.rpartition(".")[0]
    if not module:
        return False
    try:
        spec = importlib.util.find_spec(module)
    except Exception:  # a parent package fails to import: geonode.components reports it
        return False
    origin = getattr(spec, "origin", None)
    if not origin or not origin.endswith(".py"):
        return False
    try:
        with open(origin, "rb") as f:
            return bool(_AUTOBAHN.search(f.read(MAX_SOURCE)))
    except OSError:
        return False


def split(components: list[dict]) -> tuple[set[int], list[tuple[int, dict]]]:
    """(indexes of the autobahn components, [(index, config)] of them)."""
    items = [(i, c) for i, c in enumerate(components or [])
             if c.get("type", "class") == "class" and isinstance(c.get("classname"), str)
             and is_autobahn_component(c["classname"])]
    return {i for i, _ in items}, items
