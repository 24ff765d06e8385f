#!/usr/bin/env python3
"""HTTP with ``--processes N``: the seed's Flask app (samples/flask), 1 vs 2 processes, and how
the two listen modes of the supervisor spread connections over the children.

    python bench/cluster/http_processes.py                  # 3 interleaved rounds, wrk -t2 -c64 -d10s
    python bench/cluster/http_processes.py --rounds 5 --duration 15 --threads 1

Servers (same app, same node config: the sample's web paths; its WebSocket path is left out,
since N > 1 processes serving WAMP need a backplane):
  p1              python -m geonode --processes 1 node.json
  p2-reuseport    python -m geonode --processes 2 node.json   (the default: SO_REUSEPORT)
  p2-shared       the same with GEONODE_LISTEN_MODE=shared     (one listening socket for both)

Throughput: wrk rounds interleaved (round 1 of every server, then round 2, ...); medians, the
ratio p2/p1 (target >= 1.7 on a 2-core machine), wrk's own CPU (it shares the cores: a wrk that
needs most of a core caps what two server processes can show) and how the server's CPU was
shared between the children during the run.

Spread: which child answered, by pid, for (a) 200 fresh connections one after another and
(b) 200 fresh connections opened in bursts of 50 at once.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
from common import PY, ROOT, free_port  # noqa: E402

WORK = common.WORK / "cluster" / f"http-processes-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
SAMPLE = ROOT / "samples" / "flask"
TARGET = 1.7

PID_APP = '''
import os

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
'''


def node_config(port: int) -> dict:
    cfg = json.loads((SAMPLE / "node.json").read_text())
    worker = cfg["workers"][0]
    worker.setdefault("options", {})["pythonpath"] = [str(SAMPLE), str(WORK)]
    t = worker["transports"][0]
    t["endpoint"].update(port=port, interface="127.0.0.1")
    t["paths"].pop("ws", None)
    t["paths"]["pid"] = {"type": "wsgi", "module": "benchpid", "object": "app",
                         "threads": False}
    return cfg


def start(name: str, processes: int, mode: str) -> common.Server:
    port = free_port()
    folder = WORK / name
    cfg = common.write_config(folder, "node.json", node_config(port))
    server = common.Server(name, [PY, "-m", "geonode", "--processes", str(processes),
                                  "--loglevel", "warning", str(cfg)], folder, port,
                           folder / "node.log", env={"GEONODE_LISTEN_MODE": mode})

    def ready() -> bool:
        # every child answering, not just the parent's socket accepting
        return len({pid_of(port) for _ in range(8 * processes)} - {None}) >= processes

    server.start(ready)
    return server


def pid_of(port: int) -> int | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(body) if head.startswith(b"HTTP/1.1 200") else None
    except (OSError, ValueError):
        return None


def children(server: common.Server) -> list[int]:
    """The serving processes: the children under a supervisor, else the node itself."""
    return [p for p in server.pids() if p != server.proc.pid] or [server.proc.pid]


def established(pids: list[int], port: int) -> list[int]:
    """How many established TCP connections on ``port`` each of ``pids`` holds now."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "01" and int(f[1].rsplit(":", 1)[1], 16) == port:  # ESTABLISHED
                inodes.add(f[9])
    counts = []
    for pid in pids:
        n = 0
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    n += 1
        except OSError:
            pass
        counts.append(n)
    return counts


def spread(server: common.Server) -> tuple[Counter, Counter]:
    sequential = Counter(pid_of(server.port) for _ in range(200))
    burst: Counter = Counter()
    lock = threading.Lock()

    def one() -> None:
        pid = pid_of(server.port)
        with lock:
            burst[pid] += 1

    for _ in range(4):
        threads = [threading.Thread(target=one) for _ in range(50)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    return sequential, burst


def shares(counter: Counter) -> str:
    total = sum(counter.values()) or 1
    return " / ".join(f"{100 * v / total:.0f}%" for _, v in counter.most_common())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections")
    ap.add_argument("--summary", help="write the summary rows (JSON) here")
    args = ap.parse_args()
    common.require_wrk()
    common.raise_nofile()
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "benchpid.py").write_text(PID_APP)
    print(f"work folder: {WORK}  (cpus: {os.cpu_count()})")
    servers = [start("p1", 1, "reuseport"), start("p2-reuseport", 2, "reuseport"),
               start("p2-shared", 2, "shared")]
    rps: dict[str, list[float]] = {s.name: [] for s in servers}
    wrk_cpu: dict[str, list[float]] = {s.name: [] for s in servers}
    child_cpu: dict[str, list[list[float]]] = {s.name: [] for s in servers}
    try:
        for s in servers:  # warm-up: imports, templates, thread pools
            common.wrk(s.url, args.threads, args.connections, 2)
        for r in range(args.rounds):
            for s in servers:
                kids = children(s)
                before = [common.tree_cpu_s([k]) for k in kids]
                conns: list[int] = []
                sampler = threading.Timer(args.duration / 2,
                                          lambda k=kids, p=s.port, c=conns: c.extend(established(k, p)))
                sampler.start()
                w = common.wrk(s.url, args.threads, args.connections, args.duration)
                sampler.join()
                used = [common.tree_cpu_s([k]) - b for k, b in zip(kids, before, strict=True)]
                rps[s.name].append(w.rps)
                wrk_cpu[s.name].append(w.cpu)
                child_cpu[s.name].append(used)
                print(f"round {r + 1} {s.name:<13} {w.rps:9.0f} req/s  wrk CPU {w.cpu:.2f} cores"
                      f"  children CPU {' + '.join(f'{u:.1f}' for u in used)} s"
                      f"  wrk connections {' + '.join(map(str, conns))}"
                      f"{'  ' + w.problems if w.problems else ''}", flush=True)
        print("\nmedians")
        base = common.median(rps["p1"])
        rows = []
        for s in servers:
            m = common.median(rps[s.name])
            cpu = common.median(wrk_cpu[s.name])
            print(f"  {s.name:<13} {m:9.0f} req/s  x{m / base:.2f} vs p1  "
                  f"(wrk CPU {cpu:.2f} cores)")
            if s.name != "p1":
                rows.append(common.compare(
                    f"Flask sample, {s.name} vs --processes 1", "req/s", m, "p1", base,
                    target=TARGET if s.name == "p2-reuseport" else None))
        print(f"target: p2-reuseport >= {TARGET}x p1")
        print("\nspread of fresh connections over the children (pid: count)")
        for s in servers[1:]:
            seq, burst = spread(s)
            print(f"  {s.name:<13} sequential {shares(seq):<10} bursts of 50 {shares(burst)}")
        if args.summary:
            common.write_summary(args.summary, "cluster/http_processes", rows)
    finally:
        for s in servers:
            s.stop()


if __name__ == "__main__":
    main()
