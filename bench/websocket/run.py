#!/usr/bin/env python3
"""WebSocket layer benchmark: unmasking speed, and echo throughput of geonode vs Crossbar.

    python bench/websocket/run.py                    # geonode, plus Crossbar if found
    python bench/websocket/run.py --crossbar /work/cbvenv/bin/crossbar --messages 20000

1. Unmasking: ms per MiB for the paths in ``geonode.websocket.frames`` (compiled NVX when
   autobahn has it, the pure-Python integer XOR otherwise) and µs for a 100-byte payload.
2. Echo: one raw client connection (this process, plain sockets) against geonode's
   ``websocket-testee`` and Crossbar's ``websocket.testee`` transport: small text messages
   with a window of ``--window`` in flight (messages/s), then 4 MiB binary messages (MiB/s).
   Deflate is not offered, so both sides do plain framing.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(port)


def bench_unmask() -> None:
    from geonode.websocket import frames as F

    data, mask = os.urandom(1 << 20), os.urandom(4)
    rounds = 50
    t = time.perf_counter()
    for _ in range(rounds):
        buf = bytearray(data)
        F.unmask_inplace(buf, mask)
    inplace = (time.perf_counter() - t) / rounds * 1000
    t = time.perf_counter()
    for _ in range(rounds):
        F.xor_mask(data, mask)
    copy = (time.perf_counter() - t) / rounds * 1000
    t = time.perf_counter()
    for _ in range(rounds):
        F._xor_int(data, mask)
    pure = (time.perf_counter() - t) / rounds * 1000
    t = time.perf_counter()
    for _ in range(rounds):
        F._xor_translate_inplace(bytearray(data), mask)
    translate = (time.perf_counter() - t) / rounds * 1000
    small = data[:100]
    n = 100_000
    t = time.perf_counter()
    for _ in range(n):
        F.xor_mask(small, mask)
    tiny = (time.perf_counter() - t) / n * 1e6
    nvx = "yes" if F._nvx_lib is not None else "no"
    print(f"unmask 1 MiB: in place {inplace:.2f} ms, copy {copy:.2f} ms (NVX: {nvx}); "
          f"without NVX (translate tables) {translate:.2f} ms; integer XOR {pure:.2f} ms; "
          f"100 bytes: {tiny:.2f} µs")


class Client:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.buf = bytearray(rest)
        self.mask = b"\x00\x00\x00\x00"   # a zero mask: valid, and keeps the client cheap

    @staticmethod
    def frame(opcode: int, payload: bytes) -> bytes:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        return head + b"\x00\x00\x00\x00" + payload

    def read_message(self) -> bytes:
        while True:
            while len(self.buf) < 2:
                self._fill()
            n = self.buf[1] & 0x7F
            hl = 2
            if n == 126:
                hl = 4
            elif n == 127:
                hl = 10
            while len(self.buf) < hl:
                self._fill()
            if n == 126:
                n = struct.unpack_from("!H", self.buf, 2)[0]
            elif n == 127:
                n = struct.unpack_from("!Q", self.buf, 2)[0]
            while len(self.buf) < hl + n:
                self._fill(hl + n - len(self.buf))
            opcode = self.buf[0] & 0x0F
            payload = bytes(self.buf[hl:hl + n])
            del self.buf[:hl + n]
            if opcode in (1, 2):
                return payload

    def _fill(self, want: int = 65536) -> None:
        data = self.sock.recv(max(want, 65536))
        if not data:
            raise EOFError
        self.buf += data


def bench_echo(port: int, messages: int, window: int, big: int) -> tuple[float, float]:
    c = Client(port)
    msg = c.frame(1, b"x" * 100)
    sent = received = 0
    t = time.perf_counter()
    while received < messages:
        burst = min(window - (sent - received), messages - sent)
        if burst > 0:
            c.sock.sendall(msg * burst)
            sent += burst
        c.read_message()
        received += 1
    small_rate = messages / (time.perf_counter() - t)
    data = os.urandom(4 << 20)
    frame = c.frame(2, data)
    t = time.perf_counter()
    for _ in range(big):
        c.sock.sendall(frame)
        assert len(c.read_message()) == len(data)
    big_rate = big * 4 * 2 / (time.perf_counter() - t)   # MiB moved both ways per second
    c.sock.close()
    return small_rate, big_rate


def start_geonode(tmp: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cfg = {"version": 2, "workers": [{"type": "router", "transports": [{
        "type": "web", "endpoint": {"type": "tcp", "port": port, "interface": "127.0.0.1"},
        "paths": {"/": {"type": "websocket-testee"}}}]}]}
    (tmp / "node.json").write_text(json.dumps(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "geonode", "--loglevel", "warning",
                             str(tmp / "node.json")], cwd=tmp, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    wait_port(port)
    return proc, port


def start_crossbar(exe: str, tmp: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cbdir = tmp / ".crossbar"
    cbdir.mkdir()
    cfg = {"version": 2, "controller": {}, "workers": [{"type": "router", "realms": [],
           "transports": [{"type": "websocket.testee", "endpoint": {
               "type": "tcp", "port": port, "interface": "127.0.0.1"}}]}]}
    (cbdir / "config.json").write_text(json.dumps(cfg))
    proc = subprocess.Popen([exe, "start", "--cbdir", str(cbdir), "--loglevel", "warn"],
                            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_port(port, 120)
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)   # both servers run in their own session
    except ProcessLookupError:
        return
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--crossbar", default=os.environ.get("CROSSBAR") or
                    shutil.which("crossbar") or "/work/cbvenv/bin/crossbar")
    ap.add_argument("--no-crossbar", action="store_true")
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--big", type=int, default=20, help="number of 4 MiB echoes")
    args = ap.parse_args()
    bench_unmask()
    servers = [("geonode", None)]
    if not args.no_crossbar and args.crossbar and Path(args.crossbar).exists():
        servers.append(("crossbar", args.crossbar))
    for name, exe in servers:
        with tempfile.TemporaryDirectory() as d:
            proc, port = (start_geonode(Path(d)) if exe is None
                          else start_crossbar(exe, Path(d)))
            try:
                bench_echo(port, 2000, args.window, 2)   # warm-up
                small, big = bench_echo(port, args.messages, args.window, args.big)
            finally:
                stop(proc)
        print(f"{name:9} echo 100-byte text: {small:9.0f} msg/s (window {args.window}); "
              f"4 MiB binary: {big:7.1f} MiB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
