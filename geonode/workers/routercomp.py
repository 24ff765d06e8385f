"""Which of a router worker's components are autobahn ``ApplicationSession``s (run in a child,
geonode.workers.container) and which are geonode's plain classes (run in the node,
geonode.components). The decision is the config's (geonode.config.imports.is_autobahn_component):
``geonode check`` makes it the same way.
"""

from __future__ import annotations

from geonode.config.imports import is_autobahn_component
from geonode.config.model import Component

__all__ = ["is_autobahn_component", "split"]


def split(components: list[Component]) -> tuple[list[Component], list[Component]]:
    """(the plain components, the autobahn ones), each in config order."""
    plain: list[Component] = []
    autobahn: list[Component] = []
    for comp in components:
        (autobahn if is_autobahn_component(comp.classname) else plain).append(comp)
    return plain, autobahn
