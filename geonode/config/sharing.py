"""Identical workers on one ``"shared": true`` port (Crossbar's way to spread a port over CPU
cores, one worker process per core): geonode serves them with the first one.

Crossbar runs each worker in its own process and lets the kernel spread connections over
them (SO_REUSEPORT). geonode runs one process per node (``--processes N`` for more), so
several workers that differ only in their process options (``cpu_affinity``, ``title``, ...)
and their ``id`` would be the same service N times over, in one process: it serves them with
one listener and says so (``geonode check`` warns, ``start`` logs it). Workers that differ in
anything else (another realm, another path) are still refused by name
(geonode.config.semantic): one process cannot be two different routers on one port.

Reads the config as written (before the model), so the semantic checks, the model and the
warnings agree on which workers are copies.
"""

from __future__ import annotations

import json
from typing import Any

#: Worker options that mean something only for Crossbar's one-process-per-worker model: a
#: router worker's are ignored (geonode.node), and workers differing only in them are copies.
PROCESS_OPTIONS = ("cpu_affinity", "expose_controller", "expose_shared", "python", "title")


def _dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _list(x: Any) -> list:
    return x if isinstance(x, list) else []


def disabled(value: Any) -> bool:
    """A worker's ``options.disabled``: a boolean, or a string from ``${VAR}`` substitution."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def shared_endpoints(worker: dict, wpath: str) -> list[tuple[str, int]]:
    """``(JSON path, port)`` of the worker's tcp endpoints with ``"shared": true``."""
    if worker.get("type", "router") == "websocket-testee":
        transports = [(f"{wpath}.transport", _dict(worker.get("transport")))]
    else:
        transports = [(f"{wpath}.transports[{i}]", _dict(t))
                      for i, t in enumerate(_list(worker.get("transports")))]
    out = []
    for tpath, transport in transports:
        ep = _dict(transport.get("endpoint"))
        if ep.get("type", "tcp") == "tcp" and ep.get("shared") is True \
                and isinstance(ep.get("port"), int):
            out.append((f"{tpath}.endpoint", ep["port"]))
    return out


def _shape(worker: dict) -> str:
    """The worker as written, without what only names or places its process."""
    options = {k: v for k, v in _dict(worker.get("options")).items()
               if k not in PROCESS_OPTIONS}
    rest = {k: v for k, v in worker.items() if k not in ("id", "options")}
    return json.dumps([rest, options], sort_keys=True, default=str)


def copies(data: dict) -> dict[int, int]:
    """Worker index → index of the identical earlier worker that serves it, for workers with
    a shared tcp endpoint (disabled workers are never copies: they are not started anyway)."""
    first: dict[str, int] = {}
    out: dict[int, int] = {}
    for i, worker in enumerate(_list(data.get("workers"))):
        worker = _dict(worker)
        if disabled(_dict(worker.get("options")).get("disabled", False)) \
                or not shared_endpoints(worker, ""):
            continue
        key = _shape(worker)
        if key in first:
            out[i] = first[key]
        else:
            first[key] = i
    return out


def warnings(data: dict) -> list[str]:
    """One line per group of copies, at the served worker's first shared endpoint."""
    groups: dict[int, list[int]] = {}
    for copy, served in copies(data).items():
        groups.setdefault(served, []).append(copy)
    workers = _list(data.get("workers"))
    out = []
    for served, dups in sorted(groups.items()):
        worker = _dict(workers[served])
        epath, port = shared_endpoints(worker, f"workers[{served}]")[0]
        n = 1 + len(dups)
        names = ", ".join(f"workers[{i}]" for i in dups)
        hint = f"use --processes {n} for {n} cores"
        if worker.get("type", "router") == "router" and _list(worker.get("realms")):
            hint += " (a router serving WAMP needs options.backplane for it: docs/scaling.md)"
        out.append(f"{epath}.shared: {n} workers share port {port}: served by one process "
                   f"({names} identical to workers[{served}] but for process options, not "
                   f"started); {hint}")
    return out
