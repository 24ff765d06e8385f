"""The files the ``wap``, ``archive`` and ``upload`` path services need, checked as their
builders (geonode.web.services) check them at start: both call these, so ``geonode check``
says what start would."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from urllib.parse import urlparse

from geonode.config.reader import ConfigError


def templates_dir(cfg: dict, config_dir: Path, json_path: str) -> Path:
    """The templates folder of a ``wap`` config, or ConfigError naming the key."""
    spec = cfg["templates"]
    if isinstance(spec, str):
        folder = Path(config_dir, spec)
        if not folder.is_dir():
            raise ConfigError(f"{json_path}.templates: folder {spec!r} not found "
                              f"(looked for {folder.resolve()})")
        return folder
    package, resource = spec["package"], spec["resource"]
    try:
        folder = Path(str(importlib.resources.files(package).joinpath(resource)))
    except (ImportError, TypeError) as e:
        raise ConfigError(f"{json_path}.templates.package: cannot import {package!r}: {e}") \
            from None
    if not folder.is_dir():
        raise ConfigError(f"{json_path}.templates.resource: {resource!r} is not a folder in "
                          f"package {package!r}")
    return folder


def template_errors(cfg: dict, config_dir: Path, json_path: str) -> list[str]:
    """Problems ``check`` finds as start does: the folder, and each route's template in it."""
    try:
        folder = templates_dir(cfg, config_dir, json_path)
    except ConfigError as e:
        return e.errors
    errors = []
    for i, route in enumerate(cfg.get("routes") or []):
        name = route.get("render") if isinstance(route, dict) else None
        if isinstance(name, str) and not (folder / name).is_file():
            errors.append(f"{json_path}.routes[{i}].render: template {name!r} not found in "
                          f"{str(folder)!r}")
    return errors


def archive_problem(cfg: dict, config_dir: Path, json_path: str) -> str | None:
    """What keeps the archive from being served (the check's and start's message), or None."""
    path = Path(config_dir, cfg["archive"])
    if path.exists():
        return None if path.is_file() else \
            f"{json_path}.archive: {str(path)!r} exists but is not a file"
    origin = cfg.get("origin")
    if origin is None:
        return f"{json_path}.archive: file {cfg['archive']!r} not found (looked for {path}) " \
               "and no 'origin' to download it from"
    if urlparse(origin).scheme not in ("http", "https"):
        return f"{json_path}.origin: {origin!r} is not an http(s) URL"
    if not cfg.get("download", False):
        return f"{json_path}.archive: file {cfg['archive']!r} not found (looked for {path}); " \
               "set 'download': true to fetch it from 'origin'"
    return None


def folder_errors(cfg: dict, config_dir: Path, json_path: str) -> list[str]:
    """``directory`` must exist; ``temp_directory`` is made when missing (it is scratch)."""
    directory = cfg.get("directory")
    if isinstance(directory, str) and not Path(config_dir, directory).is_dir():
        return [f"{json_path}.directory: folder {directory!r} not found "
                f"(looked for {Path(config_dir, directory).resolve()})"]
    return []
