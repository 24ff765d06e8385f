"""Guest workers (``"type": "guest"``): any program, supervised by the node.

Crossbar's keys: ``executable`` (R; looked up in ``workdir`` first, then on PATH),
``arguments``, ``options.env``, ``options.workdir`` (relative to the config's folder; default
that folder), ``options.stdin`` (``"close"``, or ``{"type": "json", "value": ..., "close":
true}``: the value written as JSON), ``options.stdout`` / ``options.stderr`` (``log``: each
line into the node's log as ``worker.<id>``; ``drop`` / ``close``: discarded), and
``options.watch`` (``{"directories": [...], "action": "restart", "timeout": 1}``: restart
the guest when a file under those folders changes). geonode adds ``options.restart``
(``restart-always``, ``restart-on-failed``, ``restart-never``; default never, as Crossbar).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import gevent

from geonode.workers.environment import process_env
from geonode.workers.process import RESTART_NEVER, Launch, LaunchError, Spec, Supervised

log = logging.getLogger("geonode.workers")

#: Seconds between two looks at watched folders (a stat walk; bounded by WATCH_MAX_FILES).
WATCH_INTERVAL = 1.0
WATCH_MAX_FILES = 10000


def resolve_executable(executable: str, workdir: Path, json_path: str) -> str:
    """The executable's full path, as Crossbar finds it, or LaunchError with the message
    ``geonode check`` shows for the same config."""
    candidate = (workdir / executable).resolve()
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(executable)
    if found is not None:
        return found
    raise LaunchError(f"{json_path}.executable: {executable!r} not found or not executable "
                      f"(looked for {candidate} and on PATH)")


def workdir_of(worker: dict, config_dir: Path) -> Path:
    return (config_dir / ((worker.get("options") or {}).get("workdir") or ".")).resolve()


def stdin_bytes(options: dict) -> tuple[bytes | None, bool]:
    """(data to write, close stdin afterwards)."""
    stdin = options.get("stdin", "close")
    if isinstance(stdin, dict):
        return json.dumps(stdin.get("value")).encode(), bool(stdin.get("close", True))
    return None, True


def spec(worker: dict, json_path: str, name: str, config_dir: Path,
         on_final_exit=None) -> Spec:
    options = worker.get("options") or {}
    workdir = workdir_of(worker, config_dir)

    def prepare() -> Launch:
        exe = resolve_executable(worker["executable"], workdir, json_path)
        data, close = stdin_bytes(options)
        return Launch(argv=[exe, *map(str, worker.get("arguments") or [])],
                      env=process_env(options), cwd=str(workdir), stdin=data, close_stdin=close)

    return Spec(name=name, kind="guest", prepare=prepare,
                restart=options.get("restart", RESTART_NEVER),
                stdout=options.get("stdout", "log"), stderr=options.get("stderr", "log"),
                on_final_exit=on_final_exit)


class Watch:
    """Restarts a guest when a file under its watched folders changes (Crossbar's
    ``options.watch`` with ``"action": "restart"``), by comparing stat snapshots."""

    def __init__(self, worker: Supervised, watch: dict, config_dir: Path) -> None:
        self.worker = worker
        self.dirs = [(config_dir / d).resolve() for d in watch.get("directories") or []]
        self.action = watch.get("action")
        self.delay = float(watch.get("timeout", 1))
        self._g: gevent.Greenlet | None = None

    def _snapshot(self) -> dict[str, float]:
        seen: dict[str, float] = {}
        for d in self.dirs:
            for root, dirnames, files in os.walk(d):
                dirnames[:] = [n for n in dirnames if not n.startswith(".")
                               and n not in ("node_modules", "__pycache__")]
                for f in files:
                    p = os.path.join(root, f)
                    try:
                        seen[p] = os.stat(p).st_mtime
                    except OSError:
                        continue
                    if len(seen) >= WATCH_MAX_FILES:
                        return seen
        return seen

    def start(self) -> None:
        self._g = gevent.spawn(self._loop)

    def _loop(self) -> None:
        before = self._snapshot()
        while True:
            gevent.sleep(WATCH_INTERVAL)
            now = self._snapshot()
            if now == before:
                continue
            changed = sorted(set(now.items()) ^ set(before.items()))
            before = now
            what = changed[0][0] if changed else "?"
            if self.action != "restart":
                log.info("guest worker %r: %s changed, no action taken (watch.action is not "
                         "'restart')", self.worker.spec.name, what)
                continue
            log.info("guest worker %r: %s changed: restarting in %.1f s", self.worker.spec.name,
                     what, self.delay)
            gevent.sleep(self.delay)
            before = self._snapshot()
            # SIGTERM; the supervision loop starts it again (a watch restarts whatever the
            # restart option says: that is what the user asked for by changing a file)
            self.worker.restart_now()

    def stop(self) -> None:
        if self._g is not None:
            self._g.kill(block=False)
