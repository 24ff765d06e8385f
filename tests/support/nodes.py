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
import socket
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


def endpoints_of(config: dict, folder: Path) -> list[tuple[str, int] | Path]:
    """Where the config's enabled workers listen: (address to connect to, port) for a TCP
    endpoint, the socket's path for a Unix one (relative to the config's folder)."""
    out: list[tuple[str, int] | Path] = []
    for worker in config.get("workers", []):
        if (worker.get("options") or {}).get("disabled"):
            continue
        for transport in worker.get("transports", []):
            ep = transport.get("endpoint") or {}
            kind = ep.get("type", "tcp")
            if kind == "unix" and isinstance(ep.get("path"), str):
                out.append(folder / ep["path"])
            elif kind == "tcp" and isinstance(ep.get("port"), int):
                interface = ep.get("interface") or ("::" if ep.get("version") == 6 else "")
                host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(
                    interface, interface)
                out.append((host, ep["port"]))
    return out


def _unix_open(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(0.5)
            s.connect(str(path))
            return True
    except OSError:
        return False


@dataclass
class Node:
    """A server process: its folder, log and ports (``endpoints``: every TCP address it is
    to listen on, when known: what ``wait_ports`` waits for)."""

    proc: subprocess.Popen
    port: int
    dir: Path
    log_path: Path
    ports: list[int] = field(default_factory=list)
    endpoints: list[tuple[str, int] | Path] = field(default_factory=list)

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
        """Wait until every endpoint (else every port on 127.0.0.1) accepts. A node opens all
        its endpoints before it serves any, but the first may accept (into its backlog) while
        the node is still opening the others: so all of them, not the first."""
        for where in self.endpoints or [("127.0.0.1", p) for p in self.ports]:
            if isinstance(where, Path):
                wait_for(lambda w=where: _unix_open(w), timeout,
                         f"something listening on {where}", interval=0.02, proc=self.proc)
            else:
                wait_port(where[1], self.proc, timeout, where[0])

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
    start ``python -m geonode ARGS <config>`` there; with ``wait``, until every TCP endpoint
    of the config answers."""
    folder.mkdir(parents=True, exist_ok=True)
    write_files(folder, files)
    ports = [free_port() for _ in range(nports)]
    mapping: dict[str, object] = {"$PORT": ports[0]}
    for i, p in enumerate(ports[1:], start=2):
        mapping[f"$PORT{i}"] = p
    cfg_path = folder / config_name
    final = substitute(config, mapping)
    cfg_path.write_text(json.dumps(final, indent=2))
    log_path = folder / "node.log"
    proc = start_process(geonode_cmd(*args, str(cfg_path)), folder, log_path, env)
    node = Node(proc=proc, port=ports[0], dir=folder, log_path=log_path, ports=ports,
                endpoints=endpoints_of(final, cfg_path.parent))
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
