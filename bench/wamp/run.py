"""geonode vs Crossbar.io, WAMP over WebSocket, side by side: ``python bench/wamp/run.py``.

Both routers get the same node.json (one realm, anonymous may do everything, a websocket path
with json and msgpack). For each serializer it measures, with a lean raw-frame client (wire.py):
pub/sub events delivered per second to 10 subscribers, RPC calls per second with 50 in flight,
and the round-trip latency of one call at a time (p50/p99). Each figure is the median of
``--runs`` runs; the client's and the server's CPU use are reported next to the rates, so a
saturated client is visible. Then a scale test on geonode: ``--scale`` idle sessions, the
resident memory each costs, and the time to fan one event out to all of them.

Crossbar: ``--crossbar PATH``, else $CROSSBAR, else a venv made under bench/.work/cbvenv
(``pip install crossbar``). Configs, logs and raw samples: bench/.work/wamp/<time>-<pid>/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import common  # noqa: E402
import loads  # noqa: E402
from support.config import allow_all, realm, role, web_node  # noqa: E402
from wire import Conn  # noqa: E402

PATH = "/ws"


def node_config(port: int) -> dict:
    perm = allow_all(disclose={"caller": False, "publisher": False}, cache=True)
    cfg = web_node({"ws": {"type": "websocket", "serializers": ["json", "msgpack"]}},
                   realms=[realm(loads.REALM, [role(permissions=[perm])])], port=port)
    cfg["workers"][0]["transports"][0]["endpoint"]["backlog"] = 1024
    return cfg


def start(name: str, tmp: Path, crossbar: str | None,
          baseline: str | None = None) -> common.Server:
    port = common.free_port()
    d = tmp / name
    env = None
    if name in ("geonode", "baseline"):
        cfg = common.write_config(d, "node.json", node_config(port))
        cmd = common.geonode_cmd(cfg, "--loglevel", "warning")
        if name == "baseline":
            # another checkout's geonode package (git archive <commit> geonode | tar -x -C DIR)
            env = {"PYTHONPATH": str(Path(baseline).resolve())}
    else:
        common.write_config(d, "config.json", node_config(port))
        cmd = common.crossbar_cmd(common.crossbar_exe(crossbar), d)
    server = common.Server(name, cmd, d, port, tmp / f"{name}.log", env=env)
    server.start()
    time.sleep(0.5)  # Crossbar opens the port before its realm is fully up
    return server


def bench_round(servers: list[common.Server], serializers: list[str], duration: float,
                results: dict, prefix: bool = False) -> None:
    """One run of every load against every server, interleaved so noise hits all alike."""
    for ser in serializers:
        for metric in ("pubsub", "pubsub_prefix", "rpc") if prefix else ("pubsub", "rpc"):
            for server in servers:
                addr = ("127.0.0.1", server.port, PATH)
                if metric == "pubsub":
                    r = loads.pubsub(addr, ser, duration, server.pids)
                elif metric == "pubsub_prefix":
                    r = loads.pubsub(addr, ser, duration, server.pids, match="prefix")
                else:
                    r = loads.rpc(addr, ser, duration, server.pids)
                _record(results, server.name, ser, metric, r)
                time.sleep(0.3)
        # All servers at once: latency() has them take turns every 200 calls.
        lat = loads.latency([(("127.0.0.1", s.port, PATH), s.pids) for s in servers], ser)
        for server, r in zip(servers, lat, strict=True):
            _record(results, server.name, ser, "latency", r)
        time.sleep(0.3)


def _record(results: dict, name: str, ser: str, metric: str, r) -> None:
    results.setdefault((name, ser, metric), []).append(r)
    print(f"  {name:8} {ser:8} {metric:8} {_fmt(metric, [r])}", flush=True)


def _median(samples: list, attr: str) -> float:
    return statistics.median(getattr(s, attr) for s in samples)


def _fmt(metric: str, samples: list) -> str:
    if metric == "latency":
        p50, p99, delayed, own = (statistics.median(s[i] for s in samples) for i in range(4))
        return (f"p50 {p50:.3f} ms  p99 {p99:.3f} ms  ({delayed:.1%} of calls held up by "
                f"other processes; p99 of the others {own:.3f} ms)")
    rate = _median(samples, "rate")
    return (f"{rate:10.0f}/s  client cpu {_median(samples, 'client_cpu'):.0%}  "
            f"server cpu {_median(samples, 'server_cpu'):.0%}  "
            f"(runs: {', '.join(f'{s.rate:.0f}' for s in samples)})")


#: key, label in the table printed here, label in RESULTS.md, unit, higher is better
METRICS = (("pubsub", "events/s (10 subscribers)", "pub/sub to 10 subscribers", "events/s", True),
           ("pubsub_prefix", "events/s (10 prefix subscribers)",
            "pub/sub to 10 prefix subscribers", "events/s", True),
           ("rpc", "calls/s (50 in flight)", "RPC, 50 calls in flight", "calls/s", True),
           ("p50", "call latency p50 (ms)", "call round trip p50", "ms", False),
           ("p99", "call latency p99 (ms)", "call round trip p99", "ms", False))


def median_of(results: dict, name: str, ser: str, metric: str) -> float | None:
    """The median of one metric's runs (None when it was not measured)."""
    if metric in loads.Latency._fields:
        samples = results.get((name, ser, "latency"))
        return statistics.median(getattr(s, metric) for s in samples) if samples else None
    samples = results.get((name, ser, metric))
    return _median(samples, "rate") if samples else None


