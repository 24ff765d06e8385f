"""Container worker start-up and memory, geonode against Crossbar (issue 12).

A router (one WebSocket path) and a container running a Twisted hello-world
``ApplicationSession``: the time from launching the node to the component's ``onJoin`` (it
prints a marker the node logs), and the RSS of the whole process tree (node + workers) once
it joined and settled. Rounds interleave geonode and Crossbar so load on the machine hits
both alike; medians are reported, with the ratio.

    python bench/workers/startup.py --rounds 5 [--crossbar /work/cbvenv/bin/crossbar]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

TARGET = 1.5  # seconds, issue 12
MARKER = "HELLO-COMPONENT-JOINED"
HELLO = f'''
from autobahn.twisted.wamp import ApplicationSession
from twisted.internet.defer import inlineCallbacks


class AppSession(ApplicationSession):
    @inlineCallbacks
    def onJoin(self, details):
        yield self.register(lambda x: x + 1, "com.example.add1")
        print("{MARKER}", flush=True)
'''


def config(port: int) -> dict:
    allow = {"call": True, "register": True, "publish": True, "subscribe": True}
    return {"version": 2, "workers": [
        {"type": "router",
         "realms": [{"name": "realm1", "roles": [{"name": "anonymous", "permissions": [
             {"uri": "", "match": "prefix", "allow": allow}]}]}],
         "transports": [{"type": "web", "endpoint": {"type": "tcp", "port": port},
                         "paths": {"ws": {"type": "websocket"}}}]},
        {"type": "container", "options": {"pythonpath": [".."]},
         "components": [{"type": "class", "classname": "hello.AppSession", "realm": "realm1",
                         "transport": {"type": "websocket", "url": f"ws://127.0.0.1:{port}/ws",
                                       "endpoint": {"type": "tcp", "host": "127.0.0.1",
                                                    "port": port}}}]}]}


def one(name: str, cmd_for, folder: Path, settle: float) -> tuple[float, float, float]:
    """(seconds to the component's join, tree RSS in MB after ``settle`` s, CPU seconds the
    tree used until the join: the load-independent part of the start-up)."""
    port = common.free_port()
    cbdir = folder / ".crossbar"
    common.write_config(cbdir, "config.json" if name == "crossbar" else "node.json",
                        config(port))
    (folder / "hello.py").write_text(HELLO)
    log = folder / f"{name}.log"
    log.write_text("")
    server = common.Server(name, cmd_for(cbdir), folder, port, log)
    try:
        joined = server.start(ready=lambda: MARKER in log.read_text(errors="replace"),
                              timeout=60)
        cpu = server.cpu_s()
        time.sleep(settle)
        return joined, server.rss_mb(), cpu
    finally:
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_crossbar_option(ap)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--settle", type=float, default=2.0, help="seconds before RSS is read")
    ap.add_argument("--summary")
    args = ap.parse_args()
    work = common.WORK / "workers"
    runners = {"geonode": lambda cbdir: common.geonode_cmd(cbdir / "node.json")}
    if not args.no_crossbar:
        exe = common.crossbar_exe(args.crossbar)
        runners["crossbar"] = lambda cbdir: [exe, "start", "--cbdir", str(cbdir),
                                             "--loglevel", "info"]
    results: dict[str, list[tuple[float, float, float]]] = {n: [] for n in runners}
    for r in range(args.rounds):
        for name, cmd_for in runners.items():
            t, rss, cpu = one(name, cmd_for, work / f"{name}{r}", args.settle)
            results[name].append((t, rss, cpu))
            print(f"round {r + 1} {name:<8} joined in {t:.2f} s (tree CPU {cpu:.2f} s), "
                  f"tree RSS {rss:.0f} MB", flush=True)
    med = {n: tuple(common.median(x[i] for x in v) for i in range(3))
           for n, v in results.items()}
    print()
    for n, (t, rss, cpu) in med.items():
        print(f"median {n:<8} start to component joined {t:.2f} s (tree CPU {cpu:.2f} s), "
              f"tree RSS {rss:.0f} MB")
    rows = [common.absolute("container: start to Twisted component joined", "s",
                            med["geonode"][0], TARGET,
                            med.get("crossbar", (None,))[0], "Crossbar")]
    if "crossbar" in med:
        g, c = med["geonode"], med["crossbar"]
        print(f"ratio (Crossbar / geonode): start-up {c[0] / g[0]:.2f}x, CPU to join "
              f"{c[2] / g[2]:.2f}x, RSS {c[1] / g[1]:.2f}x")
        rows.append(common.compare("container: node + container tree RSS", "MB", g[1],
                                   "Crossbar", c[1], higher_is_better=False))
    common.write_summary(args.summary, "workers", rows, rounds=args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
