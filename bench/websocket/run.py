#!/usr/bin/env python3
"""WebSocket layer benchmark: unmasking speed, and echo throughput of geonode vs Crossbar.

    python bench/websocket/run.py                    # geonode and Crossbar
    python bench/websocket/run.py --crossbar /path/to/bin/crossbar --messages 20000
    python bench/websocket/run.py --no-crossbar
    python bench/websocket/run.py --no-crossbar --baseline DIR   # against another geonode

1. Unmasking: ms per MiB for the paths in ``geonode.websocket.frames`` (compiled NVX when
   autobahn has it, the pure-Python integer XOR otherwise) and µs for a 100-byte payload.
2. Echo: one raw client connection (this process, plain sockets) against geonode's
   ``websocket-testee`` and Crossbar's ``websocket.testee`` transport: small text messages
   with a window of ``--window`` in flight (messages/s), then 4 MiB binary messages (MiB/s).
   Deflate is not offered, so both sides do plain framing. Both servers run side by side;
   ``--rounds`` interleaved rounds, medians printed.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "wamp")]

import common  # noqa: E402
from wire import frame  # noqa: E402

WORK = common.WORK / "websocket"


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
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.buf = bytearray(rest)

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
    msg = frame(b"x" * 100, 1)  # zero mask key: valid, and keeps the client cheap
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
    big_frame = frame(data, 2)
    t = time.perf_counter()
    for _ in range(big):
        c.sock.sendall(big_frame)
        assert len(c.read_message()) == len(data)
    big_rate = big * 4 * 2 / (time.perf_counter() - t)   # MiB moved both ways per second
    c.sock.close()
    return small_rate, big_rate


def start(name: str, exe: str | None, env: dict[str, str] | None = None) -> common.Server:
    port = common.free_port()
    endpoint = {"type": "tcp", "port": port, "interface": "127.0.0.1"}
    d = WORK / name
    if exe is None:
        cfg = {"version": 2, "workers": [{"type": "router", "transports": [{
            "type": "web", "endpoint": endpoint,
            "paths": {"/": {"type": "websocket-testee"}}}]}]}
        cmd = common.geonode_cmd(common.write_config(d, "node.json", cfg),
                                 "--loglevel", "warning")
    else:
        cfg = {"version": 2, "controller": {}, "workers": [{"type": "router", "realms": [],
               "transports": [{"type": "websocket.testee", "endpoint": endpoint}]}]}
        common.write_config(d, "config.json", cfg)
        cmd = common.crossbar_cmd(exe, d)
    server = common.Server(name, cmd, d, port, WORK / f"{name}.log", env=env)
    server.start(timeout=120)
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_crossbar_option(ap)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--big", type=int, default=20, help="number of 4 MiB echoes")
    ap.add_argument("--baseline", metavar="DIR",
                    help="another checkout's geonode package, run as server 'baseline' "
                         "(PYTHONPATH=DIR; e.g. git archive <commit> geonode | tar -x -C DIR)")
    ap.add_argument("--summary", help="write the summary rows (JSON) here, for run_all.py")
    args = ap.parse_args(argv)
    bench_unmask()
    servers: list[tuple[str, str | None]] = [("geonode", None)]
    if args.baseline:
        servers.append(("baseline", None))
    if not args.no_crossbar:
        servers.append(("crossbar", common.crossbar_exe(args.crossbar)))
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in servers}
    running: list[common.Server] = []
    try:
        for name, exe in servers:
            env = ({"PYTHONPATH": str(Path(args.baseline).resolve())} if name == "baseline"
                   else None)
            running.append(start(name, exe, env))
            bench_echo(running[-1].port, 2000, args.window, 2)   # warm-up
        for rnd in range(1, args.rounds + 1):  # interleaved: noise hits both alike
            for server in running:
                small, big = bench_echo(server.port, args.messages, args.window, args.big)
                samples[server.name].append((small, big))
                print(f"round {rnd} {server.name:9} echo 100-byte text: {small:9.0f} msg/s "
                      f"(window {args.window}); 4 MiB binary: {big:7.1f} MiB/s", flush=True)
    finally:
        for server in running:
            server.stop()
    rates = {name: (common.median(s[0] for s in v), common.median(s[1] for s in v))
             for name, v in samples.items()}
    print(f"\nmedians of {args.rounds} rounds:")
    for name, (small, big) in rates.items():
        print(f"{name:9} echo 100-byte text: {small:9.0f} msg/s; 4 MiB binary: {big:7.1f} MiB/s")
    if "baseline" in rates:
        (gs, gb), (bs, bb) = rates["geonode"], rates["baseline"]
        print(f"geonode/baseline: 100-byte text {gs / bs:.3f}, 4 MiB binary {gb / bb:.3f}")
    cb = rates.get("crossbar")
    common.write_summary(args.summary, "websocket", [
        common.compare("WebSocket echo, 100-byte text", "msg/s", rates["geonode"][0],
                       "crossbar", cb[0] if cb else None),
        common.compare("WebSocket echo, 4 MiB binary", "MiB/s", rates["geonode"][1],
                       "crossbar", cb[1] if cb else None)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
