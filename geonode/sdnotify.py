"""systemd's readiness protocol (``Type=notify``), without libsystemd.

systemd passes ``$NOTIFY_SOCKET``, a Unix datagram socket (a path, or ``@name`` in the abstract
namespace); the service sends ``READY=1`` once it serves and ``STOPPING=1`` when a stop begins
(sd_notify(3)). Without ``$NOTIFY_SOCKET`` every call here does nothing, so the node calls it
unconditionally. The ``--processes`` supervisor gives its children its own socket and tells
systemd READY=1 once every child has said so (``geonode.supervisor``).
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["ENV", "SUPERVISOR_ENV", "notify"]

ENV = "NOTIFY_SOCKET"
#: set by the --processes supervisor in each child ("<parent pid>:<index>"): here, because
#: ``geonode start`` reads it before gevent patches anything, so nothing of weight may be
#: imported for it (this module is stdlib only)
SUPERVISOR_ENV = "GEONODE_SUPERVISOR"

log = logging.getLogger("geonode.node")


def _address(raw: str) -> str | bytes:
    # "@name" is the abstract namespace: a leading NUL byte on the wire.
    return b"\0" + raw[1:].encode() if raw.startswith("@") else raw


def notify(state: str, environ: dict | None = None) -> bool:
    """Send ``state`` (``"READY=1"``, ``"STOPPING=1"``, ``"STATUS=..."``, newline separated)
    to ``$NOTIFY_SOCKET``; False when there is none or it cannot be reached (logged once per
    call at debug: a missing service manager is not the node's problem)."""
    raw = (environ if environ is not None else os.environ).get(ENV)
    if not raw:
        return False
    # A plain (not gevent) socket: a datagram send to a local socket never blocks for long,
    # and the supervisor calls this without gevent.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(_address(raw))
        sock.sendall(state.encode())
        return True
    except OSError as e:
        log.debug("sd_notify %r to %s failed: %s", state, raw, e)
        return False
    finally:
        sock.close()
