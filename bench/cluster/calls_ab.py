"""Cross-node call latency of several checkouts, interleaved: ``python bench/cluster/calls_ab.py``.

run.py's call loop (one call at a time, raw WebSocket clients, msgpack) on a node pair of each
checkout (caller on A, callee on B; and both on A), each pair on its own ``redis-server``,
alternating round by round so a noisy moment hits every checkout alike. run.py itself takes
one checkout and also runs the event and memory scenarios:

    python bench/cluster/calls_ab.py main=/work/main branch=. --rounds 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
import common  # noqa: E402
import run  # noqa: E402  (puts bench/, bench/wamp and tests/ on the path)
from support.redis import RedisServer  # noqa: E402


def start(name: str, work: Path, url: str, tree: str) -> common.Server:
    port = common.free_port()
    cfg = common.write_config(work / name, "node.json", run.node_config(port, url))
    server = common.Server(name, common.geonode_cmd(cfg, "--loglevel", "info"), work / name,
                           port, work / f"{name}.log", env={"PYTHONPATH": tree})
    server.start()
    run.wait_log(server.log, "backplane: connected")
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="+", help="NAME=CHECKOUT; the first is the reference")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--serializer", default="msgpack")
    args = ap.parse_args(argv)
    trees = common.named_trees(args.trees)
    work = common.WORK / "cluster" / ("calls-" + time.strftime("%Y%m%d-%H%M%S"))
    pairs: dict[str, tuple[common.Server, common.Server]] = {}
    redises: list[RedisServer] = []
    try:
        for k, tree in trees.items():
            r = RedisServer(work / f"redis-{k}").start()
            redises.append(r)
            a, b = start(f"{k}-a", work, r.url, tree), start(f"{k}-b", work, r.url, tree)
            run.wait_log(a.log, "joined the cluster")
            pairs[k] = (a, b)
        res: dict[str, dict[str, list[float]]] = {k: {"cross": [], "same": []} for k in trees}
        for i in range(args.rounds):
            for k in (list(trees) if i % 2 == 0 else list(trees)[::-1]):
                a, b = pairs[k]
                cross, same = run.latency([(run.addr(a), run.addr(b)),
                                           (run.addr(a), run.addr(a))],
                                          args.serializer, args.calls)
                res[k]["cross"].append(cross)
                res[k]["same"].append(same)
                print(f"round {i + 1} {k:>8}: p50 cross-node {cross:.3f} ms, same node "
                      f"{same:.3f} ms, difference {cross - same:+.3f}", flush=True)
        ref = list(trees)[0]
        diff = {k: [c - s for c, s in zip(v["cross"], v["same"], strict=True)]
                for k, v in res.items()}
        for k, v in res.items():
            print(f"{k:>8}: p50 cross-node {statistics.median(v['cross']):.3f} ms, same node "
                  f"{statistics.median(v['same']):.3f} ms, difference "
                  f"{statistics.median(diff[k]):+.3f} ms (medians of {args.rounds} rounds)")
        for k in list(trees)[1:]:
            ratio = statistics.median(
                c / r for c, r in zip(res[k]["cross"], res[ref]["cross"], strict=True))
            delta = [d - r for d, r in zip(diff[k], diff[ref], strict=True)]
            print(f"{k} / {ref}: cross-node p50 {ratio:.3f}; difference "
                  f"{statistics.median(delta) * 1000:+.1f} µs, lower in "
                  f"{sum(d < 0 for d in delta)} of {len(delta)} rounds")
        print("load average", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    finally:
        for pair in pairs.values():
            for s in pair:
                s.stop()
        for r in redises:
            r.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
