"""The router core's CPU per PUBLISH and per CALL, two checkouts interleaved (issue 11 item 5:
the state seam must cost a single process nothing).

    python bench/cluster/seam.py main=/work/main branch=.        # 9 rounds

No sockets: each round runs, in a fresh process per checkout (``PYTHONPATH=DIR``), a Router
with in-process peers that drop what they get (10 subscribers of one topic; one callee that
answers each INVOCATION at once), and measures the process CPU time of 30,000 PUBLISHes and of
30,000 CALLs. CPU time (not wall time) and one process: the machine's other jobs change the
figures far less than a socket benchmark's rates. Printed: per checkout the median µs per
operation, and per pair the median of the per-round ratios.

``--instructions``: instead, instructions per operation under valgrind's callgrind (the
machine's load does not change them): each operation run with n and 3n, the difference over
2n, once per checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
import txaio
txaio.use_asyncio()
from autobahn.wamp import message as m, role
from geonode.router import Router

N = int(sys.argv[1])
OPS = sys.argv[2].split(",") if len(sys.argv) > 2 else ["publish", "call"]
ROLES = dict(role.DEFAULT_CLIENT_ROLES)

class Drop:
    transport_details = {"type": "bench"}
    def send(self, msg):
        pass
    def close(self):
        pass

class Callee(Drop):
    session = None
    def send(self, msg):
        if type(msg) is m.Invocation:
            self.session.receive(m.Yield(msg.request, args=msg.args))

perm = {"uri": "", "match": "prefix", "allow": {"call": True, "register": True,
        "publish": True, "subscribe": True}, "cache": True}
router = Router({"realms": [{"name": "realm1", "roles": [{"name": "anonymous",
                                                          "permissions": [perm]}]}]}, None)

def join(peer):
    s = router.attach(peer)
    s.receive(m.Hello("realm1", ROLES))
    return s

subs = [join(Drop()) for _ in range(10)]
for i, s in enumerate(subs):
    s.receive(m.Subscribe(1, "com.bench.topic"))
pub = join(Drop())
callee_peer = Callee()
callee = join(callee_peer)
callee_peer.session = callee
callee.receive(m.Register(1, "com.bench.echo"))
caller = join(Drop())
out = {}
for name, make in (("publish", lambda i: m.Publish(i, "com.bench.topic", args=["x" * 40])),
                   ("call", lambda i: m.Call(i, "com.bench.echo", args=[i]))):
    if name not in OPS:
        continue
    session = pub if name == "publish" else caller
    for msg in [make(i + 1) for i in range(2000)]:   # warm-up: the same for every N
        session.receive(msg)
    msgs = [make(i + 10_001) for i in range(N)]
    t0 = time.process_time()
    for msg in msgs:
        session.receive(msg)
    out[name] = (time.process_time() - t0) / N * 1e6
print(json.dumps(out))
"""


def measure(tree: str, n: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    r = subprocess.run([sys.executable, "-c", CHILD, str(n)], capture_output=True, text=True,
                       env=env, timeout=600)
    if r.returncode:
        raise RuntimeError(f"{tree}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def instructions(tree: str, op: str, n: int) -> int:
    """Instructions of the whole CHILD run for ``op`` with ``n`` operations (callgrind)."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                        sys.executable, "-c", CHILD, str(n), op], capture_output=True,
                       text=True, env=env, timeout=3600)
    m = re.search(r"Collected : (\d+)", r.stderr)
    if r.returncode or not m:
        raise RuntimeError(f"{tree}: {r.stderr[-2000:]}")
    return int(m.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="+", metavar="NAME=DIR")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("-n", type=int, default=30_000)
    ap.add_argument("--instructions", action="store_true")
    args = ap.parse_args(argv)
    trees = dict(t.split("=", 1) for t in args.trees)
    names = list(trees)
    if args.instructions:
        n = min(args.n, 2000)
        per: dict[tuple[str, str], float] = {}
        for op in ("publish", "call"):
            for name in names:
                ir = [instructions(trees[name], op, k) for k in (n, 3 * n)]
                per[name, op] = (ir[1] - ir[0]) / (2 * n)
                print(f"{op} {name}: {per[name, op]:,.0f} instructions", flush=True)
            for name in names[1:]:
                print(f"  {name}/{names[0]}: x{per[name, op] / per[names[0], op]:.4f}")
        return 0
    results: dict[str, list[dict]] = {name: [] for name in names}
    for i in range(args.rounds):
        for name in (names if i % 2 == 0 else names[::-1]):
            results[name].append(measure(trees[name], args.n))
        print(f"round {i + 1}/{args.rounds}: " + ", ".join(
            f"{name} " + " ".join(f"{k} {v:.2f} µs" for k, v in results[name][-1].items())
            for name in names), flush=True)
    base = names[0]
    for op in ("publish", "call"):
        print(f"\n{op} (µs CPU per operation, median):")
        for name in names:
            print(f"  {name}: {statistics.median(r[op] for r in results[name]):.2f}")
        for name in names[1:]:
            ratios = [b[op] / a[op] for a, b in zip(results[base], results[name], strict=True)]
            print(f"  {name}/{base}: x{statistics.median(ratios):.3f} (per round: "
                  + " ".join(f"{x:.2f}" for x in ratios) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
