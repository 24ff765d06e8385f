#!/usr/bin/env python3
"""HTTP bridge and in-process WAMP benchmark: geonode vs Crossbar.io, same node.json.

    python bench/bridge/run.py                              # 3 rounds × 5 s per row
    python bench/bridge/run.py --crossbar /path/to/bin/crossbar --rounds 1 --duration 3
    python bench/bridge/run.py --no-crossbar --baseline DIR   # against another geonode package

Rows (wrk, requests/s, one server process at a time on loopback; a WAMP subscriber is
connected to the topic so every publication is delivered):
  publisher      wrk POST /publish (post.lua)     the HTTP publisher bridge (acknowledged publish)
  flask-noop     wrk GET /app/noop                the same Flask app, a view that does not publish
                                                  (the baseline for the two rows below)
  flask-pub      wrk GET /app/pub                 a Flask view publishing one event: geonode
                                                  in-process (fire and forget); Crossbar: the view
                                                  POSTs to Crossbar's /publish bridge
  flask-puback   wrk GET /app/puback              same, geonode waits for the acknowledgement

Rounds are interleaved (round 1 of both servers, then round 2, …); medians and the
geonode/Crossbar ratio are printed.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "wamp")]

import common  # noqa: E402
from support.config import realm, role, web_node  # noqa: E402
from wire import Closed, Conn  # noqa: E402

WORK = common.WORK / "bridge"
TOPIC = "com.example.bench"
ROWS = [("publisher", "/publish", True), ("flask-noop", "/app/noop", False),
        ("flask-pub", "/app/pub", False), ("flask-puback", "/app/puback", False)]
LABELS = {"publisher": "HTTP publisher, POST /publish",
          "flask-noop": "Flask view, no publish (baseline)",
          "flask-pub": "Flask view publishing (Crossbar: via its HTTP bridge)",
          "flask-puback": "Flask view publishing, acknowledged"}


def node_config(port: int, geonode: bool) -> dict:
    app: dict = {"type": "wsgi", "module": "app", "object": "app", "maxthreads": 20}
    if geonode:
        app["wamp"] = {"realm": "realm1", "role": "backend"}
    paths = {"/": {"type": "json", "value": "ok"}, "app": app, "ws": {"type": "websocket"},
             "publish": {"type": "publisher", "realm": "realm1", "role": "backend"}}
    return web_node(paths, realms=[realm(roles=[role("anonymous"), role("backend")])],
                    worker_options={"pythonpath": [str(HERE)]}, port=port)


class Bench:
    """One server (started afresh each round) and its samples."""

    def __init__(self, name: str, exe: str | None, pythonpath: str | None = None) -> None:
        self.name, self.exe, self.pythonpath = name, exe, pythonpath
        self.rps: dict[str, list[float]] = {r[0]: [] for r in ROWS}
        # the server's CPU (process tree) per request: steadier than req/s on a busy machine
        self.cpu_us: dict[str, list[float]] = {r[0]: [] for r in ROWS}
        self.problems: list[str] = []

    def start(self) -> common.Server:
        port = common.free_port()
        d = WORK / self.name
        cfg = node_config(port, self.exe is None)
        if self.exe is None:
            cmd = common.geonode_cmd(common.write_config(d, "node.json", cfg))
        else:
            common.write_config(d, "config.json", cfg)
            cmd = common.crossbar_cmd(self.exe, d)
        env = {"BENCH_BRIDGE_URL": f"http://127.0.0.1:{port}/publish"}
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath
        server = common.Server(self.name, cmd, d, port, WORK / f"{self.name}.log", env=env)
        base = f"http://127.0.0.1:{port}"
        # Crossbar listens before its path services exist (404): wait for all of them
        server.start(lambda: all(common.http_status(base + p) not in (None, 404)
                                 for p in ("/ws", "/publish", "/app/noop")))
        return server


class Subscriber:
    """A WAMP subscriber to the bench topic counting events, in a thread. The lean client of
    bench/wamp (autobahn's would take a good share of a core from the server at these rates)."""

    def __init__(self, port: int) -> None:
        self.conn = Conn("127.0.0.1", port, "/ws", "json")
        self.conn.join("realm1")
        self.conn.subscribe(TOPIC)
        self.conn.sock.settimeout(None)  # quiet stretches (the noop row) are normal here
        self.count = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                self.conn._fill()
                self.count += self.conn.count_frames()
        except (Closed, OSError):
            pass

    def close(self) -> None:
        # shutdown, not close: it wakes the thread blocked in recv()
        self.conn.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self.conn.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_crossbar_option(ap)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--baseline", metavar="DIR",
                    help="another checkout's geonode package, run as server 'baseline' "
                         "(PYTHONPATH=DIR; e.g. git archive <commit> geonode | tar -x -C DIR)")
    ap.add_argument("--summary", help="write the summary rows (JSON) here, for run_all.py")
    args = ap.parse_args(argv)
    common.require_wrk()
    servers = [Bench("geonode", None)]
    if args.baseline:
        servers.append(Bench("baseline", None, str(Path(args.baseline).resolve())))
    if not args.no_crossbar:
        servers.append(Bench("crossbar", common.crossbar_exe(args.crossbar)))
    events: dict[str, int] = {}
    client_cpu: list[float] = []  # wrk's, in cores
    for rnd in range(1, args.rounds + 1):
        for b in servers:
            srv = b.start()
            try:
                sub = Subscriber(srv.port)
            except Exception:
                srv.stop()
                raise
            try:
                # warm-up (thread pools, keep-alive sessions, caches)
                for _, path, lua in ROWS:
                    common.wrk(srv.url + path[1:], 1, 4, 1, HERE / "post.lua" if lua else None)
                for row, path, lua in ROWS:
                    cpu0 = srv.cpu_s()
                    w = common.wrk(srv.url + path[1:], args.threads, args.connections,
                                   args.duration, HERE / "post.lua" if lua else None)
                    cpu_us = (srv.cpu_s() - cpu0) / max(w.requests, 1) * 1e6
                    b.rps[row].append(w.rps)
                    b.cpu_us[row].append(cpu_us)
                    client_cpu.append(w.cpu)
                    if w.problems:
                        b.problems.append(f"{row}: {w.problems}")
                    print(f"round {rnd} {b.name:9s} {row:13s} {w.rps:10.0f} req/s"
                          f" {cpu_us:7.0f} CPU µs/req"
                          + (f"  ({w.problems})" if w.problems else ""), flush=True)
                time.sleep(0.5)
                events[b.name] = events.get(b.name, 0) + sub.count
            finally:
                sub.close()
                srv.stop()
    print(f"\nmedian requests/s (wrk -t{args.threads} -c{args.connections} "
          f"-d{args.duration:g}s, {args.rounds} rounds):")
    names = [s.name for s in servers]
    ratios = [o for o in ("crossbar", "baseline") if o in names]
    head = f"{'row':14s}" + "".join(f"{s.name:>12s}" for s in servers)
    head += "".join(f"{'geonode/' + o:>18s}" for o in ratios)
    print(head)
    summary = []
    for row, _, _ in ROWS:
        med = {s.name: statistics.median(s.rps[row]) for s in servers}
        line = f"{row:14s}" + "".join(f"{med[n]:12.0f}" for n in names)
        line += "".join(f"{med['geonode'] / med[o]:17.3f}x" if med[o] else f"{'-':>18s}"
                        for o in ratios)
        print(line)
        summary.append(common.compare(f"bridge: {LABELS[row]}", "req/s", med["geonode"],
                                      "crossbar", med.get("crossbar")))
    print("\nmedian server CPU µs per request (process tree):")
    print(f"{'row':14s}" + "".join(f"{s.name:>12s}" for s in servers)
          + "".join(f"{o + '/geonode':>18s}" for o in ratios))
    for row, _, _ in ROWS:
        med = {s.name: statistics.median(s.cpu_us[row]) for s in servers}
        print(f"{row:14s}" + "".join(f"{med[n]:12.1f}" for n in names)
              + "".join(f"{med[o] / med['geonode']:17.3f}x" if med["geonode"] else ""
                        for o in ratios))
    for s in servers:
        print(f"{s.name}: events delivered to the WAMP subscriber: {events.get(s.name, 0)}")
        for p in s.problems:
            print(f"  {s.name} {p}")
    print(f"wrk CPU: at most {max(client_cpu):.2f} cores")
    common.write_summary(args.summary, "bridge", summary, events=events,
                         client_cpu_max=max(client_cpu),
                         problems={s.name: s.problems for s in servers})
    return 0


if __name__ == "__main__":
    sys.exit(main())
