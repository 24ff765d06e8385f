"""What a path service gets when it is built from its config."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geonode import __version__
from geonode.config.environ import join_path


@dataclass
class NodeInfo:
    """Facts about the running node, shown by the ``nodeinfo`` service."""

    version: str = __version__
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)
    title: str | None = None
    # Filled in by the node once routers exist: callable returning the live session count.
    session_count: Any = None
    #: "starting" until every endpoint accepts, "up", then "stopping" (the health service)
    state: str = "starting"
    #: set by a ``metrics`` path service: the node then counts HTTP requests per server
    count_http: bool = False
    #: the Node (geonode.node.Node) for services that report on it (health, metrics, status)
    owner: Any = None
    #: more required parts for the health service: callables returning
    #: (name, ok: bool, detail: dict) (a backplane link, a worker process, ...)
    health_checks: list = field(default_factory=list)


@dataclass
class BuildContext:
    config_dir: Path
    json_path: str
    router: Any = None
    transport_options: dict = field(default_factory=dict)
    node: NodeInfo = field(default_factory=NodeInfo)
    tls: bool = False

    def child(self, key: str) -> BuildContext:
        """The context for a nested path, with its JSON path extended the way the config
        checker writes it (``paths.ws``, ``paths["/"]``)."""
        return BuildContext(
            config_dir=self.config_dir,
            json_path=join_path(self.json_path, key),
            router=self.router,
            transport_options=self.transport_options,
            node=self.node,
            tls=self.tls,
        )
