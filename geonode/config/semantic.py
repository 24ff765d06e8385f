"""Checks the JSON Schema cannot express: references between parts of the config, duplicate
names, and files that must exist. Each error is led by the JSON path of the key at fault.

Runs after the schema, on data that may still be partly invalid, so every access is guarded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geonode.config import serializers as ser
from geonode.config.auth import errors as auth_errors
from geonode.config.backplane import errors as backplane_errors
from geonode.config.environ import join_path
from geonode.config.schema import NOT_SUPPORTED
from geonode.config.sharing import copies as shared_copies
from geonode.config.sharing import warnings as sharing_warnings
from geonode.config.tls import weak_dhparam

_BRIDGES = ("publisher", "caller", "webhook")


def _dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _list(x: Any) -> list:
    return x if isinstance(x, list) else []


def semantic_errors(data: dict, config_dir: Path) -> list[str]:
    errors: list[str] = []
    listening: dict[tuple, tuple[str, bool]] = {}  # endpoint → (its path, shared)
    _check_node_shutdown(_dict(_dict(data.get("controller")).get("options")), errors)
    copies = shared_copies(data)  # served by an identical worker: their ports are its ports
    for wi, worker in enumerate(_list(data.get("workers"))):
        worker = _dict(worker)
        wpath = f"workers[{wi}]"
        ports = {} if wi in copies else listening
        if worker.get("type") == "websocket-testee":
            _check_endpoint(_dict(_dict(worker.get("transport")).get("endpoint")),
                            f"{wpath}.transport.endpoint", config_dir, ports, errors)
            continue
        if worker.get("type") == "container":
            _check_container(_dict(worker.get("options")), wpath, errors)
        if worker.get("type") != "router":
            continue
        # (a WAMP transport or path in a worker without realms, its serializers: the model)
        realms = _check_realms(worker, wpath, errors)
        # options.backplane (issue 11): what its schema cannot say
        errors += backplane_errors(_dict(worker.get("options")).get("backplane"),
                                   f"{wpath}.options.backplane", config_dir)
        for ti, transport in enumerate(_list(worker.get("transports"))):
            tpath = f"{wpath}.transports[{ti}]"
            transport = _dict(transport)
            _check_endpoint(_dict(transport.get("endpoint")), f"{tpath}.endpoint", config_dir,
                            ports, errors)
            kind = transport.get("type")
            if kind == "web":
                _check_paths(_dict(transport.get("paths")), f"{tpath}.paths", realms,
                             config_dir, errors)
            elif kind == "mqtt":
                _check_mqtt(_dict(transport.get("options")), f"{tpath}.options", worker,
                            realms, errors)
            elif kind == "universal":
                if "mqtt" in transport:
                    _check_mqtt(_dict(_dict(transport["mqtt"]).get("options")),
                                f"{tpath}.mqtt.options", worker, realms, errors)
                if "web" in transport:
                    _check_paths(_dict(_dict(transport["web"]).get("paths")),
                                 f"{tpath}.web.paths", realms, config_dir, errors)
            # (forwarded_allow_ips: the model, with geonode.web.forwarded's own reader)
        for ci, comp in enumerate(_list(worker.get("components"))):
            comp = _dict(comp)
            realm = comp.get("realm")
            if isinstance(realm, str) and realm not in realms:
                errors.append(_unknown_realm(f"{wpath}.components[{ci}].realm", realm, realms))
    errors.extend(auth_errors(data))  # what auth methods need of their transports
    return errors


# Crossbar's checkconfig: a restart mode the shutdown mode would never let happen.
_IMPOSSIBLE = {("restart-always", "shutdown-on-any-component-stopped"),
               ("restart-always", "shutdown-on-any-component-failed"),
               ("restart-always", "shutdown-on-last-component-stopped"),
               ("restart-on-failed", "shutdown-on-any-component-failed")}


# controller.options.shutdown, Crossbar's names (what they do: geonode.workers.manager)
NODE_SHUTDOWN_MODES = ("shutdown_on_shutdown_requested", "shutdown_on_worker_exit",
                       "shutdown_on_worker_exit_with_error", "shutdown_on_last_worker_exit")


def _check_node_shutdown(options: dict, errors: list[str]) -> None:
    modes = options.get("shutdown")
    for i, mode in enumerate([modes] if isinstance(modes, str) else _list(modes)):
        if isinstance(mode, str) and mode not in NODE_SHUTDOWN_MODES:
            where = "" if isinstance(modes, str) else f"[{i}]"
            errors.append(f"controller.options.shutdown{where}: {mode!r} is not one of "
                          + ", ".join(repr(m) for m in NODE_SHUTDOWN_MODES))


def _check_container(options: dict, wpath: str, errors: list[str]) -> None:
    pair = (options.get("restart"), options.get("shutdown"))
    if pair in _IMPOSSIBLE:
        errors.append(f"{wpath}.options.restart: {pair[0]!r} won't work with "
                      f"shutdown {pair[1]!r}")


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


def _check_mqtt(options: dict, opath: str, worker: dict, realms: dict,
                errors: list[str]) -> None:
    """The realm (and a dynamic payload codec's realm) exist; the role too when no ``auth``
    decides it; native serializers are installed."""
    realm = options.get("realm")
    if isinstance(realm, str):
        if realm not in realms:
            errors.append(_unknown_realm(f"{opath}.realm", realm, realms))
        elif "auth" not in options:
            role = options.get("role", "anonymous")
            cfg = next((_dict(r) for r in _list(worker.get("realms"))
                        if _dict(r).get("name") == realm), {})
            roles = [_dict(r).get("name") for r in _list(cfg.get("roles"))]
            if isinstance(role, str) and role != "trusted" and role not in roles:
                errors.append(f"{opath}.role: role {role!r} is not defined on realm {realm!r} "
                              f"(defined: {', '.join(repr(r) for r in roles) or 'none'})")
    for prefix, entry in _dict(options.get("payload_mapping")).items():
        entry = _dict(entry)
        epath = join_path(f"{opath}.payload_mapping", prefix)
        codec_realm = entry.get("realm")
        if entry.get("type") == "dynamic" and isinstance(codec_realm, str) \
                and codec_realm not in realms:
            errors.append(_unknown_realm(f"{epath}.realm", codec_realm, realms))
        serializer = entry.get("serializer")
        if entry.get("type") == "native" and isinstance(serializer, str) \
                and serializer in ser.SUPPORTED and serializer not in ser.installed():
            errors.append(f"{epath}.serializer: serializer {serializer!r} is not "
                          f"installed (installed: {', '.join(ser.installed())})")


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
                # Crossbar's way to spread one port over worker processes; identical workers
                # are served by one (geonode.config.sharing), these differ.
                errors.append(f"{epath}.shared: port {port} is shared with {other[0]}, which "
                              f"differs: router workers sharing a port {NOT_SUPPORTED} unless "
                              "identical (one process serves the port: give each its own "
                              "port, or make them identical but for process options)")
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
        elif kind in _BRIDGES or kind == "status":
            realm = svc.get("realm")
            if isinstance(realm, str) and realm not in realms:
                errors.append(_unknown_realm(f"{spath}.realm", realm, realms))
        elif kind in ("wap", "upload"):
            # (their files, an archive's file, a backend's URL: the model, as start reads them)
            realm, rpath = (_dict(svc.get("wamp")).get("realm"), f"{spath}.wamp.realm") \
                if kind == "wap" else (svc.get("realm"), f"{spath}.realm")
            if isinstance(realm, str) and realm not in realms:
                errors.append(_unknown_realm(rpath, realm, realms))
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
    out = _crossbar_habits(data, config_dir)
    for wi, worker in enumerate(_list(data.get("workers"))):
        worker = _dict(worker)
        wpath = f"workers[{wi}]"
        for i, entry in enumerate(_list(_dict(worker.get("options")).get("pythonpath"))):
            if isinstance(entry, str):
                full = (config_dir / entry).resolve()
                if not full.is_dir():
                    out.append(f"{wpath}.options.pythonpath[{i}]: {entry!r} is not a folder "
                               f"({full})")
        for ri, realm in enumerate(_list(worker.get("realms"))):
            for key, what in (("stats", "realm statistics events"),
                              ("trace", "message tracing")):
                if key in _dict(realm):
                    out.append(f"{wpath}.realms[{ri}].{key}: ignored, {what} "
                               f"{NOT_SUPPORTED}")
        for ti, transport in enumerate(_list(worker.get("transports"))):
            transport = _dict(transport)
            tpath = f"{wpath}.transports[{ti}]"
            ep = _dict(transport.get("endpoint"))
            if _dict(transport.get("options")).get("hsts") and "tls" not in ep:
                out.append(f"{tpath}.options.hsts: ignored, the endpoint has no TLS")
            if transport.get("type") == "web":
                _ignored_keys(_dict(transport.get("paths")), f"{tpath}.paths", out)
            elif transport.get("type") == "universal":
                _ignored_keys(_dict(transport.get("websocket")), f"{tpath}.websocket", out)
                _ignored_keys(_dict(_dict(transport.get("web")).get("paths")),
                              f"{tpath}.web.paths", out)
            elif transport.get("type") == "websocket":
                _ignored_keys({"": transport}, tpath, out)
    return out


def _crossbar_habits(data: dict, config_dir: Path) -> list[str]:
    """What Crossbar configs carry that geonode serves differently (docs/transports.md)."""
    out: list[str] = []
    if "fabric" in _dict(data.get("controller")):
        out.append("controller.fabric: ignored, the uplink to a Crossbar FX management master "
                   f"{NOT_SUPPORTED} (the node runs on its own)")
    out += sharing_warnings(data)
    for epath, tls in _tls_endpoints(data):
        refused = weak_dhparam(tls, config_dir)
        if refused:
            out.append(f"{epath}.tls.dhparam: ignored, OpenSSL refuses the DH parameters in "
                       f"{(config_dir / tls['dhparam']).resolve()} as too small ({refused}): "
                       "DHE cipher suites are off, ECDHE and TLS 1.3 work (a 2048-bit file: "
                       "openssl dhparam -out dhparam.pem 2048)")
    return out


def _tls_endpoints(data: dict) -> list[tuple[str, dict]]:
    """``(JSON path, tls dict)`` of every listening endpoint with a ``tls`` key."""
    found = []
    copies = shared_copies(data)  # not started: nothing to say twice
    for wi, worker in enumerate(_list(data.get("workers"))):
        worker = _dict(worker)
        wpath = f"workers[{wi}]"
        if wi in copies:
            continue
        transports = ([(f"{wpath}.transport", worker.get("transport"))]
                      if worker.get("type") == "websocket-testee" else
                      [(f"{wpath}.transports[{i}]", t)
                       for i, t in enumerate(_list(worker.get("transports")))])
        for tpath, transport in transports:
            tls = _dict(_dict(_dict(transport).get("endpoint")).get("tls"))
            if tls:
                found.append((f"{tpath}.endpoint", tls))
    return found


def _ignored_keys(paths: dict, ppath: str, out: list[str]) -> None:
    """Warnings about path services: keys accepted but ignored."""
    for key, svc in paths.items():
        svc = _dict(svc)
        spath = join_path(ppath, key) if key else ppath
        if svc.get("type") == "path":
            _ignored_keys(_dict(svc.get("paths")), f"{spath}.paths", out)
        elif svc.get("type") == "wsgi" and isinstance(svc.get("module"), str):
            if svc.get("threads") is False:
                for key in ("minthreads", "maxthreads"):
                    if key in svc:
                        out.append(f"{spath}.{key}: ignored, \"threads\": false runs the app "
                                   "on the hub (no thread pool)")
