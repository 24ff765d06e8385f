"""The private channel between the node's router and its components' child process.

No port, no file, no credential: the child inherits one end of a socketpair (its number is in
the spec on stdin). To connect component ``i`` it writes ``open i``; the node makes a fresh
socketpair, serves WAMP-over-RawSocket on one end (attached to the router with component
``i``'s configured realm, authid and role: the child cannot choose them) and hands the other
end over with SCM_RIGHTS. Nothing else on the machine can reach either socket.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import gevent

from geonode.config.model import DEFAULT_MAX_MESSAGE_SIZE
from geonode.transport import serializers as ser
from geonode.transport.rawsocket import (
    ERR_SERIALIZER,
    MAGIC,
    MAX_PAYLOAD,
    RawSocketPeer,
    length_exponent,
)

log = logging.getLogger("geonode.workers")

#: Longest request line on the control socket ("open <index>\n").
MAX_REQUEST = 64


class _Trusted:
    """The router as RawSocketPeer.run sees it: every attach is the configured component's
    (authenticated by the channel itself, like geonode's in-process sessions)."""

    def __init__(self, router: Any, auth: dict) -> None:
        self.router, self.auth = router, auth

    def attach(self, peer: Any, auth_config: dict | None = None) -> Any:
        return self.router.attach(peer, auth=self.auth)


def _serve_one(sock: socket.socket, router: Any, auth: dict, name: str) -> None:
    """The server half of RawSocket on ``sock`` (already connected), then the session."""
    hello = b""
    with gevent.Timeout(10, False):
        while len(hello) < 4:
            chunk = sock.recv(4 - len(hello))
            if not chunk:
                break
            hello += chunk
    if len(hello) < 4 or hello[0] != MAGIC:
        sock.close()
        return
    ser_id, their_exp = hello[1] & 0x0F, hello[1] >> 4
    chosen = {s.rawsocket_id: s for s in (ser.get("json"), ser.get("msgpack"))}.get(ser_id)
    if chosen is None:
        sock.sendall(bytes((MAGIC, ERR_SERIALIZER << 4, 0, 0)))
        sock.close()
        return
    own_exp = length_exponent(DEFAULT_MAX_MESSAGE_SIZE)
    sock.sendall(bytes((MAGIC, (own_exp << 4) | ser_id, 0, 0)))
    details = {"type": "rawsocket", "channel_type": "socketpair", "channel_framing": "rawsocket",
               "channel_serializer": chosen.name, "peer": f"process:{name}", "is_server": True,
               "channel_id": {}}
    peer = RawSocketPeer(sock, chosen, details, max_receive=min(DEFAULT_MAX_MESSAGE_SIZE,
                                                                MAX_PAYLOAD),
                         max_send=min(2 ** (9 + their_exp), MAX_PAYLOAD))
    peer.run(_Trusted(router, auth))


class Channel:
    """The node's end of one child's control socket."""

    def __init__(self, router: Any, auths: list[dict], name: str) -> None:
        self.router = router
        self.auths = auths            # per component index: {"authid", "authrole", "realm"}
        self.name = name
        self.node_end, self.child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.child_end.set_inheritable(True)
        self._g = gevent.spawn(self._serve)

    def child_fd(self) -> int:
        return self.child_end.fileno()

    def spawned(self) -> None:
        self.child_end.close()  # the child has its copy: EOF here once the child is gone

    def _serve(self) -> None:
        f = self.node_end.makefile("rb")
        try:
            while True:
                line = f.readline(MAX_REQUEST)
                if not line:
                    return
                word, _, arg = line.decode("ascii", "replace").strip().partition(" ")
                if word != "open" or not arg.isdigit() or int(arg) >= len(self.auths):
                    log.warning("%s: bad request on the component channel: %r", self.name, line)
                    self.node_end.sendall(b"bad request")
                    continue
                mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                gevent.spawn(_serve_one, mine, self.router, self.auths[int(arg)], self.name)
                try:
                    socket.send_fds(self.node_end, [b"k"], [theirs.fileno()])
                finally:
                    theirs.close()
        except OSError:
            return
        finally:
            f.close()

    def close(self) -> None:
        self._g.kill(block=False)
        for s in (self.node_end, self.child_end):
            try:
                s.close()
            except OSError:
                pass
