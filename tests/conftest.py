"""Shared fixtures: real geonode nodes in subprocesses, on free loopback ports.

A test describes a node as a config dict (Crossbar v2 format) with the placeholder
``"$PORT"`` wherever the listening port goes; ``start_node`` writes it to a temporary folder
(next to any extra files the test gives), starts ``python -m geonode`` on it and waits until
the port answers. The node is stopped (SIGTERM, then SIGKILL) when the test or module ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"node exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _substitute(obj, mapping: dict[str, object]):
    if isinstance(obj, str):
        if obj in mapping:
            return mapping[obj]
        return obj
    if isinstance(obj, list):
        return [_substitute(x, mapping) for x in obj]
    if isinstance(obj, dict):
        return {k: _substitute(v, mapping) for k, v in obj.items()}
    return obj


@dataclass
class Node:
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

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def geonode_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "geonode", *args]


def launch(config: dict, tmp: Path, files: dict[str, str] | None = None,
           args: tuple[str, ...] = (), nports: int = 1, env: dict | None = None,
           wait: bool = True) -> Node:
    """Write ``config`` (with ``$PORT``, ``$PORT2``… replaced) into ``tmp`` and start a node."""
    tmp.mkdir(parents=True, exist_ok=True)
    for rel, text in (files or {}).items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    ports = [free_port() for _ in range(nports)]
    mapping: dict[str, object] = {"$PORT": ports[0]}
    for i, p in enumerate(ports[1:], start=2):
        mapping[f"$PORT{i}"] = p
    cfg_path = tmp / "node.json"
    cfg_path.write_text(json.dumps(_substitute(config, mapping), indent=2))
    log_path = tmp / "node.log"
    full_env = dict(os.environ, PYTHONUNBUFFERED="1")
    full_env.update(env or {})
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(geonode_cmd(*args, str(cfg_path)), stdout=log,
                                stderr=subprocess.STDOUT, cwd=tmp, env=full_env)
    node = Node(proc=proc, port=ports[0], dir=tmp, log_path=log_path, ports=ports)
    if wait:
        try:
            for p in ports:
                wait_port(p, proc)
        except Exception:
            node.stop(signal.SIGKILL)
            raise RuntimeError(f"node did not start:\n{node.log()}") from None
    return node


@pytest.fixture
def start_node(tmp_path):
    """Start nodes for one test: ``node = start_node(config, files={...})``."""
    nodes: list[Node] = []

    def _start(config: dict, files: dict[str, str] | None = None, **kw) -> Node:
        node = launch(config, tmp_path / f"node{len(nodes)}", files, **kw)
        nodes.append(node)
        return node

    yield _start
    for n in nodes:
        n.stop()


@pytest.fixture(scope="module")
def start_module_node(tmp_path_factory):
    """Like ``start_node`` but the nodes live for the whole test module (cheaper)."""
    nodes: list[Node] = []

    def _start(config: dict, files: dict[str, str] | None = None, **kw) -> Node:
        node = launch(config, tmp_path_factory.mktemp("node"), files, **kw)
        nodes.append(node)
        return node

    yield _start
    for n in nodes:
        n.stop()


def web_node(paths: dict, realms: list | None = None, options: dict | None = None,
             worker_options: dict | None = None, components: list | None = None) -> dict:
    """A one-worker, one-web-transport node config on ``$PORT``."""
    transport: dict = {"type": "web", "endpoint": {"type": "tcp", "port": "$PORT",
                                                   "interface": "127.0.0.1"},
                       "paths": paths}
    if options:
        transport["options"] = options
    worker: dict = {"type": "router", "realms": realms or [], "transports": [transport]}
    if worker_options:
        worker["options"] = worker_options
    if components:
        worker["components"] = components
    return {"version": 2, "controller": {}, "workers": [worker]}
