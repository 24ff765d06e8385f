#!/usr/bin/env python3
"""The node's cost of one WAMP join (upgrade, HELLO/WELCOME, SUBSCRIBE), deterministically.

    python bench/sessions/join_cost.py --trees main=/work/main,this=.           # instructions
    python bench/sessions/join_cost.py --profile --trees this=.                 # cProfile, gc
    python bench/sessions/join_cost.py --trees main=/work/main,this=. -n 400 --warm 100

Instructions (the default): ``python -m geonode`` (a WebSocket path, json, realm1) runs under
``valgrind --tool=callgrind``; this process opens ``--warm`` sessions with the lean raw-frame
generator of ``fill.py`` (``bench/wamp/loads.idle_sessions``: upgrade, HELLO, SUBSCRIBE, each
session held open), zeroes the counters, opens ``-n`` more and dumps them: the node's
instructions per join. The generator runs in this process, never counted. Instruction counts
do not depend on what else the machine does: trust them over wall-clock rates. What the count
includes beside the joins: timers and the garbage collector's collections during the window
(the young and middle ones, and a full one when due: ``--n`` large enough amortizes it).

``--profile``: the node runs without valgrind, with a probe (``sitecustomize.py``) that on
SIGUSR1 writes the gc-tracked objects (count and by type, frozen ones too: everything is
frozen afterwards) and on SIGUSR2 starts/stops cProfile:
printed are the functions with the most own time over ``-n`` joins and the gc-tracked objects
each idle joined session adds (by type): what a full collection walks per session.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT / "bench" / "wamp"), str(ROOT / "bench"),
                str(ROOT / "bench" / "observability"), str(ROOT / "tests")]

import loads  # noqa: E402
import wire  # noqa: E402
from fill import node_config  # noqa: E402
from support.net import free_port, wait_port  # noqa: E402
from wire_instructions import control, dumped_total, stop_node  # noqa: E402

SLOW = 600.0   # s: a node under valgrind on a busy machine answers late, not never

PROBE = """\
import collections, cProfile, gc, json, os, signal
_out = os.environ["GEONODE_JOIN_PROBE"]
_prof = [None, 0]
def _objects(signum, frame):
    gc.collect()
    gc.unfreeze()   # the frozen ones too (start-up's, and the freeze policy's)
    objs = gc.get_objects()
    by = collections.Counter(type(o).__qualname__ for o in objs)
    gc.freeze()
    with open(_out + ".gc.%d" % len(os.listdir(os.path.dirname(_out))), "w") as f:
        json.dump({"n": len(objs), "by": by}, f)
def _profile(signum, frame):
    if _prof[0] is None:
        _prof[0] = cProfile.Profile()
        _prof[0].enable()
    else:
        _prof[0].disable()
        _prof[0].dump_stats(_out + ".prof")
        _prof[0] = None
