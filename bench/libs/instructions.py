#!/usr/bin/env python3
"""Instructions per operation (valgrind callgrind), geonode's code vs the library adapters.

    python bench/libs/instructions.py                      # every item (~20 minutes)
    python bench/libs/instructions.py --only h11,urllib3

Instruction counts do not depend on what else the machine is doing, so they settle a
comparison that CPU times on a busy shared machine leave open. Each load of
bench/libs/inproc.py runs under ``valgrind --tool=callgrind`` twice, with ``n1`` and ``n2``
operations after the same warm-up; instructions per operation = (Ir(n2) - Ir(n1)) / (n2 - n1),
so start-up and imports cancel out. Only this process is counted: the upstream server of the
client/proxy loads runs natively in its own process (valgrind does not follow children).
(``perf stat -e instructions`` gives no counter in this VM; callgrind needs none.)
Needs valgrind (``apt-get install valgrind``) and ``pip install wsproto h11 urllib3``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SHIM = HERE / "shim"
OUT = ROOT / "bench" / ".work" / "libs"

# load -> (n1, n2, warm-up)
LOADS = {"ws": (2000, 6000, 200), "wsbig": (4, 12, 2), "http": (2000, 6000, 200),
         "head": (20000, 60000, 2000),
         "client": (300, 900, 50), "proxy": (300, 900, 50), "static": (1000, 3000, 100),
         "static1m": (20, 60, 5)}
ITEMS = {"wsproto": ["ws", "wsbig"], "h11": ["http", "head"], "urllib3": ["client"],
         "urllib3-nopool": ["client"], "urllib3-proxy": ["proxy"],
         "send_file": ["static", "static1m"], "shareddata": ["static", "static1m"]}


def instructions(item: str | None, load: str, n: int, warm: int) -> int:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("GEONODE_LIBS", None)
    if item is not None:
        env.update(PYTHONPATH=f"{ROOT}{os.pathsep}{SHIM}", GEONODE_LIBS=item)
    # sys.executable, not a launcher script: valgrind must run the interpreter itself
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                          sys.executable, str(HERE / "inproc.py"), load, str(n), str(warm)],
                         env=env, capture_output=True, text=True, timeout=3600)
    m = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode or m is None:
        raise RuntimeError(f"callgrind {load} ({item or 'ours'}) failed:\n{out.stderr[-2000:]}")
    return int(m.group(1))


def per_op(item: str | None, load: str) -> float:
    n1, n2, warm = LOADS[load]
    return (instructions(item, load, n2, warm) - instructions(item, load, n1, warm)) / (n2 - n1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated items: " + ", ".join(ITEMS))
    ap.add_argument("--loads", help="comma-separated loads: " + ", ".join(LOADS))
    args = ap.parse_args()
    items = args.only.split(",") if args.only else list(ITEMS)
    ours: dict[str, float] = {}
    results = {}
    for item in items:
        for load in ITEMS[item]:
            if args.loads and load not in args.loads.split(","):
                continue
            if load not in ours:
                ours[load] = per_op(None, load)
            lib = per_op(item, load)
            results[f"{item}:{load}"] = {"ours": ours[load], "lib": lib,
                                         "ratio": lib / ours[load]}
            print(f"{item:14} {load:9} instructions/op: ours {ours[load]:12,.0f}  "
                  f"{item} {lib:12,.0f}  lib/ours {lib / ours[load]:5.2f}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "instructions.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, **results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
