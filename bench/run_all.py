#!/usr/bin/env python3
"""Run every benchmark under bench/ one after the other and write bench/RESULTS.md.

    python bench/run_all.py --crossbar /path/to/bin/crossbar     # full run, ~10 minutes
    python bench/run_all.py --quick                               # one short round each
    python bench/run_all.py --only http,wamp

Each benchmark interleaves geonode and its competitors round by round and reports medians
(see bench/README.md); this script adds what the figures need to be read: the date, the
machine, the load average while each benchmark ran (sampled every 5 s: the machine may be
shared) and the load generator's CPU. Crossbar: ``--crossbar``, else $CROSSBAR, else the venv
common.py creates under bench/.work/cbvenv. Full logs: bench/.work/all/<time>/<bench>.log.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

BENCH = common.ROOT / "bench"
#: name, script, arguments of a full run, arguments of a --quick run
BENCHES = [
    ("http", "http/run.py", [], ["--rounds", "1", "--duration", "3", "--startup-tries", "1"]),
    # 5 runs, not 3: a run's latency p50 is bimodal here (e.g. 0.08 or 0.18 ms for geonode)
    ("wamp", "wamp/run.py", ["--runs", "5"], ["--runs", "1", "--duration", "1", "--scale", "1000"]),
    ("bridge", "bridge/run.py", [], ["--rounds", "1", "--duration", "2"]),
    ("websocket", "websocket/run.py", [], ["--rounds", "1", "--messages", "5000", "--big", "4"]),
    ("inprocess", "bridge/inprocess.py", [], ["--n", "5000"]),
    ("hostile-uri", "hostile/long_uri.py", [], ["--rounds", "1", "--sizes", "64,256"]),
    ("burst", "hostile/burst.py", [], ["--sizes", "100000", "--fanout", "0", "--slow-rate", "0"]),
    ("mqtt", "mqtt/run.py", [], ["--rounds", "1", "--duration", "2"]),
    ("workers", "workers/startup.py", ["--rounds", "5"], ["--rounds", "1", "--settle", "0.5"]),
    ("http-processes", "cluster/http_processes.py", [], ["--rounds", "1", "--duration", "3"]),
    ("upload", "services/upload.py", [], ["--rounds", "1", "--size-mib", "50"]),
    ("cluster", "cluster/run.py", [], ["--rounds", "1", "--sessions", "500", "--calls", "300"]),
]
# geonode's in-process hand-off and the hostile-input figures: no Crossbar counterpart
NO_CROSSBAR = {"inprocess", "hostile-uri", "burst", "http-processes", "upload"}
CLIENT = {"http": "wrk", "bridge": "wrk", "wamp": "bench/wamp/wire.py client",
          "burst": "raw-frame client", "mqtt": "bench/mqtt/wire.py client"}


def run(name: str, cmd: list[str], log: Path) -> tuple[int, str, float]:
    """Run one benchmark, its output to the console and ``log``: (exit code, load, seconds)."""
    print(f"\n==== {name}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    with common.LoadSampler() as load, open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=common.ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            sys.stdout.write(line)
            out.write(line)
        rc = proc.wait()
    return rc, load.summary(), time.perf_counter() - t0


def machine(crossbar: str | None, commit: str) -> list[str]:
    def first(path: str, key: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "?"

    def output(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=60).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    cb = "-"
    if crossbar:
        cb = output([str(Path(crossbar).parent / "python"), "-c",
                     "import crossbar; print(crossbar.__version__)"])
    mem_kb = first("/proc/meminfo", "MemTotal").split()[0]
    mem = f"{int(mem_kb) / 2**20:.1f} GiB" if mem_kb.isdigit() else "?"
    return [f"- CPU: {first('/proc/cpuinfo', 'model name')}, nproc {output(['nproc'])}, "
            f"memory {mem}",
            f"- Linux {platform.release()}, Python {platform.python_version()}, "
            f"Crossbar.io {cb}, {output(['wrk', '--version'])}",
            f"- geonode commit {commit} (when the run started)"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_crossbar_option(ap)
    ap.add_argument("--quick", action="store_true", help="one short round each (a smoke test)")
    ap.add_argument("--only", help="comma-separated: " + ",".join(b[0] for b in BENCHES))
    ap.add_argument("--out", default=str(BENCH / "RESULTS.md"))
    args = ap.parse_args(argv)
    crossbar = None if args.no_crossbar else common.crossbar_exe(args.crossbar)
    cb_args = ["--no-crossbar"] if crossbar is None else ["--crossbar", crossbar]
    want = set(args.only.split(",")) if args.only else None
    work = common.WORK / "all" / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    commit = subprocess.run(["git", "-C", str(common.ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    sections = []
    with common.LoadSampler() as overall:
        for name, script, full, quick in BENCHES:
            if want and name not in want:
                continue
            summary = work / f"{name}.json"
            cmd = [common.PY, str(BENCH / script), *(quick if args.quick else full),
                   *([] if name in NO_CROSSBAR else cb_args), "--summary", str(summary)]
            rc, load, took = run(name, cmd, work / f"{name}.log")
            data = json.loads(summary.read_text()) if summary.exists() else None
            sections.append((name, cmd, rc, load, took, data))

    lines = ["# Benchmark results", "",
             f"Written by `bench/run_all.py{' --quick' if args.quick else ''}` on {started} "
             f"(took {sum(s[4] for s in sections) / 60:.0f} min). Medians of interleaved "
             "rounds (geonode and its competitor alternate, so a noisy moment hits both); "
             "`geonode ×` > 1 means geonode is better (more per second, or less time/memory). "
             "What each row measures: bench/README.md.", "",
             "Machine:", "", *machine(crossbar, commit),
             f"- load average (1 min) during the whole run: {overall.summary()}", ""]
    kept = _earlier_sections(Path(args.out)) if want else {}
    ran = {s[0] for s in sections}
    for name, block in kept.items():
        if name not in ran:
            # --only: the other figures stay (hand-written sections too), marked with the run
            # they came from.
            lines += [block.rstrip("\n"), ""]
    for name, cmd, rc, load, took, data in sections:
        rel = " ".join(str(Path(c).relative_to(common.ROOT)) if c.startswith(str(common.ROOT))
                       else c for c in cmd[1:] if c != "--summary" and not c.endswith(".json"))
        head = f"`python {rel}`: {took:.0f} s, load average {load}"
        if data and data.get("client_cpu_max") is not None:
            head += (f"; load generator ({CLIENT.get(name, 'client')}) CPU at most "
                     f"{data['client_cpu_max']:.2f} cores")
        lines += [f"## {name}", "", head + ".", ""]
        if rc or not data:
            lines += [f"**failed** (exit code {rc}), see the log.", ""]
            continue
        lines += [*common.markdown_rows(data["rows"]), ""]
    Path(args.out).write_text("\n".join(lines))
    print(f"\nwrote {args.out}")
    return max((s[2] for s in sections), default=0)


def _earlier_sections(path: Path) -> dict[str, str]:
    """The ``## name`` sections of an earlier RESULTS.md, each marked with that run's date and
    commit (a partial run keeps the figures it did not measure again)."""
    import re

    if not path.exists():
        return {}
    text = path.read_text()
    when = re.search(r"on (\d{4}-\d\d-\d\d \d\d:\d\d UTC)", text)
    commit = re.search(r"geonode commit (\w+)", text)
    origin = (f"_Not re-run: figures of the run of {when.group(1) if when else '?'} "
              f"(geonode {commit.group(1) if commit else '?'})._")
    out = {}
    for block in text.split("\n## ")[1:]:
        name, _, body = block.partition("\n")
        body = body.strip("\n")
        if not body.startswith("_Not re-run"):
            body = f"{origin}\n\n{body}"
        out[name.strip()] = f"## {name.strip()}\n\n{body}\n"
    return out


if __name__ == "__main__":
    sys.exit(main())
