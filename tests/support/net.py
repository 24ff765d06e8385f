"""Loopback ports: a free one, whether one answers, waiting until one does (or stops)."""

from __future__ import annotations

import socket
import subprocess

from .timing import wait_for

__all__ = ["free_port", "port_closed", "port_open", "wait_port", "wait_port_closed"]

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick; free, not reserved)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = HOST) -> bool:
    """Whether something accepts connections on ``host``:``port`` (127.0.0.1 by default)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def port_closed(port: int) -> bool:
    return not port_open(port)


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 15.0,
              host: str = HOST) -> None:
    """Wait (``scaled(timeout)``) until ``host``:``port`` accepts; fails at once if ``proc``
    (the server that should listen there) exits first."""
    wait_for(lambda: port_open(port, host), timeout, f"something listening on {host}:{port}",
             interval=0.02, proc=proc)


def wait_port_closed(port: int, timeout: float = 10.0) -> None:
    wait_for(lambda: port_closed(port), timeout, f"{HOST}:{port} to stop accepting",
             interval=0.02)
