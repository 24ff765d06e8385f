"""One Redis round trip of the backplane, against its floor: ``python bench/cluster/hop.py``.

Node A sends a message to node B's inbox, B sends one back on receipt, A times the round
trip (two Redis hops, the part a cross-node call adds to a call on one node). ``raw``: two
processes on blocking sockets with hiredis, no gevent, no geonode (the floor); ``link``:
two gevent processes joined by ``geonode.cluster.link.RedisLink`` of each checkout given,
interleaved so a noisy moment hits every variant alike; each also reports the CPU per round
trip of both processes, and the later checkouts' ratios to the first:

    python bench/cluster/hop.py main=/work/main branch=. --rounds 3 --count 2000

Starts its own ``redis-server`` on a free port (bench/.work/cluster/hop/).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import common  # noqa: E402
from support.redis import RedisServer  # noqa: E402

SKIP = 300   # warm-up round trips left out


def _raw(port: int, n: int) -> list[float]:
    import hiredis
    import msgpack

    def conn() -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def publish(ch: bytes, payload: bytes) -> bytes:
        return (b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n" % (len(ch), ch, len(payload))
                + payload + b"\r\n")

    def subscribe(ch: bytes) -> tuple[socket.socket, hiredis.Reader]:
        s, r = conn(), hiredis.Reader()
        s.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(ch), ch))
        return s, r

    def reply(s: socket.socket, r: hiredis.Reader) -> object:
        while True:
            m = r.gets()
            if m is not False:
                return m
            r.feed(s.recv(65536))

    payload = msgpack.packb(["I", "realm1", 1234567, [68, 1, 2, {}, [1]]])
    child = os.fork()
    me, other = (b"b", b"a") if child == 0 else (b"a", b"b")
    ps, pr = conn(), hiredis.Reader()
    ss, sr = subscribe(me)
    reply(ss, sr)   # subscribed
    if child == 0:
        while True:
            m = reply(ss, sr)
            if m[2] == b"stop":
                os._exit(0)
            ps.sendall(publish(other, m[2]))
            reply(ps, pr)
    while True:   # until B is subscribed
        ps.sendall(publish(other, payload))
        if reply(ps, pr) == 1:
            break
        time.sleep(0.05)
    reply(ss, sr)
    out = []
    c0 = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        ps.sendall(publish(other, payload))
        reply(ss, sr)
        out.append((time.perf_counter() - t0) * 1e6)
        reply(ps, pr)
    cpu = time.process_time() - c0
    ps.sendall(publish(other, b"stop"))
    os.waitpid(child, 0)
    return out, cpu, _child_cpu()


def _child_cpu() -> float:
    """CPU seconds of the reaped node B (its whole life after the fork)."""
    t = os.times()
    return t.children_user + t.children_system


def _link(port: int, n: int) -> list[float]:
    from gevent import monkey

    monkey.patch_all()
    import gevent
    import gevent.event

    from geonode.cluster.link import RedisLink
    from geonode.config.backplane import BackplaneConfig

    cfg = BackplaneConfig.from_options({"type": "redis", "url": f"redis://127.0.0.1:{port}/0"})
    child = os.fork()
    me, other = ("b", "a") if child == 0 else ("a", "b")
    got, up = gevent.event.Event(), gevent.event.Event()

    def on_batch(sender: str, msgs: list) -> None:
        for m in msgs:
            if me == "a":
                got.set()
            elif m[0] == "stop":
                os._exit(0)
            else:
                link.send(link.channel_of(other), ("Y", "realm1", m[3]))

    link = RedisLink(cfg, me, on_batch, up.set, lambda: None)
    link.start()
    up.wait()
    if child == 0:
        gevent.sleep(3600)
    msg = ("I", "realm1", 1234567, [68, 1, 2, {}, [1]])
    while True:   # until B is subscribed
        got.clear()
        link.send(link.channel_of(other), msg)
        if got.wait(0.5):
            break
    out = []
    c0 = time.process_time()
    for _ in range(n):
        got.clear()
        t0 = time.perf_counter()
        link.send(link.channel_of(other), msg)
        got.wait()
        out.append((time.perf_counter() - t0) * 1e6)
    cpu = time.process_time() - c0
    link.send(link.channel_of(other), ("stop",))
    os.waitpid(child, 0)
    return out, cpu, _child_cpu()


def _child(mode: str, port: int, n: int) -> None:
    out, cpu_a, cpu_b = (_raw if mode == "raw" else _link)(port, n)
    out = out[SKIP:]
    # CPU per round trip: node A's over the timed loop, node B's over its life (set-up
    # included: a few ms, spread over the round trips). Less disturbed by a busy machine
    # than the latencies (a process waiting for a core uses none).
    print(statistics.median(out), statistics.quantiles(out, n=10)[0], cpu_a / n * 1e6,
          cpu_b / n * 1e6)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="*", help="NAME=CHECKOUT (default: this checkout)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]), args.count)
        return 0
    trees = common.named_trees(args.trees) or {"this": str(common.ROOT)}
    r = RedisServer(common.WORK / "cluster" / "hop").start()
    results: dict[str, list[tuple[float, ...]]] = {"raw": [], **{k: [] for k in trees}}
    try:
        for i in range(args.rounds):
            for name in ["raw", *trees]:
                tree = str(Path(trees.get(name, common.ROOT)).resolve())
                env = dict(os.environ, PYTHONPATH=tree)
                cmd = [sys.executable, __file__, "--count", str(args.count),
                       "--child", "raw" if name == "raw" else "link", str(r.port)]
                p50, p10, cpu_a, cpu_b = map(float, subprocess.run(
                    cmd, env=env, check=True, timeout=120, capture_output=True,
                    text=True).stdout.split())
                results[name].append((p50, p10, cpu_a, cpu_b))
                print(f"round {i + 1}: {name:>8} p50 {p50:7.1f} µs  p10 {p10:7.1f} µs  "
                      f"CPU A {cpu_a:6.1f} µs  B {cpu_b:6.1f} µs", flush=True)
    finally:
        r.stop()
    for name, rows in results.items():
        p50, p10, cpu_a, cpu_b = (statistics.median(r[k] for r in rows) for k in range(4))
        print(f"{name:>8}: round trip p50 {p50:.1f} µs, p10 {p10:.1f} µs, CPU per round trip "
              f"A {cpu_a:.1f} µs B {cpu_b:.1f} µs (medians of {len(rows)} rounds)")
    names = list(trees)
    for name in names[1:]:
        ratios = [(b[0] / a[0], (b[2] + b[3]) / (a[2] + a[3]))
                  for a, b in zip(results[names[0]], results[name], strict=True)]
        print(f"{name} / {names[0]}: p50 {statistics.median(r for r, _ in ratios):.3f}, "
              f"CPU A+B {statistics.median(c for _, c in ratios):.3f} (medians of the "
              f"per-round ratios)")
    print("load average", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
