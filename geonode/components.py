"""Router components: Crossbar's ``"components": [{"type": "class", ...}]`` on a router worker.

A component is a plain Python class (geonode's API, not autobahn's async ApplicationSession)::

    class Backend:
        def __init__(self, config):          # config.realm, config.extra (the "extra" dict)
            self.greeting = config.extra.get("greeting", "hello")

        def on_join(self, session):          # a geonode.wamp.Session, joined
            session.register("com.example.greet", self.greet)
            session.subscribe("com.example.news", self.on_news)

        def on_leave(self, session, reason): # optional
            ...

        def greet(self, name):               # runs on the session's thread pool
            return f"{self.greeting}, {name}"

``on_join`` runs in a greenlet on the hub: the session API waits cooperatively there. Procedures
and handlers run on the session's own thread pool, so blocking code never stalls the router;
gevent-aware ones opt in to run on the hub with ``session.register(..., on_hub=True)`` or the
``@geonode.wamp.on_hub`` decorator. ``__init__`` may also take no argument.

Config keys: ``classname`` (R, "package.module.Class"), ``realm`` (R), ``role`` (default
"trusted": Crossbar's router-side components are trusted), ``id`` (the session's authid,
default the class name), ``extra``. A ``ValueError`` raised by ``__init__`` is reported as a config error at the
component's JSON path (start its message with ``extra.<key>:`` to name the key). Crossbar's
``crossbar.bridge.rest.MessageForwarder`` and
``crossbar.bridge.rest.RESTCallee`` are aliases for geonode's HTTP subscriber and HTTP callee.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from geonode import wamp
from geonode.config.imports import ALIASES, component_class, component_error
from geonode.config.model import Component as ComponentModel

log = logging.getLogger("geonode.components")

__all__ = ["ALIASES", "Component", "ComponentConfig", "Components", "start"]


class ComponentConfig:
    """What a component's ``__init__`` gets (the attributes of autobahn's ComponentConfig)."""

    def __init__(self, realm: str, extra: Any, role: str, id: str,
                 config_dir: Any = None) -> None:
        self.realm = realm
        self.extra = extra if extra is not None else {}
        self.role = role
        self.id = id
        self.config_dir = config_dir  # the node config's folder (base for relative paths)

    def __repr__(self) -> str:
        return f"ComponentConfig(realm={self.realm!r}, role={self.role!r}, id={self.id!r})"


def _instantiate(cls: type, config: ComponentConfig) -> Any:
    try:
        params = [p for p in inspect.signature(cls).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    except (TypeError, ValueError):
        return cls(config)  # no signature to read: give it the config
    return cls(config) if params else cls()


class Component:
    """One running component: the user object and its session."""

    def __init__(self, obj: Any, session: wamp.Session, json_path: str) -> None:
        self.obj = obj
        self.session = session
        self.json_path = json_path
        self._started = False
        session.on_join.append(self._joined)
        session.on_leave.append(self._left)

    def _joined(self, session: wamp.Session) -> None:
        # on_join runs once: after a re-join the session re-makes the component's
        # subscriptions and registrations itself.
        if self._started:
            return
        self._started = True
        log.info("component %s joined %s as %s (session %s)", self.json_path, session.realm,
                 session.authrole, session.session_id)
        try:
            self.obj.on_join(session)
        except Exception:
            log.exception("component %s: on_join failed", self.json_path)

    def _left(self, session: wamp.Session, reason: str) -> None:
        fn = getattr(self.obj, "on_leave", None)
        if fn is not None:
            fn(session, reason)


class Components:
    """The handle ``start`` returns: ``stop()`` makes every component's session leave."""

    def __init__(self, items: list[Component]) -> None:
        self.items = items

    def stop(self) -> None:
        for c in self.items:
            try:
                c.session.leave()
            except Exception:
                log.debug("component %s: leave failed", c.json_path, exc_info=True)


def start(router: Any, components: list[ComponentModel], ctx: Any) -> Components:
    """Instantiate every ``type: class`` component and join it to ``router`` (on the hub).

    Classes are all imported before any starts, so a bad ``classname`` fails the whole list with
    a config error naming its JSON path."""
    wamp.register_router(router)
    prepared = [(comp, component_class(comp)) for comp in components]
    items = []
    for comp, cls in prepared:
        config = ComponentConfig(comp.realm, comp.extra, comp.role, comp.authid,
                                 getattr(ctx, "config_dir", None))
        try:
            obj = _instantiate(cls, config)
        except ValueError as e:
            # a constructor's complaint about its config: reported like any config error
            raise component_error(comp, e) from e
        session = wamp.Session(comp.realm, comp.role, comp.authid, router=router,
                               name=f"component:{comp.json_path}")
        items.append(Component(obj, session, comp.json_path))
        session._kick()
    return Components(items)
