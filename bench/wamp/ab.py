"""Two (or more) geonode checkouts, bench/wamp's loads, interleaved: ``python bench/wamp/ab.py``.

    python bench/wamp/ab.py main=/work/main branch=.            # 11 runs of 2 s per load
    python bench/wamp/ab.py --metrics pubsub --runs 15 a=/tmp/a b=/tmp/b

Each ``NAME=DIR`` starts ``python -m geonode`` with ``PYTHONPATH=DIR`` on bench/wamp/run.py's
node.json. Every run measures each load (``loads.pubsub``: events/s to 10 subscribers;
``loads.rpc``: calls/s with 50 in flight) on every server in turn, the order reversed every
other run, so a noisy moment on a shared machine hits all of them. Printed per load: the
medians of the rate and of the server's CPU per message, and against the first checkout the
median of the per-run ratios (pairs taken in the same run) with the ratios themselves, so the
spread is visible: on a busy 2-core machine single runs differ by +-10%, the same tree against
itself gives medians within ~1-2%.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import common  # noqa: E402
import loads  # noqa: E402
import run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="+", metavar="NAME=DIR", help="geonode checkouts to compare")
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--duration", type=float, default=2.0, help="seconds measured per load")
    ap.add_argument("--metrics", default="pubsub,rpc")
    ap.add_argument("--serializers", default="json,msgpack")
    args = ap.parse_args(argv)
    trees = common.named_trees(args.trees)
    work = common.WORK / "wamp" / f"ab-{time.strftime('%Y%m%d-%H%M%S')}"
    servers = []
    try:
        for name, tree in trees.items():
            port = common.free_port()
            cfg = common.write_config(work / name, "node.json", run.node_config(port))
            server = common.Server(name, common.geonode_cmd(cfg, "--loglevel", "warning"),
                                   work / name, port, work / f"{name}.log",
                                   env={"PYTHONPATH": str(Path(tree).resolve())})
            server.start()
            servers.append(server)
        time.sleep(0.5)
        results: dict = {}
        for i in range(args.runs):
            order = servers if i % 2 == 0 else servers[::-1]
            for ser in args.serializers.split(","):
                for metric in args.metrics.split(","):
                    load = loads.pubsub if metric == "pubsub" else loads.rpc
                    for server in order:
                        r = load(("127.0.0.1", server.port, run.PATH), ser, args.duration,
                                 server.pids)
                        results.setdefault((ser, metric, server.name), []).append(
                            (r.rate, r.server_cpu / r.rate * 1e6 if r.rate else float("nan")))
                        time.sleep(0.2)
            print(f"run {i + 1}/{args.runs} done, load average "
                  f"{open('/proc/loadavg').read().split()[0]}", flush=True)
    finally:
        for server in servers:
            server.stop()
    names = list(trees)
    base = names[0]
    print()
    for ser in args.serializers.split(","):
        for metric in args.metrics.split(","):
            cells = []
            for name in names:
                samples = results[(ser, metric, name)]
                cells.append(f"{name} {statistics.median(s[0] for s in samples):.0f}/s "
                             f"{statistics.median(s[1] for s in samples):.2f} µs CPU/msg")
            print(f"{ser} {metric}: " + ", ".join(cells))
            for name in names[1:]:
                pairs = list(zip(results[(ser, metric, name)], results[(ser, metric, base)],
                                 strict=True))
                rate = [a[0] / b[0] for a, b in pairs]
                cpu = [a[1] / b[1] for a, b in pairs]
                print(f"  {name}/{base}: rate x{statistics.median(rate):.3f}, CPU per message "
                      f"x{statistics.median(cpu):.3f} (rate per run: "
                      f"{' '.join(f'{x:.2f}' for x in rate)})")
    print(f"\nconfigs and logs: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
