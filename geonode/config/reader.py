"""Parse a config file (JSON, or YAML for .yaml/.yml), remembering keys given twice.

Both parsers silently keep the last of two equal keys; in a node config that is almost always a
pasted block (two ``"ws"`` paths, two ``"options"``), so geonode reports it like any other error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from geonode.config.environ import join_path


class ConfigError(Exception):
    """A config that geonode cannot run; ``errors`` lists every problem found."""

    def __init__(self, errors: list[str] | str):
        if isinstance(errors, str):
            errors = [errors]
        self.errors: list[str] = list(errors)
        super().__init__("\n".join(self.errors))


class _Obj(dict):
    """A parsed object that knows which of its keys appeared more than once."""

    dups: tuple[str, ...] = ()


def _pairs(pairs: list[tuple[str, Any]]) -> _Obj:
    obj = _Obj(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dups = []
        for k, _ in pairs:
            if k in seen:
                dups.append(k)
            seen.add(k)
        obj.dups = tuple(dups)
    return obj


def _yaml_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        loader.flatten_mapping(node)
        pairs = [(loader.construct_object(k, deep=deep), loader.construct_object(v, deep=deep))
                 for k, v in node.value]
        return _pairs(pairs)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return Loader


def read(path: str | Path) -> Any:
    """Parse the file without validating it; duplicate keys are found by ``duplicates``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config file: {e}") from None
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a SafeLoader subclass)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise ConfigError(f"{p}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    try:
        return json.loads(text, object_pairs_hook=_pairs)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: not valid JSON (line {e.lineno}, column {e.colno}): "
                          f"{e.msg}") from None


def duplicates(data: Any, path: str = "") -> list[str]:
    """``path.key: 'key' is given more than once`` for every repeated key, in document order."""
    out: list[str] = []
    if isinstance(data, _Obj):
        for key in data.dups:
            out.append(f"{join_path(path, key)}: {key!r} is given more than once "
                       "(only the last one would count)")
    if isinstance(data, dict):
        for k, v in data.items():
            out += duplicates(v, join_path(path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += duplicates(v, join_path(path, i))
    return out