signal.signal(signal.SIGUSR1, _objects)
signal.signal(signal.SIGUSR2, _profile)
"""


def start_node(tree: str, folder: Path, valgrind: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    (folder / "node.json").write_text(json.dumps(node_config(port, hard - 100)))
    env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()), PYTHONHASHSEED="0")
    cmd = [sys.executable, "-m", "geonode", "--loglevel", "warning", "node.json"]
    if valgrind:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/cg.%p"] + cmd
    else:
        (folder / "probe").mkdir()
        (folder / "probe" / "sitecustomize.py").write_text(PROBE)
        (folder / "out").mkdir()
        env["PYTHONPATH"] = f"{folder / 'probe'}{os.pathsep}{env['PYTHONPATH']}"
        env["GEONODE_JOIN_PROBE"] = str(folder / "out" / "probe")
    proc = subprocess.Popen(cmd, env=env, cwd=folder, stdout=open(folder / "node.log", "w"),
                            stderr=subprocess.STDOUT)
    wait_port(port, proc, timeout=300 if valgrind else 30)
    return proc, port


def open_sessions(port: int, n: int, batch: int) -> list:
    wire.TIMEOUT = SLOW   # read at each connection's open
    return loads.idle_sessions(("127.0.0.1", port, "/ws"), "json", n, batch)


def instructions(tree: str, n: int, warm: int, batch: int, work: Path) -> float:
    folder = Path(tempfile.mkdtemp(prefix="join-cg-", dir=work))
    proc, port = start_node(tree, folder, valgrind=True)
    held = []
    try:
        held += open_sessions(port, warm, batch)
        control(proc.pid, "-z")
        held += open_sessions(port, n, batch)
        control(proc.pid, "-d")
        return dumped_total(folder, proc.pid) / n
    finally:
        for c in held:
            c.sock.close()
        stop_node(proc)


def _wait_file(folder: Path, pattern: str, count: int, proc: subprocess.Popen) -> list[Path]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        got = sorted(folder.glob(pattern))
        if len(got) >= count:
            time.sleep(0.2)   # written by now (one write of a small file)
            return got
        if proc.poll() is not None:
            raise RuntimeError("the node exited")
        time.sleep(0.05)
    raise RuntimeError(f"the probe wrote no {pattern}")


def profile(tree: str, n: int, warm: int, batch: int, work: Path, top: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="join-prof-", dir=work))
    proc, port = start_node(tree, folder, valgrind=False)
    out = folder / "out"
    held = []
    try:
        held += open_sessions(port, warm, batch)
        proc.send_signal(signal.SIGUSR1)
        _wait_file(out, "probe.gc.*", 1, proc)
        proc.send_signal(signal.SIGUSR2)
        time.sleep(0.5)   # the hub checks for signals every few hundred ms at most
        held += open_sessions(port, n, batch)
        proc.send_signal(signal.SIGUSR2)
        _wait_file(out, "probe.prof", 1, proc)
        proc.send_signal(signal.SIGUSR1)
        g0, g1 = (json.loads(p.read_text()) for p in _wait_file(out, "probe.gc.*", 2, proc))
        print(f"--- {tree}: gc-tracked objects per idle joined session: "
              f"{(g1['n'] - g0['n']) / n:.1f}")
        diff = {k: (v - g0["by"].get(k, 0)) / n for k, v in g1["by"].items()}
        for k, v in sorted(diff.items(), key=lambda kv: -kv[1]):
            if abs(v) >= 0.05:
                print(f"  {v:6.2f}  {k}")
        print(f"--- {tree}: cProfile over {n} joins (own time, top {top}); the node's CPU under "
              "cProfile is several times its own")
        st = pstats.Stats(str(out / "probe.prof"))
        st.sort_stats("tottime").print_stats(top)
    finally:
        for c in held:
            c.sock.close()
        stop_node(proc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", default=f"this={ROOT}",
                    help="NAME=CHECKOUT,... measured one after the other, --repeat times")
    ap.add_argument("-n", type=int, default=400, help="joins counted")
    ap.add_argument("--warm", type=int, default=100, help="joins before counting")
    ap.add_argument("--batch", type=int, default=50, help="handshakes in flight at once")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="cProfile and gc objects instead")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    trees = [t.split("=", 1) for t in args.trees.split(",")]
    work = Path(tempfile.mkdtemp(prefix="geonode-join-cost-"))
    if args.profile:
        for _, tree in trees:
            profile(tree, args.n, args.warm, args.batch, work, args.top)
        return 0
    got: dict[str, list[float]] = {name: [] for name, _ in trees}
    for _ in range(args.repeat):
        for name, tree in trees:
            got[name].append(instructions(tree, args.n, args.warm, args.batch, work))
            print(f"{name:8s} {got[name][-1]:12.0f} instructions per join", flush=True)
    base = min(got[trees[0][0]])
    for name, vals in got.items():
        print(f"{name:8s} min {min(vals):12.0f} instructions per join  x{min(vals) / base:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
