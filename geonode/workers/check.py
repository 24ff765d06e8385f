"""What ``geonode check`` finds about workers beyond the schema: every error the workers would
log at start, worded the same (the guest's executable, component classes that cannot be
imported or are of the wrong kind, a missing Twisted). Component classes are imported in a
child process (probe.py), one per worker, with that worker's python path and environment.
"""

from __future__ import annotations

import os
from pathlib import Path

from geonode.config.model import NodeModel, Worker
from geonode.workers import guest, probe
from geonode.workers.environment import process_env
from geonode.workers.kinds import twisted_missing_message
from geonode.workers.process import LaunchError


def errors(model: NodeModel, config_dir: Path) -> list[str]:
    """Every worker's (enabled ones: start starts no other) errors, path-named."""
    out: list[str] = []
    for w in model.workers:
        if w.disabled:
            continue
        worker, wpath, kind, options = w.extra, w.json_path, w.type, w.options
        if kind == "guest":
            workdir = guest.workdir_of(worker, config_dir)
            if not workdir.is_dir():
                out.append(f"{wpath}.options.workdir: folder {options.get('workdir')!r} not "
                           f"found (looked for {workdir})")
                continue
            try:
                guest.resolve_executable(worker["executable"], workdir, wpath)
            except LaunchError as e:
                out.append(str(e))
        elif kind == "container":
            out += _container(worker, wpath, options, config_dir)
        elif kind == "router":
            out += _router(w, config_dir)
    return out


#: component classes that are never autobahn ones (geonode.config.imports.is_autobahn_component)
PLAIN_PREFIXES = ("crossbar.bridge.rest.", "geonode.")


def _pythonpath(options: dict, config_dir: Path) -> list[str]:
    return [str((config_dir / p).resolve()) for p in options.get("pythonpath") or []]


def _container(worker: dict, wpath: str, options: dict, config_dir: Path) -> list[str]:
    items = []
    for ci, comp in enumerate(worker.get("components") or []):
        path = f"{wpath}.components[{ci}]"
        if comp.get("type") == "function":
            items.append({"path": path, "expect": "callbacks",
                          "callbacks": comp.get("callbacks") or {}})
        else:
            items.append({"path": path, "expect": "session", "classname": comp["classname"]})
    if not items:
        return []
    result = probe.run(items, _pythonpath(options, config_dir), process_env(options),
                       str(config_dir), wpath)
    out = list(result["errors"])
    if options.get("framework") == "twisted" and not result["twisted"]:
        out.append(twisted_missing_message(f"{wpath}.options.framework", "'twisted'"))
    return out


def _router(worker: Worker, config_dir: Path) -> list[str]:
    """A router worker's autobahn components (the probe decides which they are, on the
    worker's python path; geonode.config.verify imports the plain ones)."""
    items = [{"path": comp.json_path, "classname": comp.classname, "expect": "router"}
             for comp in worker.components
             if comp.classname and not comp.classname.startswith(PLAIN_PREFIXES)]
    if not items:
        return []
    env = dict(os.environ)
    env.update(worker.env_vars)
    return probe.run(items, _pythonpath(worker.options, config_dir), env, str(config_dir),
                     worker.json_path)["errors"]
