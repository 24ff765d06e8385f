"""SocketReader: the reads a WebSocket needs, with no buffer held while the connection idles.

pywsgi's ``rfile`` is a BufferedReader with an 8 KiB buffer allocated for the connection's
life; a router holds thousands of idle WebSockets, and that buffer (with the request's other
state) was a third of each one's memory. Here the buffer is whatever the last ``recv``
returned, sized to what arrived, and dropped as soon as it is consumed: an idle connection
holds none. A busy one still reads up to ``CHUNK`` bytes per ``recv`` and parses many frames
out of each, so small messages cost no extra system calls. A read that had to wait goes
through ``geonode.handoff.admit`` before its data is used, so a burst of connections waking
at once is spread over passes of the hub's loop.
"""

from __future__ import annotations

from typing import Any

from gevent import get_hub

from geonode.handoff import admit

__all__ = ["CHUNK", "SocketReader", "take_buffered"]

CHUNK = 65536


class SocketReader:
    """``read``/``read1``/``readinto`` over a socket, as BufferedReader offers them."""

    __slots__ = ("sock", "_buf", "_pos")

    def __init__(self, sock: Any, pending: bytes = b"") -> None:
        self.sock = sock
        self._buf = pending
        self._pos = 0

    def read1(self, n: int) -> bytes:
        """Up to ``n`` bytes, with at most one ``recv``; b"" at the end of the stream."""
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            if n <= 0:
                return b""
            loop = get_hub().loop
            it = loop.iteration
            buf = self.sock.recv(CHUNK)
            if loop.iteration != it:
                # It had to wait: it woke with a burst, perhaps (a thousand sessions' HELLOs).
                admit()
            if not buf:
                self._buf, self._pos = b"", 0
                return b""
            pos = 0
        end = pos + n
        if end >= len(buf):
            self._buf, self._pos = b"", 0      # consumed: the buffer goes
            return buf if pos == 0 else buf[pos:]
        self._buf, self._pos = buf, end
        return buf[pos:end]

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, fewer only at the end of the stream."""
        first = self.read1(n)
        if len(first) == n or not first:
            return first
        parts = [first]
        got = len(first)
        while got < n:
            chunk = self.read1(n - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def readinto(self, target: Any) -> int:
        """Fill ``target``; fewer bytes only at the end of the stream. Large payloads are
        received straight into it (one copy, no intermediate chunks)."""
        view = memoryview(target).cast("B")
        n = len(view)
        got = 0
        left = len(self._buf) - self._pos
        if left > 0:
            take = min(left, n)
            view[:take] = self.read1(take)
            got = take
        while got < n:
            k = self.sock.recv_into(view[got:])
            if not k:
                break
            got += k
        return got


def take_buffered(rfile: Any, sock: Any) -> bytes:
    """What ``rfile`` (a BufferedReader over ``sock``) has read ahead, consumed from it.

    A client may send its first frames right behind the upgrade request; they sit in the
    request's buffer. ``peek`` returns them without blocking once the socket is non-blocking
    (with an empty buffer it tries one read, which then returns what the kernel holds or
    nothing)."""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        pending = rfile.peek(1)
    except OSError:
        pending = b""
    finally:
        sock.settimeout(timeout)
    return rfile.read(len(pending)) if pending else b""
