"""The WAMP router core: realms, sessions, broker, dealer, auth. No sockets in here.

Transports wrap a connection in a ``geonode.transport.peer.Peer`` and call
``Router.attach(peer, auth_config=...)``; see docs/ARCHITECTURE.md "Router ↔ transport".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import txaio

txaio.use_asyncio()  # autobahn needs a txaio flavour chosen before its serializers load

from geonode.config.backplane import BackplaneConfig  # noqa: E402
from geonode.config.model import Worker, parse_worker  # noqa: E402
from geonode.router.auth.throttle import AuthThrottle, ThrottleConfig  # noqa: E402
from geonode.router.realm import Realm  # noqa: E402
from geonode.router.session import RouterSession  # noqa: E402

log = logging.getLogger("geonode.router")

__all__ = ["Router", "RouterSession", "Realm"]


class Router:
    """One router worker: its realms by name, and every attached session."""

    def __init__(self, worker: Worker | dict | None = None,
                 config_dir: Path | None = None,
                 backplane: Callable[[Router, BackplaneConfig, str], Any] | None = None) -> None:
        """``worker``: the config model's router worker; a dict (a worker's config as
        written: tests, benchmarks) is read through the same model. ``backplane``: makes the
        backplane of a worker with ``options.backplane`` (geonode.cluster.create)."""
        if not isinstance(worker, Worker):
            worker = parse_worker(worker)
        self.config_dir = Path(config_dir) if config_dir is not None else Path.cwd()
        self.json_path = worker.json_path   # the health service reports per worker
        self.realms: dict[str, Realm] = {}
        # options.backplane: this router is one node of a cluster; the realms then keep their
        # state in the backplane's tables. The backplane is built by the layer above
        # (geonode.cluster, handed in as ``backplane``): the router knows only the seam.
        self.backplane: Any = None
        if worker.backplane is not None and backplane is not None:
            self.backplane = backplane(self, worker.backplane, worker.json_path)
        for cfg in worker.realms:
            self.realms[cfg.name] = Realm(self, cfg)
        if self.backplane is not None:
            self.backplane.start()
        self.sessions: set[RouterSession] = set()
        # (realm, authmethod) -> failed authentications (geonode.metrics); realm names a
        # client made up count as "" so the label set stays bounded
        self.auth_failures: dict[tuple[str, str], int] = {}
        # failed authentications of every transport of this router (auth/throttle.py)
        self.auth_throttle = AuthThrottle(ThrottleConfig.from_options(
            worker.options.get("auth_throttle")))

    def attach(self, peer: Any, auth_config: dict | None = None,
               auth: dict | None = None) -> RouterSession:
        """A new connection. ``auth_config`` is the transport's ``auth`` dict (None: anonymous
        only); ``auth`` = {"authid", "authrole", "realm"?, "authextra"?} for in-process
        sessions, which join without authentication."""
        session = RouterSession(self, peer, auth_config=auth_config, auth=auth)
        self.sessions.add(session)
        return session

    def detached(self, session: RouterSession) -> None:
        self.sessions.discard(session)

    def auth_failed(self, realm: str | None, method: str) -> None:
        key = (realm if realm in self.realms else "", method)
        self.auth_failures[key] = self.auth_failures.get(key, 0) + 1

    def session_count(self) -> int:
        return sum(len(r.sessions) for r in self.realms.values())

    def call(self, realm: str, procedure: str, args: list, kwargs: dict | None = None,
             timeout: float | None = None) -> Any:
        """Call ``procedure`` on ``realm`` as the router (blocks the calling greenlet)."""
        r = self.realms.get(realm)
        if r is None:
            from autobahn.wamp.exception import ApplicationError

            from geonode.router.errors import NO_SUCH_REALM
            raise ApplicationError(NO_SUCH_REALM, f"no realm {realm!r}")
        return r.service.call(procedure, args, kwargs, timeout=timeout)

    def close(self) -> None:
        """Node shutdown: GOODBYE ``wamp.close.system_shutdown`` to every joined session,
        then its connection is closed.

        Every testament is published first, while all sessions are still joined, so each
        subscriber gets all of them (one at a time, the first sessions to go would miss the
        later ones' testaments). In-process sessions (components, WSGI apps) go last: they
        see the clients' ``wamp.session.on_leave`` events."""
        sessions = sorted(self.sessions,
                          key=lambda s: s.transport_details.get("type") == "inprocess")
        for s in sessions:
            if s.realm is not None:
                s.realm.publish_testaments(s)
        for s in sessions:
            s.shutdown()
        self.sessions.clear()
        if self.backplane is not None:
            self.backplane.close()   # after the leaves: the other nodes hear them first
