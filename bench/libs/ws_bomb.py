#!/usr/bin/env python3
"""Peak memory of a node sent a permessage-deflate bomb, geonode's framing vs wsproto's.

    python bench/libs/ws_bomb.py

One ``websocket-testee`` node per variant with ``max_message_size`` 1 MiB; one client
message of 50 MiB of zeros deflated (~50 KB on the wire). Both close with 1009; the question
is how much the node inflated first. geonode inflates with ``max_length`` (never more than the
limit + 1 byte); wsproto's extension inflates each received chunk whole (no ``max_length``),
so the adapter can only count the bytes after they exist. Prints the node's peak RSS
(``VmHWM``) before and after, and the close code.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import sys
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1] / "bench")]   # (speed.py imports bench/common.py)

from speed import _node  # noqa: E402


def hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bomb(port: int) -> int:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    assert b" 101 " in buf.split(b"\r\n")[0], buf
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = (comp.compress(b"\x00" * (50 << 20)) + comp.flush(zlib.Z_SYNC_FLUSH))[:-4]
    n = len(payload)
    # (the shortest length form: wsproto refuses a longer one with 1002, as RFC 6455 5.2 says)
    if n < 65536:
        head = bytes((0xC2, 0xFE)) + struct.pack("!H", n) + b"\x00\x00\x00\x00"
    else:
        head = bytes((0xC2, 0xFF)) + struct.pack("!Q", n) + b"\x00\x00\x00\x00"
    try:
        s.sendall(head + payload)
    except OSError:
        pass
    data = buf.split(b"\r\n\r\n", 1)[1]
    deadline = time.monotonic() + 30
    while len(data) < 4 and time.monotonic() < deadline:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    return struct.unpack("!H", data[2:4])[0] if len(data) >= 4 and data[0] & 0x0F == 8 else -1


def main() -> int:
    paths = {"/": {"type": "websocket-testee",
                   "options": {"max_message_size": 1 << 20, "compression": {"deflate": {}}}}}
    for name, variant in (("ours", None), ("wsproto", "wsproto")):
        server = _node(f"bomb-{name}", variant, paths)
        try:
            pid = server.proc.pid
            before = hwm_mb(pid)
            code = bomb(server.port)
            time.sleep(0.2)
            print(f"{name:8} close code {code}; node peak RSS {before:.1f} MB before, "
                  f"{hwm_mb(pid):.1f} MB after one 50 MiB deflate bomb "
                  f"(max_message_size 1 MiB)")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
