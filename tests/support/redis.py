"""A real ``redis-server`` on a free loopback port (Debian's ``redis-server`` package; `.ci/run`
installs it), and two-node cluster configs for the backplane tests and benchmarks.

``GEONODE_TEST_REDIS_SERVER=/path/to/valkey-server`` runs them against another server of the
same protocol (Valkey: docs/scaling.md says which version passed). ``RedisServer(tls=...)``
serves TLS only; a server built without TLS (``tls_available()`` false) skips those tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import allow_all, realm, role, web_node
from .net import free_port
from .timing import scaled, wait_for

if TYPE_CHECKING:
    from .certs import Pki

__all__ = ["REDIS_SERVER", "RedisServer", "cluster_config", "redis_available", "tls_available"]

REDIS_SERVER = (os.environ.get("GEONODE_TEST_REDIS_SERVER") or shutil.which("redis-server")
                or "/usr/bin/redis-server")


def redis_available() -> bool:
    return Path(REDIS_SERVER).exists()


@cache
def tls_available() -> bool:
    """Whether the server was built with TLS (Debian's links OpenSSL; ``make BUILD_TLS=no``
    or a TLS module build does not have it in the binary)."""
    try:
        return b"SSL_CTX_new" in Path(REDIS_SERVER).read_bytes()
    except OSError:
        return False


def _client_context(tls: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tls.ca))
    ctx.load_cert_chain(str(tls.client_cert), str(tls.client_key))
    return ctx


def _connect(port: int, tls: Pki | None, timeout: float) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls is None:
        return s
    return _client_context(tls).wrap_socket(s, server_hostname="127.0.0.1")


def _ping(port: int, password: str | None = None, tls: Pki | None = None) -> bool:
    try:
        with _connect(port, tls, 0.5) as s:
            if password:
                s.sendall(f"AUTH {password}\r\n".encode())
                s.recv(64)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:   # (ssl.SSLError is one)
        return False


class RedisServer:
    """``redis-server`` in ``folder`` on a free port, no persistence; ``stop``/``start`` again
    on the same port (an empty Redis after a restart). ``tls``: TLS only (no plain port),
    its certificate signed by ``tls.ca``, clients must show one signed by it too."""

    def __init__(self, folder: Path, password: str | None = None,
                 tls: Pki | None = None) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.tls = tls
        self.proc: subprocess.Popen | None = None
        self.log_path = folder / "redis.log"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        if self.tls:
            args[1:3] = ["--port", "0", "--tls-port", str(self.port),
                         "--tls-cert-file", str(self.tls.server_cert),
                         "--tls-key-file", str(self.tls.server_key),
                         "--tls-ca-cert-file", str(self.tls.ca)]
        if self.password:
            args += ["--requirepass", self.password]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: _ping(self.port, self.password, self.tls), 10,
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
        with _connect(self.port, self.tls, scaled(5)) as s:
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
