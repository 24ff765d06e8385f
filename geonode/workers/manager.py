"""The node's workers besides its routers: containers, guests, a router's autobahn
components. Started once the routers listen, stopped (in parallel) before the routers close.

The controller's ``options.shutdown`` decides what a worker's exit (one that is not
restarted) does to the node: ``shutdown_on_worker_exit``, ``shutdown_on_worker_exit_with_error``
and ``shutdown_on_last_worker_exit`` stop it, as in Crossbar. Without the option geonode keeps
serving (Crossbar's standalone default is ``shutdown_on_worker_exit``: one crashed helper would
take every app on the node down with it; docs/workers.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from gevent.event import Event

from geonode.config.model import Component, Worker
from geonode.config.semantic import NODE_SHUTDOWN_MODES
from geonode.workers import container, guest
from geonode.workers.process import STOP_GRACE, Supervised

log = logging.getLogger("geonode.workers")

# (the first, shutdown_on_shutdown_requested, is what happens anyway: SIGTERM/SIGINT)
ON_WORKER_EXIT, ON_WORKER_EXIT_WITH_ERROR, ON_LAST_WORKER_EXIT = NODE_SHUTDOWN_MODES[1:]


def worker_name(worker: Worker) -> str:
    """Crossbar's default worker ids are ``worker001``...; geonode names them by position."""
    return worker.id or f"worker{worker.index:03d}"


class Workers:
    def __init__(self, modes: list[str], config_dir: Path, loglevel: str = "info") -> None:
        """``modes``: ``controller.options.shutdown`` (NodeModel.shutdown)."""
        self.config_dir = config_dir
        self.loglevel = loglevel
        self.modes = list(modes)
        self.items: list[Supervised] = []
        self.watches: list[guest.Watch] = []
        self.alive: set[str] = set()
        self.request_stop: Callable[[str], None] | None = None
        # Set once the routers listen: a component child imports its code before, and
        # connects after (node start to component joined is then max(node, imports)).
        self.listening = Event()
        self.early: list[Supervised] = []

    def __len__(self) -> int:
        return len(self.items)

    def add(self, model: Worker) -> None:
        """A container or guest worker (its config as written: ``model.extra``)."""
        worker, wpath = model.extra, model.json_path
        name = worker_name(model)

        def final(status: int | None, name: str = name) -> None:
            self._exited(name, status)

        if model.type == "container":
            spec = container.container_spec(worker, wpath, name, self.config_dir, self.loglevel,
                                            on_final_exit=final, gate=self.listening)
            self.items.append(Supervised(spec))
            self.early.append(self.items[-1])
        else:
            sup = Supervised(guest.spec(worker, wpath, name, self.config_dir, final))
            self.items.append(sup)
            watch = model.options.get("watch")
            if watch:
                self.watches.append(guest.Watch(sup, watch, self.config_dir))

    def add_router_components(self, router: Any, components: list[Component],
                              worker: Worker) -> None:
        """A router worker's autobahn components, in one child."""
        spec = container.router_components_spec(router, components, worker.json_path,
                                                f"{worker_name(worker)}-components",
                                                worker.options,
                                                self.config_dir, self.loglevel,
                                                gate=self.listening)
        self.items.append(Supervised(spec))
        self.early.append(self.items[-1])

    def prestart(self) -> None:
        """Start the component children: they import their code, then wait for ``start``."""
        for s in self.early:
            self.alive.add(s.spec.name)
            s.start()
        gevent.sleep(0)  # their greenlets fork now, not once the node is serving

    def start(self) -> None:
        """The routers listen: components connect, guests start."""
        self.listening.set()
        for s in self.items:
            if s not in self.early:
                self.alive.add(s.spec.name)
                s.start()
        for w in self.watches:
            w.start()

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM every worker at once, SIGKILL what is left after ``grace``; all reaped."""
        for w in self.watches:
            w.stop()
        gevent.joinall([gevent.spawn(s.stop, grace) for s in self.items])

    def _exited(self, name: str, status: int | None) -> None:
        self.alive.discard(name)
        why = None
        if ON_WORKER_EXIT in self.modes:
            why = ON_WORKER_EXIT
        elif ON_WORKER_EXIT_WITH_ERROR in self.modes and status != 0:
            why = ON_WORKER_EXIT_WITH_ERROR
        elif ON_LAST_WORKER_EXIT in self.modes and not self.alive:
            why = ON_LAST_WORKER_EXIT
        if why is None:
            log.info("worker %r is gone; the node keeps running", name)
        elif self.request_stop is not None:
            log.info("worker %r is gone and controller.options.shutdown has %r: stopping the "
                     "node", name, why)
            self.request_stop(why)
