"""A real ``redis-server`` on a free loopback port (Debian's ``redis-server`` package; `.ci/run`
installs it), and two-node cluster configs for the backplane tests and benchmarks."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from .config import allow_all, realm, role, web_node
from .net import free_port
from .timing import scaled, wait_for

__all__ = ["RedisServer", "cluster_config", "redis_available"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def redis_available() -> bool:
    return Path(REDIS_SERVER).exists()


def _ping(port: int, password: str | None = None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            if password:
                s.sendall(f"AUTH {password}\r\n".encode())
                s.recv(64)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``redis-server`` in ``folder`` on a free port, no persistence; ``stop``/``start`` again
    on the same port (an empty Redis after a restart)."""

    def __init__(self, folder: Path, password: str | None = None) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen | None = None
        self.log_path = folder / "redis.log"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        if self.password:
            args += ["--requirepass", self.password]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: _ping(self.port, self.password), 10,
                 f"redis-server on {self.port}", interval=0.02, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(scaled(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def command(self, *args: str) -> bytes:
        """One command over a raw socket (the answer's first KiB)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=scaled(5)) as s:
            if self.password:
                s.sendall(f"AUTH {self.password}\r\n".encode())
                s.recv(64)
            parts = [f"${len(a.encode())}\r\n{a}\r\n" for a in args]
            s.sendall(f"*{len(args)}\r\n{''.join(parts)}".encode())
            return s.recv(1024)


def cluster_config(url: str, realms: list | None = None, **backplane: Any) -> dict:
    """One node of a cluster: a WebSocket path ``ws`` on ``$PORT``, realm1 where anonymous may
    do everything (callers and publishers disclosed), the backplane at ``url``."""
    perm = allow_all(disclose={"caller": True, "publisher": True}, cache=True)
    opts = {"type": "redis", "url": url, "heartbeat": 0.25, "timeout": 2.0, **backplane}
    return web_node({"ws": {"type": "websocket"}},
                    realms if realms is not None else [realm(roles=[role(permissions=[perm])])],
                    worker_options={"backplane": opts})
