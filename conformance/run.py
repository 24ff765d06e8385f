#!/usr/bin/env python3
"""Autobahn|Testsuite conformance of geonode's WebSocket layer, driven by kosoku.

Starts ``python -m geonode`` with a ``websocket-testee`` path on ``/`` (a free loopback port),
runs ``kosoku -m fuzzingclient`` against it (the whole suite unless ``-i``/``-x`` are given),
then prints the count of each behaviour, every case that is not OK/NON-STRICT/INFORMATIONAL,
and the runtime. Exit status 0 only when every case passed.

    python conformance/run.py                 # full suite, 4 cases in parallel
    python conformance/run.py -i '6.*' -p 2   # a subset
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support import free_port, geonode_cmd, wait_port, web_node  # noqa: E402
from support.nodes import start_process  # noqa: E402

PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}


def node_config(port: int, options: dict | None = None) -> dict:
    path: dict = {"type": "websocket-testee"}
    if options:
        path["options"] = options
    return web_node({"/": path}, port=port)


def kosoku_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "kosoku"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from kosoku._cli import main; sys.exit(main())"]


def summarize(outdir: Path) -> tuple[collections.Counter, dict[str, dict]]:
    """Behaviour counts and the non-passing cases from kosoku's index.json."""
    index = json.loads((outdir / "index.json").read_text())
    counts: collections.Counter = collections.Counter()
    bad: dict[str, dict] = {}
    for cases in index.values():
        for case, result in cases.items():
            counts[result["behavior"]] += 1
            if result["behavior"] not in PASSING or result.get("behaviorClose") not in PASSING:
                bad[case] = result
    return counts, bad


def run(includes: list[str], excludes: list[str], parallel: int, workdir: Path,
        options: dict | None = None) -> tuple[collections.Counter, dict[str, dict], float]:
    """Run the cases against a fresh node; (counts, failures, seconds)."""
    port = free_port()
    cfg = workdir / "node.json"
    cfg.write_text(json.dumps(node_config(port, options), indent=2))
    node = start_process(geonode_cmd("--loglevel", "warning", str(cfg)), workdir,
                         workdir / "node.log")
    try:
        wait_port(port, node, timeout=20)
        outdir = workdir / "reports"
        cmd = kosoku_cmd() + ["-m", "fuzzingclient", "-p", str(parallel), "-o", str(outdir)]
        for pattern in includes:
            cmd += ["-i", pattern]
        for pattern in excludes:
            cmd += ["-x", pattern]
        t0 = time.monotonic()
        subprocess.run(cmd + [f"127.0.0.1:{port}"], cwd=workdir, check=False,
                       stdout=subprocess.DEVNULL)
        elapsed = time.monotonic() - t0
        counts, bad = summarize(outdir)
        return counts, bad, elapsed
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            node.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-i", "--include", action="append", default=[], help="case glob (repeatable)")
    ap.add_argument("-x", "--exclude", action="append", default=[], help="case glob to skip")
    ap.add_argument("-p", "--parallel", type=int, default=4)
    ap.add_argument("-o", "--outdir", help="keep the node log and kosoku reports here")
    args = ap.parse_args()
    if args.outdir:
        workdir = Path(args.outdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        tmp = None
    else:
        tmp = tempfile.TemporaryDirectory(prefix="geonode-conformance-")
        workdir = Path(tmp.name)
    try:
        counts, bad, elapsed = run(args.include, args.exclude, args.parallel, workdir)
    finally:
        if tmp is not None and not os.environ.get("KEEP"):
            tmp.cleanup()
    total = sum(counts.values())
    print(f"kosoku fuzzingclient against geonode websocket-testee: {total} cases "
          f"in {elapsed:.1f} s (-p {args.parallel})")
    for behavior, n in sorted(counts.items()):
        print(f"  {behavior:14} {n}")
    for case, result in sorted(bad.items()):
        print(f"  NOT PASSING {case}: {result['behavior']} / {result.get('behaviorClose')}")
    passed = total - len(bad)
    print(f"passing (OK, NON-STRICT, INFORMATIONAL): {passed}/{total}")
    return 0 if total and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
