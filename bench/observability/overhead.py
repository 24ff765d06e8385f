"""What counting for the metrics costs the hot paths, main and this tree interleaved in one run.

    python bench/observability/overhead.py                      # main=/work/main, this tree
    python bench/observability/overhead.py --base /tmp/main --runs 9 --duration 3

Servers (loopback, one process each, the same node):
  base          PYTHONPATH=<base checkout>, no ``metrics`` path (nothing counted there)
  tree          this checkout, no ``metrics`` path (the router's plain counters only)
  tree+metrics  this checkout with a ``metrics`` path (HTTP requests counted too), scraped
                once a second during the runs, as Prometheus would

Loads, each run over all servers in turn (order reversed every other run):
  http-json    wrk -t1 -c16 on a ``json`` path
  http-wsgi    wrk -t1 -c16 on bench/http/hello.py (a WSGI app on its thread pool)
  pubsub, rpc  bench/wamp's loads (json): events/s to 10 subscribers, calls/s 50 in flight
Printed: the medians of the server's CPU per operation (the figure that matters on a shared
machine) and of the rate, and per load the median of the per-run ratios against base.
The issue's budget is 1.03 (3%).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
sys.path[:0] = [str(BENCH / "wamp"), str(BENCH)]

import common  # noqa: E402
import loads  # noqa: E402
import run as wamp_run  # noqa: E402


def node_config(port: int, metrics: bool) -> dict:
    cfg = wamp_run.node_config(port)
    worker = cfg["workers"][0]
    worker.setdefault("options", {})["pythonpath"] = [str(BENCH / "http")]
    paths = worker["transports"][0]["paths"]
    paths["json"] = {"type": "json", "value": {"hello": "world"}}
    paths["hello"] = {"type": "wsgi", "module": "hello", "object": "app"}
    if metrics:
        paths["metrics"] = {"type": "metrics"}
    return cfg


class Scraper:
    """GET /metrics once a second (Prometheus' cost is part of the overhead)."""

    def __init__(self, url: str) -> None:
        self.url, self.stop, self.count = url, threading.Event(), 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            with urllib.request.urlopen(self.url, timeout=10) as r:
                r.read()
            self.count += 1


def http_load(server: common.Server, path: str, duration: float) -> tuple[float, float]:
    pids = server.pids()
    c0 = common.tree_cpu_s(pids)
    w = common.wrk(f"http://127.0.0.1:{server.port}{path}", 1, 16, duration)
    cpu = common.tree_cpu_s(pids) - c0
    if w.problems:
        raise RuntimeError(f"{server.name} {path}: {w.problems}")
    return w.rps, cpu / w.requests * 1e6 if w.requests else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="/work/main", help="the checkout without metrics")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per load")
    ap.add_argument("--loads", default="http-json,http-wsgi,pubsub,rpc")
    args = ap.parse_args(argv)
    common.require_wrk()
    tree = str(BENCH.parent)
    work = common.WORK / "observability" / f"overhead-{time.strftime('%Y%m%d-%H%M%S')}"
    specs = [("base", args.base, False), ("tree", tree, False), ("tree+metrics", tree, True)]
    servers, scrapers = [], []
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        for name, path, metrics in specs:
            port = common.free_port()
            cfg = common.write_config(work / name, "node.json", node_config(port, metrics))
            server = common.Server(name, common.geonode_cmd(cfg, "--loglevel", "warning"),
                                   work / name, port, work / f"{name}.log",
                                   env={"PYTHONPATH": str(Path(path).resolve())})
            server.start()
            servers.append(server)
            if metrics:
                scrapers.append(Scraper(f"http://127.0.0.1:{port}/metrics"))
        time.sleep(0.5)
        for i in range(args.runs):
            order = servers if i % 2 == 0 else servers[::-1]
            for load in args.loads.split(","):
                for server in order:
                    if load.startswith("http-"):
                        r = http_load(server, "/json" if load == "http-json" else "/hello",
                                      args.duration)
                    else:
                        fn = loads.pubsub if load == "pubsub" else loads.rpc
                        res = fn(("127.0.0.1", server.port, wamp_run.PATH), "json",
                                 args.duration, server.pids)
                        r = (res.rate, res.server_cpu / res.rate * 1e6 if res.rate
                             else float("nan"))
                    results.setdefault((load, server.name), []).append(r)
                    time.sleep(0.2)
            print(f"run {i + 1}/{args.runs} done, load average "
                  f"{open('/proc/loadavg').read().split()[0]}", flush=True)
    finally:
        for s in scrapers:
            s.stop.set()
        for server in servers:
            server.stop()
    print()
    for load in args.loads.split(","):
        cells = []
        for name, _, _ in specs:
            samples = results[(load, name)]
            cells.append(f"{name} {statistics.median(s[0] for s in samples):.0f}/s "
                         f"{statistics.median(s[1] for s in samples):.2f} µs CPU/op")
        print(f"{load}: " + ", ".join(cells))
        for name, _, _ in specs[1:]:
            pairs = list(zip(results[(load, name)], results[(load, "base")], strict=True))
            cpu = [a[1] / b[1] for a, b in pairs]
            rate = [a[0] / b[0] for a, b in pairs]
            print(f"  {name}/base: CPU per op x{statistics.median(cpu):.3f}, rate "
                  f"x{statistics.median(rate):.3f} (CPU ratio per run: "
                  f"{' '.join(f'{x:.2f}' for x in cpu)})")
    print(f"\nscrapes: {[s.count for s in scrapers]}; configs and logs: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
