"""The Crossbar v2 node config schema (placeholder: version check only, full schema follows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def validate(data: Any, config_dir: Path) -> list[str]:
    errors: list[str] = []
    version = data.get("version")
    if version != 2:
        if version == 1 or version is None:
            errors.append("version: version 1 configs are not supported; geonode reads version 2")
        else:
            errors.append(f"version: must be 2, got {version!r}")
    return errors
