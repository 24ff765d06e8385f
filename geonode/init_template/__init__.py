"""``geonode init [DIR]``: write a starter node (config, a Flask app, a template, static files).

The files live in ``files/`` next to this module, copied verbatim; nothing is overwritten.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


class InitError(Exception):
    """The starter cannot be written (a file is in the way, the folder is not writable)."""


def _templates() -> dict[str, bytes]:
    root = resources.files(__package__) / "files"
    out: dict[str, bytes] = {}

    def walk(node, rel: str) -> None:
        for child in node.iterdir():
            name = f"{rel}{child.name}"
            if child.is_dir():
                if child.name != "__pycache__":
                    walk(child, name + "/")
            elif not child.name.endswith(".pyc"):
                out[name] = child.read_bytes()

    walk(root, "")
    return out


def write_starter(target: Path) -> list[Path]:
    """Write the starter files into ``target``; return the paths written."""
    files = _templates()
    if (target / "node.json").exists():
        raise InitError(f"{target / 'node.json'} already exists; not overwriting it "
                        "(pick another folder: geonode init DIR)")
    clashes = [target / rel for rel in files if (target / rel).exists()]
    if clashes:
        raise InitError("these files already exist, not overwriting them: "
                        + ", ".join(str(c) for c in clashes))
    written: list[Path] = []
    try:
        for rel, content in sorted(files.items()):
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(content)
            written.append(dest)
    except OSError as e:
        raise InitError(f"cannot write the starter node into {target}: {e}") from None
    return written
