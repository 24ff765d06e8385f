"""The node directory's pid file, as Crossbar keeps it: ``<cbdir>/node.pid``, JSON with ``pid``.

``geonode start`` refuses to start a second node from the same directory, ``geonode stop``
signals the one that runs, ``geonode status`` says whether one does. A file naming a process
that no longer exists (or one that is not geonode: pids are reused after a crash) is stale and
removed, as Crossbar does. With ``--processes`` the file names the supervising parent.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

__all__ = ["FILENAME", "read_running", "remove", "write"]

FILENAME = "node.pid"


def _cmdline(pid: int | str) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").rstrip("\0").split("\0") if raw else []


def _is_our_node(pid: int, data: dict) -> bool:
    """Whether ``pid`` is still the process that wrote ``data``: the same command line (a pid
    reused by another node, as happens after a crash, is not it), else at least a geonode."""
    cmdline = _cmdline(pid)
    if cmdline is None:
        return not Path("/proc").is_dir()  # no /proc (not Linux): trust the pid
    if data.get("cmdline") is not None:
        return cmdline == data["cmdline"]
    return any("geonode" in part for part in cmdline[:4])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def read_running(cbdir: Path) -> dict | None:
    """The pid file's data when a geonode node runs from ``cbdir``; else None (a stale or
    corrupt file is removed)."""
    path = Path(cbdir) / FILENAME
    try:
        data = json.loads(path.read_text())
        pid = int(data["pid"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        _unlink(path)
        return None
    if pid != os.getpid() and _alive(pid) and _is_our_node(pid, data):
        return data
    _unlink(path)
    return None


def write(cbdir: Path, argv: list[str], config: Path,
          shutdown_timeout: float | None) -> Path:
    """Write this process's pid file (OSError when the directory is not writable). ``config``
    and ``shutdown_timeout`` (``--shutdown-timeout``, if given) tell ``geonode stop`` how long
    the node's stop may take."""
    path = Path(cbdir) / FILENAME
    data = {"pid": os.getpid(), "argv": [sys.executable, "-m", "geonode", *argv],
            "cbdir": str(Path(cbdir).resolve()), "cmdline": _cmdline("self"),
            "config": str(Path(config).resolve()), "shutdown_timeout": shutdown_timeout}
    tmp = path.with_name(f".{FILENAME}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=4) + "\n")
    os.replace(tmp, path)  # a reader never sees half a file
    return path


def remove(cbdir: Path) -> None:
    """Remove the pid file if it is still this process's."""
    path = Path(cbdir) / FILENAME
    try:
        if int(json.loads(path.read_text())["pid"]) == os.getpid():
            path.unlink()
    except (OSError, ValueError, KeyError, TypeError):
        pass


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
