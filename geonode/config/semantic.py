"""Checks the JSON Schema cannot express: references between parts of the config, duplicate
names, and files that must exist. Each error is led by the JSON path of the key at fault.

Runs after the schema, on data that may still be partly invalid, so every access is guarded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geonode.config.environ import join_path
from geonode.config.schema import NOT_SUPPORTED

_BRIDGES = ("publisher", "caller", "webhook")


def _dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _list(x: Any) -> list:
    return x if isinstance(x, list) else []


def semantic_errors(data: dict, config_dir: Path) -> list[str]:
    errors: list[str] = []
    listening: dict[tuple, tuple[str, bool]] = {}  # endpoint → (its path, shared)
    for wi, worker in enumerate(_list(data.get("workers"))):
        worker = _dict(worker)
        if worker.get("type") != "router":
            continue
        wpath = f"workers[{wi}]"
        realms = _check_realms(worker, wpath, errors)
        for ti, transport in enumerate(_list(worker.get("transports"))):
            tpath = f"{wpath}.transports[{ti}]"
            transport = _dict(transport)
            _check_endpoint(_dict(transport.get("endpoint")), f"{tpath}.endpoint", config_dir,
                            listening, errors)
            if transport.get("type") == "web":
                _check_paths(_dict(transport.get("paths")), f"{tpath}.paths", realms,
                             config_dir, errors)
        for ci, comp in enumerate(_list(worker.get("components"))):
            comp = _dict(comp)
            realm = comp.get("realm")
            if isinstance(realm, str) and realm not in realms:
                errors.append(_unknown_realm(f"{wpath}.components[{ci}].realm", realm, realms))
    return errors


def _unknown_realm(path: str, realm: str, realms: dict) -> str:
    have = ", ".join(repr(r) for r in realms) or "none"
    return f"{path}: realm {realm!r} is not defined in this worker's realms (defined: {have})"


def _unique_name(item: dict, path: str, seen: dict[str, str], what: str,
                 errors: list[str]) -> None:
    """Record ``item["name"]`` at ``path`` in ``seen``, or report it as a duplicate."""
    name = item.get("name")
    if not isinstance(name, str):
        return
    if name in seen:
        errors.append(f"{path}.name: duplicate {what} name {name!r} "
                      f"(already defined at {seen[name]})")
    else:
        seen[name] = path


def _check_realms(worker: dict, wpath: str, errors: list[str]) -> dict[str, str]:
    """Realm name → its JSON path; duplicates and role conflicts reported."""
    realms: dict[str, str] = {}
    for ri, realm in enumerate(_list(worker.get("realms"))):
        realm = _dict(realm)
        rpath = f"{wpath}.realms[{ri}]"
        _unique_name(realm, rpath, realms, "realm", errors)
        roles: dict[str, str] = {}
        for oi, role in enumerate(_list(realm.get("roles"))):
            role = _dict(role)
            opath = f"{rpath}.roles[{oi}]"
            _unique_name(role, opath, roles, "role", errors)
            if "permissions" in role and "authorizer" in role:
                errors.append(f"{opath}: give either 'permissions' or 'authorizer', not both")
    return realms


def _check_file(path: str, value: Any, config_dir: Path, what: str, errors: list[str]) -> None:
    if isinstance(value, str) and not (config_dir / value).is_file():
        errors.append(f"{path}: {what} file {value!r} not found "
                      f"(looked for {(config_dir / value).resolve()})")


def _check_endpoint(ep: dict, epath: str, config_dir: Path,
                    listening: dict[tuple, tuple[str, bool]], errors: list[str]) -> None:
    if ep.get("type") == "tcp":
        port = ep.get("port")
        key: tuple = ("tcp", ep.get("interface", ""), port)
        if isinstance(port, int):
            other = listening.get(key)
            if other is None:
                listening[key] = (epath, bool(ep.get("shared")))
            elif ep.get("shared") and other[1]:
                # Crossbar's way to spread one port over router worker processes.
                errors.append(f"{epath}.shared: port {port} is shared with {other[0]}: router "
                              f"workers sharing a port {NOT_SUPPORTED} (it runs one process; "
                              "keep one worker)")
            else:
                errors.append(f"{epath}.port: port {port} is already used by {other[0]}")
        tls = _dict(ep.get("tls"))
        for name, what in (("key", "TLS key"), ("certificate", "TLS certificate"),
                           ("dhparam", "TLS dhparam")):
            _check_file(f"{epath}.tls.{name}", tls.get(name), config_dir, what, errors)
        for name in ("chain_certificates", "ca_certificates"):
            for i, f in enumerate(_list(tls.get(name))):
                _check_file(f"{epath}.tls.{name}[{i}]", f, config_dir, "certificate", errors)
    elif ep.get("type") == "unix":
        key = ("unix", ep.get("path"))
        if isinstance(ep.get("path"), str):
            if key in listening:
                errors.append(f"{epath}.path: socket path is already used by {listening[key][0]}")
            else:
                listening[key] = (epath, False)


def _check_paths(paths: dict, ppath: str, realms: dict, config_dir: Path,
                 errors: list[str]) -> None:
    for key, svc in paths.items():
        svc = _dict(svc)
        spath = join_path(ppath, key)
        kind = svc.get("type")
        if kind == "path":
            _check_paths(_dict(svc.get("paths")), f"{spath}.paths", realms, config_dir, errors)
        elif kind == "wsgi":
            lo, hi = svc.get("minthreads", 0), svc.get("maxthreads", 20)
            if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
                errors.append(f"{spath}.minthreads: minthreads ({lo}) is more than "
                              f"maxthreads ({hi})")
            realm = _dict(svc.get("wamp")).get("realm")
            if isinstance(realm, str) and realm not in realms:
                errors.append(_unknown_realm(f"{spath}.wamp.realm", realm, realms))
        elif kind in _BRIDGES:
            realm = svc.get("realm")
            if isinstance(realm, str) and realm not in realms:
                errors.append(_unknown_realm(f"{spath}.realm", realm, realms))
        elif kind == "static":
            has_dir = "directory" in svc
            has_pkg = "package" in svc or "resource" in svc
            if has_dir and has_pkg:
                errors.append(f"{spath}: give either 'directory' or 'package' + 'resource', "
                              "not both")
            elif not has_dir and not ("package" in svc and "resource" in svc):
                errors.append(f"{spath}: 'directory' (or 'package' + 'resource') is required")
            directory = svc.get("directory")
            if isinstance(directory, str) and not (config_dir / directory).is_dir():
                errors.append(f"{spath}.directory: folder {directory!r} not found "
                              f"(looked for {(config_dir / directory).resolve()})")


def warnings(data: dict, config_dir: Path) -> list[str]:
    """Things that are allowed but probably wrong; ``geonode check`` shows them, start logs them.

    Looks only, never imports (a wsgi module that cannot be imported is an error of
    ``geonode.config.verify``, which ``check`` runs and ``start`` meets while it builds).
    """
    out: list[str] = []
    for wi, worker in enumerate(_list(data.get("workers"))):
        worker = _dict(worker)
        wpath = f"workers[{wi}]"
        for i, entry in enumerate(_list(_dict(worker.get("options")).get("pythonpath"))):
            if isinstance(entry, str):
                full = (config_dir / entry).resolve()
                if not full.is_dir():
                    out.append(f"{wpath}.options.pythonpath[{i}]: {entry!r} is not a folder "
                               f"({full})")
        for ti, transport in enumerate(_list(worker.get("transports"))):
            transport = _dict(transport)
            tpath = f"{wpath}.transports[{ti}]"
            ep = _dict(transport.get("endpoint"))
            if _dict(transport.get("options")).get("hsts") and "tls" not in ep:
                out.append(f"{tpath}.options.hsts: ignored, the endpoint has no TLS")
            if transport.get("type") == "web":
                _ignored_keys(_dict(transport.get("paths")), f"{tpath}.paths", out)
    return out


def _ignored_keys(paths: dict, ppath: str, out: list[str]) -> None:
    """Warnings about path services: keys accepted but ignored."""
    for key, svc in paths.items():
        svc = _dict(svc)
        spath = join_path(ppath, key)
        if svc.get("type") == "path":
            _ignored_keys(_dict(svc.get("paths")), f"{spath}.paths", out)
        elif svc.get("type") == "websocket" and "cookie" in svc:
            out.append(f"{spath}.cookie: ignored, cookie tracking {NOT_SUPPORTED} "
                       "(no cookie is set)")
        elif svc.get("type") == "wsgi" and isinstance(svc.get("module"), str):
            if svc.get("threads") is False:
                for key in ("minthreads", "maxthreads"):
                    if key in svc:
                        out.append(f"{spath}.{key}: ignored, \"threads\": false runs the app "
                                   "on the hub (no thread pool)")
