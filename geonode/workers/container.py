"""Container workers and a router worker's autobahn components: the node's side of the child
that ``geonode.workers.runner`` runs.

Crossbar's meanings: ``options.restart`` restarts a *component* that stopped (always) or failed
(``restart-on-failed``), inside the container; ``options.shutdown`` ends the container when
its components stop. geonode also restarts the container *process* when it dies on its own (a
crash, SIGKILL) unless ``restart`` is ``restart-never``: Crossbar would stop the whole node
there (its default ``shutdown_on_worker_exit``), geonode keeps the router serving.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from geonode.config.model import Component
from geonode.workers.channel import Channel
from geonode.workers.environment import process_env
from geonode.workers.process import RESTART_NEVER, RESTART_ON_FAILED, Launch, Spec
from geonode.workers.runner import EXIT_AFTER_FAILURE, boot_argv

#: The runner's own exits that no restart mode undoes: an orderly stop, a shutdown mode that
#: ended it after a failure, a spec it cannot run.
_ORDERLY = (0, EXIT_AFTER_FAILURE, 2)


def _pythonpath(options: dict, config_dir: Path) -> list[str]:
    return [str((config_dir / p).resolve()) for p in options.get("pythonpath") or []]


def _process_restart(mode: str):
    def should(status: int | None) -> bool:
        if mode == RESTART_NEVER or status is None:
            return False
        return status not in _ORDERLY  # a crash, or a signal from someone else
    return should


def container_spec(worker: dict, json_path: str, name: str, config_dir: Path, loglevel: str,
                   on_final_exit: Any = None, gate: Any = None) -> Spec:
    options = worker.get("options") or {}
    comps = [dict(c, path=f"{json_path}.components[{i}]")
             for i, c in enumerate(worker.get("components") or [])]
    child = {
        "id": name, "path": json_path, "title": options.get("title") or f"geonode-{name}",
        "pythonpath": _pythonpath(options, config_dir), "config_dir": str(config_dir),
        "framework": options.get("framework", "auto"), "shutdown": options.get("shutdown"),
        "restart": options.get("restart"), "loglevel": loglevel, "components": comps,
    }
    line = (json.dumps(child) + "\n").encode()

    def prepare() -> Launch:
        return Launch(argv=boot_argv(), env=process_env(options), cwd=str(config_dir),
                      stdin=line, gate=gate)

    mode = options.get("restart", RESTART_NEVER)
    return Spec(name=name, kind="container", prepare=prepare, restart=mode,
                on_final_exit=on_final_exit, should_restart=_process_restart(mode))


def router_components_spec(router: Any, components: list[Component], json_path: str,
                           name: str, options: dict, config_dir: Path, loglevel: str,
                           gate: Any = None) -> Spec:
    """One child for a router worker's autobahn components, joined over a private channel
    (channel.py) with the realm, authid and role (default ``trusted``) the config model gives
    them, as geonode's in-process components (geonode.components)."""
    comps = [{"path": c.json_path, "type": "class", "classname": c.classname,
              "realm": c.realm, "extra": c.extra, "channel": k}
             for k, c in enumerate(components)]
    auths = [{"realm": c.realm, "authrole": c.role, "authid": c.authid} for c in components]

    def prepare() -> Launch:
        channel = Channel(router, auths, name)
        child = {"id": name, "path": json_path, "title": f"geonode-{name}",
                 "pythonpath": _pythonpath(options, config_dir), "config_dir": str(config_dir),
                 "framework": options.get("framework", "auto"), "loglevel": loglevel,
                 "components": comps, "channel_fd": channel.child_fd()}
        return Launch(argv=boot_argv(), env=process_env({}), cwd=str(config_dir),
                      stdin=(json.dumps(child) + "\n").encode(),
                      pass_fds=(channel.child_fd(),), after_spawn=channel.spawned,
                      after_exit=channel.close, gate=gate)

    return Spec(name=name, kind="components", prepare=prepare, restart=RESTART_ON_FAILED,
                should_restart=_process_restart(RESTART_ON_FAILED))
