"""Real servers in subprocesses: ``python -m geonode`` nodes and gunicorn masters.

``launch`` writes a config (``"$PORT"``, ``"$PORT2"``… replaced by free loopback ports) and any
extra files into a folder, starts the node there with its output in ``node.log`` and waits
until every port answers. ``Node.stop`` sends SIGTERM, then SIGKILL if it does not exit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .config import substitute
from .net import free_port, wait_port
from .timing import scaled, wait_for

__all__ = ["ROOT", "SAMPLES", "Node", "geonode_cmd", "gunicorn_cmd", "launch",
           "launch_gunicorn", "start_process", "write_files"]

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


def geonode_cmd(*args: str) -> list[str]:
    """``python -m geonode ARGS`` with this interpreter (and its PYTHONPATH)."""
    return [sys.executable, "-m", "geonode", *args]


def gunicorn_cmd(app: str, port: int, worker: str = "geonode.gunicorn.GeventWorker",
                 workers: int = 1, extra: tuple[str, ...] = ()) -> list[str]:
    """gunicorn serving ``app`` on 127.0.0.1:``port`` (no control socket: parallel masters
    would fight over ~/.gunicorn's)."""
    return [sys.executable, "-m", "gunicorn", "-k", worker, "-w", str(workers),
            "-b", f"127.0.0.1:{port}", *_no_control_socket(), *extra, app]


def _no_control_socket() -> list[str]:
    # gunicorn >= 24 opens a control socket by default; older ones do not know the flag.
    from gunicorn.config import KNOWN_SETTINGS

    flags = {flag for s in KNOWN_SETTINGS for flag in (getattr(s, "cli", None) or ())}
    return ["--no-control-socket"] if "--no-control-socket" in flags else []


def write_files(folder: Path, files: dict[str, str] | None) -> None:
    """``files`` (relative path -> text) written under ``folder``."""
    for rel, text in (files or {}).items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def start_process(cmd: list[str], cwd: Path, log_path: Path, env: dict | None = None,
                  new_session: bool = False) -> subprocess.Popen:
    """``cmd`` in ``cwd``, stdout and stderr to ``log_path``, unbuffered; ``new_session`` puts
    it in its own process group (so a whole tree can be signalled)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1")
    full_env.update(env or {})
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                env=full_env, start_new_session=new_session)


@dataclass
class Node:
    """A server process: its folder, log and ports."""

    proc: subprocess.Popen
    port: int
    dir: Path
    log_path: Path
    ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str | re.Pattern, timeout: float = 10.0) -> str:
        """Wait until the log has ``text`` (or a match of the pattern); returns the log."""
        def seen() -> str | None:
            log = self.log()
            found = text.search(log) if isinstance(text, re.Pattern) else text in log
            return log if found else None

        what = text.pattern if isinstance(text, re.Pattern) else text
        try:
            return wait_for(seen, timeout, f"{what!r} in {self.log_path}", interval=0.02)
        except AssertionError as e:
            raise AssertionError(f"{e}; the log:\n{self.log()}") from None

    def wait_ports(self, timeout: float = 15.0) -> None:
        for p in self.ports:
            wait_port(p, self.proc, timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the process and wait for it (``scaled(timeout)``, then SIGKILL)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(scaled(timeout))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def launch(config: dict, folder: Path, files: dict[str, str] | None = None,
           args: tuple[str, ...] = (), nports: int = 1, env: dict | None = None,
           wait: bool = True, config_name: str = "node.json") -> Node:
    """Write ``config`` (``$PORT``, ``$PORT2``… replaced) and ``files`` into ``folder`` and
    start ``python -m geonode ARGS <config>`` there; with ``wait``, until every port answers."""
    folder.mkdir(parents=True, exist_ok=True)
    write_files(folder, files)
    ports = [free_port() for _ in range(nports)]
    mapping: dict[str, object] = {"$PORT": ports[0]}
    for i, p in enumerate(ports[1:], start=2):
        mapping[f"$PORT{i}"] = p
    cfg_path = folder / config_name
    cfg_path.write_text(json.dumps(substitute(config, mapping), indent=2))
    log_path = folder / "node.log"
    proc = start_process(geonode_cmd(*args, str(cfg_path)), folder, log_path, env)
    node = Node(proc=proc, port=ports[0], dir=folder, log_path=log_path, ports=ports)
    if wait:
        _wait_started(node)
    return node


def launch_gunicorn(folder: Path, app: str, worker: str = "geonode.gunicorn.GeventWorker",
                    workers: int = 1, extra: tuple[str, ...] = (),
                    log_name: str = "gunicorn.log", wait: bool = True) -> Node:
    """A gunicorn master serving ``app`` (``geonode:load('node.json')``, ``module:app``) from
    ``folder`` on a free port."""
    port = free_port()
    log_path = folder / log_name
    proc = start_process(gunicorn_cmd(app, port, worker, workers, extra), folder, log_path)
    node = Node(proc=proc, port=port, dir=folder, log_path=log_path, ports=[port])
    if wait:
        _wait_started(node, timeout=20.0)
    return node


def _wait_started(node: Node, timeout: float = 15.0) -> None:
    try:
        node.wait_ports(timeout)
    except Exception:
        node.stop(signal.SIGKILL)
        what = " ".join(map(str, node.proc.args[2:]))
        raise RuntimeError(f"`{what}` did not start:\n{node.log()}") from None