def table(results: dict, serializers: list[str], servers: list[str]) -> str:
    pair = len(servers) == 2 and servers[0] == "geonode"
    lines = ["| metric | serializer | " + " | ".join(servers) +
             (f" | geonode/{servers[1]} |" if pair else " |"),
             "|---|---|" + "---|" * (len(servers) + pair)]
    for ser in serializers:
        for metric, label, _, _, higher in METRICS:
            vals = [median_of(results, name, ser, metric) for name in servers]
            if all(v is None for v in vals):
                continue
            cells = [("-" if v is None else (f"{v:.0f}" if higher else f"{v:.3f}"))
                     for v in vals]
            row = f"| {label} | {ser} | " + " | ".join(cells) + " |"
            if pair and None not in vals and vals[1]:
                # two decimals against another geonode: differences of a few % matter there
                digits = 1 if servers[1] == "crossbar" else 3
                row += f" {common.ratio(vals[0], vals[1], higher):.{digits}f}x |"
            elif pair:
                row += " - |"
            lines.append(row)
    return "\n".join(lines)


def summary(results: dict, serializers: list[str], scale_results: dict) -> list[dict]:
    rows = []
    for ser in serializers:
        for metric, _, label, unit, higher in METRICS:
            g = median_of(results, "geonode", ser, metric)
            if g is not None:
                rows.append(common.compare(f"WAMP {ser}: {label}", unit, g,
                                           "crossbar", median_of(results, "crossbar", ser,
                                                                 metric), higher, target=2.0))
        g = median_of(results, "geonode", ser, "delayed")
        if g is not None:
            # Next to p99: the share of calls preempted by the machine's other jobs (they
            # decide the p99 once above 1%, loads.DELAYED_NS) and the p99 without them.
            cb = median_of(results, "crossbar", ser, "delayed")
            rows.append(common.compare(f"WAMP {ser}: call round trip p99, calls not held up",
                                       "ms", median_of(results, "geonode", ser, "p99_own"),
                                       "crossbar", median_of(results, "crossbar", ser,
                                                             "p99_own"), False))
            rows.append(common.absolute(f"WAMP {ser}: calls held up by other processes", "%",
                                        g * 100, other=None if cb is None else cb * 100,
                                        vs="crossbar" if cb is not None else ""))
    if "geonode" in scale_results:
        r = scale_results["geonode"]
        cb = scale_results.get("crossbar")
        rows.append(common.absolute(f"WAMP {r['sessions']} idle sessions: memory per session",
                                    "KiB", r["kb_per_session"], 30.0,
                                    cb["kb_per_session"] if cb else None, "crossbar" if cb else ""))
        rows.append(common.absolute(f"WAMP one event to all {r['sessions']} sessions", "ms",
                                    statistics.median(r["fanout_ms"]),
                                    other=statistics.median(cb["fanout_ms"]) if cb else None,
                                    vs="crossbar" if cb else ""))
    return rows


