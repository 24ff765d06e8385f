"""Node configuration: read a Crossbar v2 ``node.json`` / ``.yaml``, validate, substitute env vars.

``load(path) -> Config`` raises ``ConfigError`` whose ``errors`` are short lines, each starting
with the JSON path of the offending key (``workers[0].transports[0].paths.api.module: ...``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from geonode.config.environ import substitute
from geonode.config.model import NodeModel, build_node, file_errors
from geonode.config.reader import ConfigError, duplicates, read

__all__ = ["Config", "ConfigError", "NodeModel", "check", "load", "print_errors", "read",
           "verify", "warnings"]


@dataclass
class Config:
    path: Path
    dir: Path
    #: the config as written (validated, ${VAR}-substituted); read ``model`` instead
    data: dict
    #: the typed model, every default filled in (geonode.config.model)
    model: NodeModel = field(default_factory=NodeModel)



# Looked for, in order, when the path given is a folder (Crossbar's ".crossbar" cbdir habit).
CONFIG_NAMES = ("node.json", "node.yaml", "config.json", "config.yaml", "config.yml")


def resolve_path(path: str | Path) -> Path:
    """The config file for ``path``: the file itself, or the first known name in a folder."""
    p = Path(path).resolve()
    if p.is_dir():
        for name in CONFIG_NAMES:
            if (p / name).is_file():
                return p / name
        raise ConfigError(f"{path}: a folder without a config file "
                          f"(looked for {', '.join(CONFIG_NAMES)})")
    return p


def load(path: str | Path) -> Config:
    """Read, substitute and validate a node config; raise ``ConfigError`` listing every problem."""
    p = resolve_path(path)
    raw = read(p)
    if not isinstance(raw, dict):
        raise ConfigError("(top level): the config must be an object (a JSON dict)")
    dups = duplicates(raw)
    data, errors = substitute(raw)
    errors = dups + errors
    # A key whose variable is missing still holds "$VAR": its schema complaint would be noise.
    unset = {e.split(": ", 1)[0] for e in errors}
    # jsonschema: only when a config is loaded
    from geonode.config.schema import schema_errors, version_errors
    from geonode.config.semantic import semantic_errors

    versioned = version_errors(data)
    found = versioned or schema_errors(data) + semantic_errors(data, p.parent)
    errors += [e for e in found if e.split(": ", 1)[0] not in unset]
    if versioned:
        raise ConfigError(errors)
    # The build-time checks: what start would refuse later. On a config with schema errors
    # too, so that one run names every problem, except under keys already named.
    built: list[str] = []
    try:
        model = build_node(data, built)
        built += file_errors(model, p.parent)
    except (TypeError, ValueError, AttributeError, KeyError):
        if not errors:
            raise  # a schema-valid config the model cannot read: a bug, not the config's
        built = []
    named = {e.split(": ", 1)[0] for e in errors}
    # An object whose ``type`` is wrong or missing was not checked as any kind: what the model
    # says of its insides (it reads a missing worker type as "router") is noise.
    named |= {n.removesuffix(".type") for n in named if n.endswith(".type")}
    errors += [e for e in built if not _under(e.split(": ", 1)[0], named)]
    if errors:
        raise ConfigError(errors)
    return Config(path=p, dir=p.parent, data=data, model=model)


def _under(path: str, named: set[str]) -> bool:
    """Whether ``path`` is one of ``named`` or inside one of them."""
    return any(path == n or path.startswith((n + ".", n + "[")) for n in named)


def print_errors(config: str | Path, errors: list[str]) -> None:
    """How ``geonode check`` and ``geonode start`` show a config's errors (on stderr)."""
    print(f"error: {config}: the node config has {len(errors)} problem(s):", file=sys.stderr)
    for line in errors:
        print(f"  {line}", file=sys.stderr)


def warnings(cfg: Config) -> list[str]:
    """Allowed but probably wrong (missing pythonpath folder, wsgi module not found, ...)."""
    from geonode.config.semantic import warnings as find

    return find(cfg.data, cfg.dir)


def verify(cfg: Config) -> list[str]:
    """After ``load``: resolve the config's references to code (WSGI modules and objects,
    component classes, static packages) as ``start`` does, on the python path and with the
    environment ``start`` gives them (both restored afterwards; the modules stay imported)."""
    import os

    from geonode.config.imports import apply_worker_options
    from geonode.config.imports import verify as resolve

    saved_path, saved_env = list(sys.path), dict(os.environ)
    try:
        apply_worker_options(cfg)
        return resolve(cfg)
    finally:
        sys.path[:] = saved_path
        os.environ.clear()
        os.environ.update(saved_env)


def check(path: str | Path) -> list[str]:
    """``[]`` when the config at ``path`` is good, else every error (path-named): what
    ``geonode check`` reports, and what ``geonode start`` would refuse."""
    try:
        cfg = load(path)
    except ConfigError as e:
        return e.errors
    return verify(cfg)
