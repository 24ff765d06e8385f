#!/usr/bin/env python3
"""Instructions per operation (valgrind callgrind): what counting for the metrics adds.

    python bench/observability/instructions.py                  # base=/work/main, this tree
    python bench/observability/instructions.py --base /tmp/base --loads rpc,pubsub

Instruction counts do not depend on what else the machine is doing (CPU times on the busy
shared machine swing by +-30%; bench/observability/overhead.py gives those). Each load runs
under ``valgrind --tool=callgrind`` with ``n1`` and ``n2`` operations after the same warm-up;
instructions per op = (Ir(n2) - Ir(n1)) / (n2 - n1), so start-up and imports cancel out.

Loads (in one process, no sockets to other processes):
  http-off  pipelined keep-alive GETs through geonode's pywsgi Handler (bench/http/handler_cost)
  http-on   the same, the server counting requests (what a ``metrics`` path turns on)
  rpc       CALL -> INVOCATION -> YIELD -> RESULT through the router (peers that drop what
            they get: no serialization, so the router's share is all there is: an upper bound
            of the relative cost; over a WebSocket the same work is a smaller part)
  pubsub    PUBLISH to 10 subscribers through the router, same peers
The base checkout runs the same loads (http-on is the tree's only: base cannot count).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LOADS = {"http-off": (2000, 6000, 200), "http-on": (2000, 6000, 200),
         "rpc": (3000, 9000, 300), "pubsub": (3000, 9000, 300)}


# ---- the child: one load, n operations ---------------------------------------------------
class _Sink:
    """A Peer that keeps only the last message (what the load needs to answer)."""

    def __init__(self) -> None:
        self.transport_details = {"type": "bench", "peer": "bench"}
        self.last = None

    def send(self, msg) -> None:
        self.last = msg

    def close(self) -> None:
        pass


def _router_load(kind: str, n: int, warm: int) -> None:
    import txaio

    txaio.use_asyncio()
    from autobahn.wamp import message as m
    from autobahn.wamp import role

    from geonode.router import Router

    perm = {"uri": "", "match": "prefix", "cache": True,
            "allow": {"call": True, "register": True, "publish": True, "subscribe": True}}
    router = Router({"realms": [{"name": "r", "roles": [
        {"name": "anonymous", "permissions": [perm]}]}]}, None)
    roles = dict(role.DEFAULT_CLIENT_ROLES)

    def join():
        peer = _Sink()
        s = router.attach(peer)
        s.receive(m.Hello("r", roles))
        return s, peer

    if kind == "rpc":
        callee, cpeer = join()
        callee.receive(m.Register(1, "com.bench.add"))
        caller, _ = join()

        def op(i: int) -> None:
            caller.receive(m.Call(i, "com.bench.add", args=[i, 1]))
            callee.receive(m.Yield(cpeer.last.request, args=[i + 1]))
    else:
        for _ in range(10):
            sub, _ = join()
            sub.receive(m.Subscribe(1, "com.bench.topic"))
        pub, _ = join()

        def op(i: int) -> None:
            pub.receive(m.Publish(i, "com.bench.topic", args=[i]))
    for i in range(1, warm + 1):
        op(i)
    for i in range(warm + 1, warm + n + 1):
        op(i)


def _http_load(counting: bool, n: int, warm: int) -> None:
    from gevent import monkey

    monkey.patch_all()
    sys.path.insert(0, str(ROOT / "bench" / "http"))
    import handler_cost

    from geonode.web.handler import Handler

    server = handler_cost._Server
    if counting:
        from geonode.metrics import HttpStats

        class _Counting(handler_cost._Server):
            http_stats = HttpStats("bench")
        server = _Counting
    handler_cost.one_round(Handler, warm, server)
    handler_cost.one_round(Handler, n, server)


def child(load: str, n: int, warm: int) -> None:
    if load.startswith("http"):
        _http_load(load == "http-on", n, warm)
    else:
        _router_load(load, n, warm)


# ---- the parent ----------------------------------------------------------------------------
def instructions(tree: str, load: str, n: int, warm: int) -> int:
    env = dict(os.environ, PYTHONPATH=tree, PYTHONHASHSEED="0")   # same dict layouts each run
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                          sys.executable, str(Path(__file__).resolve()), "--child", load,
                          str(n), str(warm)],
                         env=env, capture_output=True, text=True, timeout=3600)
    m = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode or m is None:
        raise RuntimeError(f"callgrind {load} ({tree}) failed:\n{out.stderr[-2000:]}")
    return int(m.group(1))


def per_op(tree: str, load: str) -> float:
    n1, n2, warm = LOADS[load]
    return (instructions(tree, load, n2, warm) - instructions(tree, load, n1, warm)) / (n2 - n1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        child(argv[1], int(argv[2]), int(argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="/work/main")
    ap.add_argument("--loads", default="http-off,http-on,rpc,pubsub")
    args = ap.parse_args(argv)
    tree = str(ROOT)
    base_of = {"http-on": "http-off"}
    for load in args.loads.split(","):
        ours = per_op(tree, load)
        ref_load = base_of.get(load, load)
        base = per_op(args.base, ref_load)
        print(f"{load:9s} base {base:10.0f}  tree {ours:10.0f} instructions/op  "
              f"tree/base x{ours / base:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
