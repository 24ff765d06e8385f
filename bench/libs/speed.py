#!/usr/bin/env python3
"""geonode's hand-written parts vs library adapters: speed, in one run, rounds interleaved.

    python bench/libs/speed.py                         # every item, 5 rounds
    python bench/libs/speed.py --only h11 --rounds 3 --duration 3

Two kinds of load per item, each with geonode's code and with the adapter (the adapter is
swapped in by ``bench/libs/shim``, see its sitecustomize.py), the two alternating round by
round (and which goes first alternating too) so a busy moment on a shared machine hits both:

- in-process: ``bench/libs/inproc.py <load> <n>`` in a fresh process per round, CPU µs per
  operation of that process alone (no load generator, no network stack but loopback);
- node: a ``python -m geonode`` node per variant, side by side, driven over loopback
  (wrk, or the raw WebSocket client of bench/websocket/run.py); rate and the node's CPU µs
  per operation (process tree, user + system: steadier than rates on a busy machine).

Printed: per-round figures, medians, and ``lib/ours``: the library's CPU per operation over
ours (> 1: the library costs more; the issue's rule is "switch if <= 1.10 and the tests pass").
Instruction counts (independent of load): bench/libs/instructions.py.
Needs ``pip install wsproto h11 urllib3`` and wrk. Raw numbers: bench/.work/libs/speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "bench" / "wamp")]

import common  # noqa: E402


def _ws_bench():
    """bench/websocket/run.py (its name clashes with bench/wamp/run.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ws_run", ROOT / "bench/websocket/run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

WORK = common.WORK / "libs"
SHIM = HERE / "shim"

# item -> (in-process loads with their n, node load)
ITEMS: dict[str, tuple[list[tuple[str, int]], str]] = {
    "wsproto": ([("ws", 20000), ("wsbig", 40)], "ws"),
    "h11": ([("http", 20000), ("head", 50000)], "http"),
    "urllib3": ([("client", 2000)], "restcallee"),
    "urllib3-nopool": ([("client", 2000)], "restcallee"),
    "urllib3-proxy": ([("proxy", 2000)], "proxy"),
    "send_file": ([("static", 5000), ("static1m", 200)], "static"),
    "shareddata": ([("static", 5000), ("static1m", 200)], "static"),
}


def env_for(item: str | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("GEONODE_LIBS", None)
    if item is not None:
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{SHIM}"
        env["GEONODE_LIBS"] = item
    return env


def inproc(item: str | None, load: str, n: int) -> float:
    out = subprocess.run([sys.executable, str(HERE / "inproc.py"), load, str(n)],
                         env=env_for(item), capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(f"inproc {load} ({item or 'ours'}) failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.split()[-1])


# -- nodes ------------------------------------------------------------------------------------

_UPSTREAM = HERE / "upstream.py"


def _node(name: str, item: str | None, paths: dict, components: list | None = None,
          realms: list | None = None) -> common.Server:
    port = common.free_port()
    worker: dict = {"type": "router", "realms": realms or [], "transports": [{
        "type": "web", "endpoint": {"type": "tcp", "port": port, "interface": "127.0.0.1"},
        "paths": paths}]}
    if components:
        worker["components"] = components
    cfg = {"version": 2, "controller": {}, "workers": [worker]}
    d = WORK / name
    cmd = common.geonode_cmd(common.write_config(d, "node.json", cfg), "--loglevel", "warning")
    env = env_for(item)
    server = common.Server(name, cmd, d, port, WORK / f"{name}.log",
                           env={k: v for k, v in env.items() if k in ("PYTHONPATH",
                                                                       "GEONODE_LIBS")})
    if item is None:
        server.env.pop("GEONODE_LIBS", None)
    server.start(timeout=60)
    return server


def start_upstream() -> common.Server:
    port = common.free_port()
    s = common.Server("upstream", [sys.executable, str(_UPSTREAM), str(port)], WORK, port,
                      WORK / "upstream.log")
    s.start(timeout=30)
    return s


def nodes_for(kind: str, item: str, upstream_port: int | None) -> list[common.Server]:
    out = []
    for name, variant in (("ours", None), (item, item)):
        if kind == "ws":
            paths = {"/": {"type": "websocket-testee", "options": {"compression": {}}}}
            out.append(_node(f"{kind}-{name}", variant, paths))
        elif kind == "http":
            out.append(_node(f"{kind}-{name}", variant, {"/": {"type": "json", "value": 42}}))
        elif kind == "static":
            www = WORK / "www"
            www.mkdir(parents=True, exist_ok=True)
            (www / "small.txt").write_bytes(b"x" * 4096)
            (www / "big.bin").write_bytes(os.urandom(1 << 20))
            out.append(_node(f"{kind}-{name}", variant,
                             {"/": {"type": "static", "directory": str(www)}}))
        elif kind == "proxy":
            out.append(_node(f"{kind}-{name}", variant, {"/": {
                "type": "reverseproxy", "host": "127.0.0.1", "port": upstream_port}}))
        elif kind == "restcallee":
            realm = {"name": "realm1", "roles": [{"name": "backend", "permissions": [
                {"uri": "", "match": "prefix",
                 "allow": {"call": True, "register": True, "publish": True,
                           "subscribe": True}}]}]}
            comps = [{"type": "class", "classname": "crossbar.bridge.rest.RESTCallee",
                      "realm": "realm1", "role": "backend",
                      "extra": {"procedure": "com.example.rest", "concurrency": 64,
                                "baseurl": f"http://127.0.0.1:{upstream_port}/api/"}}]
            out.append(_node(f"{kind}-{name}", variant,
                             {"/": {"type": "json", "value": 1},
                              "call": {"type": "caller", "realm": "realm1",
                                       "role": "backend"}},
                             components=comps, realms=[realm]))
    return out


CALL_LUA = HERE / "call.lua"


def node_round(kind: str, server: common.Server, duration: float) -> tuple[float, float, str]:
    """(ops/s, node CPU µs per op, unit) for one round against ``server``."""
    cpu0 = server.cpu_s()
    if kind == "ws":
        bench_echo = _ws_bench().bench_echo
        t = time.perf_counter()
        rate, _ = bench_echo(server.port, 20000, 50, 0)
        ops = rate * (time.perf_counter() - t)
        cpu = server.cpu_s() - cpu0
        return rate, cpu / ops * 1e6, "echoes"
    if kind == "wsbig":
        _, mib = _ws_bench().bench_echo(server.port, 1, 1, 20)
        cpu = server.cpu_s() - cpu0
        return mib, cpu / (20 * 8) * 1e6, "MiB"
    url = server.url
    script = None
    if kind == "static":
        url += "small.txt"
    elif kind == "static1m":
        url += "big.bin"
    elif kind == "proxy":
        url += "x"
    elif kind == "restcallee":
        url += "call"
        script = CALL_LUA
        _check_call(url)
    w = common.wrk(url, 1, 16, duration, script)
    if w.problems or not w.requests:
        raise RuntimeError(f"{server.name}: wrk {url}: {w.problems or 'no requests'}")
    cpu = server.cpu_s() - cpu0
    return w.rps, cpu / w.requests * 1e6, "requests"


def _check_call(url: str) -> None:
    """The caller bridge answers 200 for a WAMP error too: make sure the call really works."""
    import urllib.request

    req = urllib.request.Request(url, data=CALL_LUA.read_text().split("'")[1].encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        answer = json.loads(r.read())
    if answer.get("error") or answer["args"][0]["code"] != 200:
        raise RuntimeError(f"{url}: {answer}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated items: " + ", ".join(ITEMS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per wrk round")
    ap.add_argument("--no-node", action="store_true", help="in-process loads only")
    ap.add_argument("--no-inproc", action="store_true", help="node loads only")
    args = ap.parse_args()
    common.require_wrk()
    WORK.mkdir(parents=True, exist_ok=True)
    items = args.only.split(",") if args.only else list(ITEMS)
    results: dict = {}
    with common.LoadSampler() as load:
        for item in items:
            loads, node_kind = ITEMS[item]
            res = results[item] = {}
            if not args.no_inproc:
                for name, n in loads:
                    ours, lib = [], []
                    for rnd in range(args.rounds):
                        order = ((None, ours), (item, lib))
                        for variant, acc in (order if rnd % 2 == 0 else order[::-1]):
                            acc.append(inproc(variant, name, n))
                    mo, ml = common.median(ours), common.median(lib)
                    res[f"inproc:{name}"] = {"ours": ours, "lib": lib, "ratio": ml / mo}
                    print(f"{item:13} in-process {name:8} CPU µs/op: ours {mo:8.2f}  "
                          f"{item} {ml:8.2f}  lib/ours {ml / mo:5.2f}   "
                          f"(rounds ours {fmt(ours)}; lib {fmt(lib)})", flush=True)
            if args.no_node:
                continue
            upstream = start_upstream() if node_kind in ("proxy", "restcallee") else None
            servers = nodes_for(node_kind, item, upstream.port if upstream else None)
            kinds = {"ws": ["ws", "wsbig"], "static": ["static", "static1m"]}.get(
                node_kind, [node_kind])
            try:
                for kind in kinds:
                    for s in servers:   # warm-up
                        node_round(kind, s, 1)
                    samples: dict[str, list[tuple[float, float]]] = {s.name: [] for s in servers}
                    for rnd in range(args.rounds):
                        for s in (servers if rnd % 2 == 0 else servers[::-1]):
                            rate, cpu, unit = node_round(kind, s, args.duration)
                            samples[s.name].append((rate, cpu))
                    (on, o), (ln, li) = samples.items()
                    ro, co = common.median(r for r, _ in o), common.median(c for _, c in o)
                    rl, cl = common.median(r for r, _ in li), common.median(c for _, c in li)
                    res[f"node:{kind}"] = {"ours": o, "lib": li, "ratio": cl / co,
                                           "rate_ratio": ro / rl, "unit": unit}
                    print(f"{item:13} node       {kind:8} {unit}/s: ours {ro:9.0f}  {item} "
                          f"{rl:9.0f}  ours/lib {ro / rl:5.2f};  node CPU µs/op: ours "
                          f"{co:8.1f}  {item} {cl:8.1f}  lib/ours {cl / co:5.2f}", flush=True)
            finally:
                for s in servers:
                    s.stop()
                if upstream:
                    upstream.stop()
    print(f"load average during the run: {load.summary()}")
    (WORK / "speed.json").write_text(json.dumps(results, indent=1))
    return 0


def fmt(values: list[float]) -> str:
    return " ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