def scale(server: common.Server, n: int, serializer: str = "json", fanouts: int = 3) -> dict:
    addr = ("127.0.0.1", server.port, PATH)
    warm = loads.idle_sessions(addr, serializer, 100)
    time.sleep(1.0)
    before = common.tree_rss_kb(server.pids())
    t0 = time.perf_counter()
    conns = loads.idle_sessions(addr, serializer, n - len(warm))
    setup = time.perf_counter() - t0
    time.sleep(5.0)  # idle writers retire after 2-4 s
    after = common.tree_rss_kb(server.pids())
    conns = warm + conns
    publisher = Conn(*addr, serializer)
    publisher.join(loads.REALM)
    times = [loads.fanout(conns, publisher) for _ in range(fanouts)]
    for c in [*conns, publisher]:
        c.close()
    return {"sessions": n, "setup_s": setup, "rss_before_kb": before, "rss_after_kb": after,
            "kb_per_session": (after - before) / (n - len(warm)),
            "fanout_ms": [t * 1000 for t in times]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds measured per run")
    ap.add_argument("--serializers", default="json,msgpack")
    ap.add_argument("--servers", default="geonode,crossbar")
    ap.add_argument("--scale", type=int, default=10000, help="idle sessions (0: skip)")
    ap.add_argument("--scale-crossbar", action="store_true", help="scale-test Crossbar too")
    ap.add_argument("--prefix", action="store_true",
                    help="also pub/sub with prefix subscriptions (the concrete-URI check)")
    ap.add_argument("--baseline", metavar="DIR",
                    help="another checkout's geonode package, run as server 'baseline' "
                         "(e.g. --servers geonode,baseline --baseline DIR)")
    common.add_crossbar_option(ap)
    ap.add_argument("--summary", help="write the summary rows (JSON) here, for run_all.py")
    args = ap.parse_args(argv)
    hard = common.raise_nofile()  # the servers started below inherit it
    serializers = args.serializers.split(",")
    servers = [n for n in args.servers.split(",") if not (args.no_crossbar and n == "crossbar")]
    work = common.WORK / "wamp" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    results: dict = {}
    scale_results = {}
    running = []
    try:
        for name in servers:
            running.append(start(name, work, args.crossbar, args.baseline))
        for i in range(args.runs):
            print(f"== run {i + 1}/{args.runs}", flush=True)
            bench_round(running, serializers, args.duration, results, args.prefix)
        for server in running:
            if args.scale and (server.name == "geonode" or args.scale_crossbar):
                n = min(args.scale, hard - 500)  # client and server each hold n fds
                scale_results[server.name] = scale(server, n)
                print(f"  {server.name:8} scale   {scale_results[server.name]}", flush=True)
    finally:
        for server in running:
            server.stop()
    print()
    print(table(results, serializers, servers))
    for name, r in scale_results.items():
        print(f"\nscale ({name}): {r['sessions']} idle sessions (json, each subscribed), "
              f"opened in {r['setup_s']:.1f}s; RSS {r['rss_before_kb'] / 1024:.1f} MiB -> "
              f"{r['rss_after_kb'] / 1024:.1f} MiB = {r['kb_per_session']:.1f} KiB/session; "
              f"one event to all: {', '.join(f'{t:.0f}' for t in r['fanout_ms'])} ms")
    (work / "results.json").write_text(json.dumps({
        "runs": [{"server": k[0], "serializer": k[1], "metric": k[2],
                  "samples": [list(x) if isinstance(x, tuple) else vars(x) for x in v]}
                 for k, v in results.items()],
        "scale": scale_results}, indent=2))
    print(f"\nraw numbers: {work / 'results.json'}")
    client_cpu = [r.client_cpu for k, v in results.items() if k[2] != "latency" for r in v]
    common.write_summary(args.summary, "wamp", summary(results, serializers, scale_results),
                         runs=args.runs, duration=args.duration,
                         client_cpu_max=max(client_cpu, default=None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
