#!/usr/bin/env python3
"""HTTP benchmark: the seed's Flask app (samples/flask) under several servers, side by side.

    python bench/http/run.py                      # everything, 3 rounds of wrk -t2 -c50 -d10s
    python bench/http/run.py --crossbar /path/to/venv/bin/crossbar --rounds 1 --duration 5
    python bench/http/run.py --connections 10,50,200 --baseline DIR   # issue 15's comparison

Servers (all on loopback, one process/worker each, the same app):
  geonode            python -m geonode node.json                      (the repo's root node.json)
  crossbar           crossbar start --cbdir DIR                        (DIR/config.json = same node)
  gunicorn-gevent    gunicorn -k gevent myapp:app
  gunicorn-geonode   gunicorn -k geonode.gunicorn.GeventWorker "geonode:load('node.json')"
  gunicorn-geonode-app  gunicorn -k geonode.gunicorn.GeventWorker myapp:app
  geonode-hello      geonode with bench/http/hello.py instead of the Flask app (threads on)
  gunicorn-gevent-hello  gunicorn -k gevent hello:app
  geonode-base, geonode-base-hello   the same two geonode rows with another checkout's geonode
                     package (``--baseline DIR``, run with PYTHONPATH=DIR; e.g. ``git archive
                     <commit> geonode | tar -x -C DIR``)

The two hello rows measure each server's own cost per request; the Flask sample's rows minus
them is the app's share, and the "budget" lines say what a ratio target leaves the server.

The wrk rounds are interleaved (round 1 of every server at every ``--connections`` value, then
round 2, …) so a noisy moment hits every row alike; medians, ratios and wrk's p99 latency are
printed per concurrency. Then start-up (process launch to the
first 200 answer for GET /) and resident memory after warm-up (RSS of the whole process tree)
for geonode and Crossbar, and the dev server's restart time after an edit of the app.

Crossbar: --crossbar PATH, else $CROSSBAR, else
bench/.work/cbvenv (created with ``pip install crossbar`` on first use).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
from common import PY, ROOT, free_port  # noqa: E402

#: this run's folder (configs, logs, results): two runs at once must not share a Crossbar cbdir
WORK = common.WORK / "http" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
SAMPLE = ROOT / "samples" / "flask"
HERE = Path(__file__).resolve().parent

# Issue 15 (the earlier 3x Crossbar of issue 2 is withdrawn: the app alone holds the GIL for
# most of that budget). At every --connections value:
TARGETS = {"crossbar": 2.0, "gunicorn-gevent": 1.25}
# p99 latency at -c50: geonode's at most this times the other's
P99_TARGETS = {"crossbar": 0.6, "gunicorn-gevent": 1.0}
P99_AT = 50
HELLO_CPU_TARGET = 35.0  # µs of server CPU per request, geonode-hello
STARTUP_TARGET = 1.0  # seconds
RSS_TARGET = 60.0  # MB


def node_config(port: int, hello: bool = False) -> dict:
    """The repo's root node.json on ``port``, its pythonpath made absolute (Crossbar resolves
    relative paths against its cbdir, geonode against the config's folder); ``hello`` serves
    bench/http/hello.py at ``/`` instead of the Flask app."""
    cfg = json.loads((ROOT / "node.json").read_text())
    for worker in cfg["workers"]:
        opts = worker.setdefault("options", {})
        opts["pythonpath"] = [str(HERE if hello else SAMPLE)]
        for t in worker.get("transports", []):
            t["endpoint"]["port"] = port
            t["endpoint"]["interface"] = "127.0.0.1"
            root = t.get("paths", {}).get("/")
            if hello and root and root.get("type") == "wsgi":
                root.update(module="hello", object="app")
    return cfg


def gunicorn_extra() -> list[str]:
    # gunicorn >= 24 shares one control socket in ~/.gunicorn between masters by default.
    from gunicorn.config import KNOWN_SETTINGS

    return ["--no-control-socket"] if any(s.name == "no_control_socket"
                                          for s in KNOWN_SETTINGS) else []


@dataclass
class Row:
    """One server under test and its samples, per wrk concurrency."""
    server: common.Server
    rps: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    cpu_us: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    p99_ms: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    client_cpu: list[float] = field(default_factory=list)  # wrk's CPU, in cores
    errors: list[str] = field(default_factory=list)
    startup: float | None = None
    rss_mb: float | None = None

    @property
    def name(self) -> str:
        return self.server.name

    def start(self) -> float:
        """Launch; seconds until the first 200 for GET /."""
        url = self.server.url
        return self.server.start(lambda: common.http_status(url) == 200)


def server(name: str, cmd: list[str], cwd: Path, port: int,
           env: dict[str, str] | None = None) -> Row:
    return Row(common.Server(name, cmd, cwd, port, WORK / f"{name}.log", env=env))


def make_servers(args: argparse.Namespace) -> list[Row]:
    WORK.mkdir(parents=True, exist_ok=False)
    servers: list[Row] = []
    want = set(args.only.split(",")) if args.only else None
    gunicorn = [PY, "-m", "gunicorn", "-w", "1", *gunicorn_extra()]

    def add(name: str, build) -> None:
        if want is None or name in want:
            servers.append(build(name))

    def geonode(name: str) -> Row:
        port = free_port()
        cfg = common.write_config(WORK / name, "node.json",
                                  node_config(port, hello=name.endswith("-hello")))
        env = {"PYTHONPATH": str(Path(args.baseline).resolve())} if "-base" in name else None
        return server(name, common.geonode_cmd(cfg), cfg.parent, port, env)

    def crossbar(name: str) -> Row:
        exe = common.crossbar_exe(args.crossbar)
        port = free_port()
        cfg = common.write_config(WORK / name, "config.json", node_config(port))
        return server(name, common.crossbar_cmd(exe, cfg.parent), cfg.parent, port)

    def gunicorn_gevent(name: str) -> Row:
        port = free_port()
        hello = name.endswith("-hello")
        return server(name, [*gunicorn, "-k", "gevent", "-b", f"127.0.0.1:{port}",
                             "hello:app" if hello else "myapp:app"],
                      HERE if hello else SAMPLE, port)

    def gunicorn_geonode(name: str) -> Row:
        port = free_port()
        cfg = common.write_config(WORK / name, "node.json", node_config(port))
        return server(name, [*gunicorn, "-k", "geonode.gunicorn.GeventWorker", "-b",
                             f"127.0.0.1:{port}", "geonode:load('node.json')"], cfg.parent, port)

    def gunicorn_worker_app(name: str) -> Row:
        # geonode's worker class with the bare Flask app: the worker alone vs -k gevent.
        port = free_port()
        return server(name, [*gunicorn, "-k", "geonode.gunicorn.GeventWorker", "-b",
                             f"127.0.0.1:{port}", "myapp:app"], SAMPLE, port)

    add("geonode", geonode)
    if args.baseline:
        add("geonode-base", geonode)
    if not args.no_crossbar:
        add("crossbar", crossbar)
    add("gunicorn-gevent", gunicorn_gevent)
    add("gunicorn-geonode", gunicorn_geonode)
    add("gunicorn-geonode-app", gunicorn_worker_app)
    if not args.no_hello:
        add("geonode-hello", geonode)
        if args.baseline:
            add("geonode-base-hello", geonode)
        add("gunicorn-gevent-hello", gunicorn_gevent)
    return servers


def budget_lines(rps: dict[str, float], cpu: dict[str, float]) -> list[str]:
    """What a ratio target over Crossbar leaves the server, per request, from this run's rows.

    The hosted app runs under the GIL, and so does every Python step of the server: one
    process serves at most one core's worth of Python, so ``target × Crossbar's req/s`` is
    a CPU budget per request, shared by the app and the server.
    """
    need = ("geonode", "crossbar", "geonode-hello")
    if any(not rps.get(k) or not cpu.get(k) or rps[k] != rps[k] for k in need):
        return []
    target = TARGETS["crossbar"]
    budget = 1e6 / (target * rps["crossbar"])
    app_share = cpu["geonode"] - cpu["geonode-hello"]
    lines = [
        f"{target:g}x crossbar = {target * rps['crossbar']:.0f} req/s = at most {budget:.0f} µs "
        "of CPU per request on one core",
        f"  the Flask app's share   {app_share:5.0f} µs  (geonode with the app minus "
        "geonode-hello)",
        f"  left for the server     {budget - app_share:5.0f} µs",
        f"  geonode's own cost      {cpu['geonode-hello']:5.0f} µs  (geonode-hello: HTTP, "
        "dispatch, pool hand-off, kernel)",
    ]
    if cpu.get("gunicorn-gevent-hello"):
        lines.append(f"  gunicorn -k gevent's    {cpu['gunicorn-gevent-hello']:5.0f} µs  "
                     "(gunicorn-gevent-hello)")
    cores = rps["geonode"] * cpu["geonode"] / 1e6
    lines.append(f"geonode used {cores:.2f} cores serving the Flask app (the GIL: ~1 at most "
                 "for Python work)")
    return lines


def measure_dev_restart(tries: int = 3) -> list[float]:
    """Seconds from saving an edit of the sample app to the first answer with the new text."""
    d = WORK / "dev"
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(SAMPLE, d, ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    cfg = node_config(port)
    cfg["workers"][0]["options"]["pythonpath"] = ["."]
    common.write_config(d, "node.json", cfg)
    s = server("dev", [PY, "-m", "geonode", "dev", "--loglevel", "warning", "node.json"], d, port)
    s.start()
    app = d / "myapp.py"
    source = app.read_text()
    times = []
    try:
        for i in range(tries):
            marker = f"edit {i}"
            app.write_text(source.replace('"Hello from"', f'"Hello from {marker}"'))
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 15:
                try:
                    with urllib.request.urlopen(s.server.url, timeout=0.5) as r:
                        if marker in r.read().decode():
                            break
                except OSError:
                    pass
                time.sleep(0.005)
            times.append(time.perf_counter() - t0)
            time.sleep(0.3)
    finally:
        s.server.stop()
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--connections", default="50",
                   help="wrk -c, or several comma-separated (each one interleaved per round)")
    p.add_argument("--threads", type=int, default=2)
    common.add_crossbar_option(p)
    p.add_argument("--only", help="comma-separated server names")
    p.add_argument("--baseline", metavar="DIR",
                   help="another checkout's geonode package: rows geonode-base(-hello)")
    p.add_argument("--no-hello", action="store_true",
                   help="skip the hello-world rows (the servers' own cost per request)")
    p.add_argument("--startup-tries", type=int, default=3)
    p.add_argument("--no-dev", action="store_true", help="skip the dev server's restart time")
    p.add_argument("--summary", help="write the summary rows (JSON) here, for run_all.py")
    args = p.parse_args(argv)
    common.require_wrk()
    conns = [int(c) for c in str(args.connections).split(",")]

    servers = make_servers(args)
    wrk_desc = f"-t{args.threads} -c{args.connections} -d{args.duration:g}s"
    results: dict = {"wrk": wrk_desc, "servers": {}}
    try:
        # Start-up: fresh launches, stopped again, the median reported.
        for s in servers:
            times = []
            for _ in range(args.startup_tries):
                times.append(s.start())
                s.server.stop()
            s.startup = statistics.median(times)
            print(f"start-up  {s.name:<21} {s.startup:6.3f} s  (runs: "
                  f"{', '.join(f'{t:.3f}' for t in times)})", flush=True)
        for s in servers:
            s.start()
            common.wrk(s.server.url, args.threads, max(conns), 2)  # warm-up
            s.rss_mb = s.server.rss_mb()
            print(f"RSS       {s.name:<21} {s.rss_mb:6.1f} MB (process tree, after warm-up)",
                  flush=True)
        for r in range(args.rounds):
            for c in conns:
                for s in servers:
                    cpu0 = s.server.cpu_s()
                    w = common.wrk(s.server.url, args.threads, c, args.duration, latency=True)
                    cpu = s.server.cpu_s() - cpu0
                    s.rps[c].append(w.rps)
                    if w.requests:
                        s.cpu_us[c].append(cpu / w.requests * 1e6)
                    if w.p99_ms is not None:
                        s.p99_ms[c].append(w.p99_ms)
                    if w.problems:
                        s.errors.append(f"-c{c}: {w.problems}")
                    s.client_cpu.append(w.cpu)
                    print(f"round {r + 1} -c{c:<4} {s.name:<21} {w.rps:9.0f} req/s  "
                          f"{s.cpu_us[c][-1] if w.requests else 0:6.0f} CPU µs/req  "
                          f"p99 {w.p99_ms or 0:7.2f} ms  wrk CPU {w.cpu:.2f} cores {w.problems}",
                          flush=True)
    finally:
        for s in servers:
            s.server.stop()

    by = {s.name: s for s in servers}
    summary: list[dict] = []
    verdicts: list[str] = []
    for c in conns:
        print(f"\n== wrk -t{args.threads} -c{c} -d{args.duration:g}s on loopback, "
              f"{args.rounds} rounds, medians ==")
        med = {s.name: common.median(s.rps[c]) for s in servers}
        # CPU per request is steadier than req/s on a shared machine: a busy neighbour slows
        # the clock time of a round, hardly the CPU time the server spends per request.
        cpu = {s.name: common.median(s.cpu_us[c]) for s in servers}
        p99 = {s.name: common.median(s.p99_ms[c]) for s in servers}
        g, gc, gp = med.get("geonode", 0.0), cpu.get("geonode", 0.0), p99.get("geonode", 0.0)
        print(f"{'server':<22}{'req/s':>10}{'geonode ×':>12}{'CPU µs/req':>12}{'geonode ×':>12}"
              f"{'p99 ms':>9}{'start-up s':>12}{'RSS MB':>9}")
        for s in servers:
            print(f"{s.name:<22}{med[s.name]:>10.0f}{common.ratio(g, med[s.name]):>12.2f}"
                  f"{cpu[s.name]:>12.0f}{common.ratio(gc, cpu[s.name], False):>12.2f}"
                  f"{p99[s.name]:>9.2f}{s.startup or 0:>12.3f}{s.rss_mb or 0:>9.1f}")
            row = results["servers"].setdefault(s.name, {
                "startup_s": s.startup, "rss_mb": s.rss_mb, "errors": s.errors,
                "wrk_cpu_cores": s.client_cpu, "by_connections": {}})
            row["by_connections"][c] = {"rps_median": med[s.name], "rps": s.rps[c],
                                        "cpu_us_per_request": s.cpu_us[c],
                                        "p99_ms": s.p99_ms[c]}
        for row in ("gunicorn-geonode", "gunicorn-geonode-app"):
            if row in med and med.get("gunicorn-gevent"):
                print(f"{row} / gunicorn-gevent: {med[row] / med['gunicorn-gevent']:.2f}")
        for new, base in (("geonode", "geonode-base"), ("geonode-hello", "geonode-base-hello")):
            if med.get(new) and med.get(base):
                print(f"{new} / {base}: req/s {med[new] / med[base]:.2f}×, CPU per request "
                      f"{cpu[new] / cpu[base]:.2f}×, p99 {p99[new] / p99[base]:.2f}×")

        budget = budget_lines(med, cpu)
        if budget:
            print("\n".join(budget))
            results.setdefault("budget", {})[c] = budget

        label = f" -c{c}" if len(conns) > 1 else ""
        for other, target in TARGETS.items():
            if other in med and med[other] and g:
                rps_ratio = common.ratio(g, med[other])
                summary.append(common.compare(f"HTTP Flask sample{label}", "req/s", g, other,
                                              med[other], target=target))
                summary.append(common.compare(f"HTTP server CPU per request{label}", "µs", gc,
                                              other, cpu[other], higher_is_better=False))
                verdicts.append(f"-c{c:<4} geonode ≥ {target}× {other:<16} {rps_ratio:5.2f}×  "
                                f"{'ok' if rps_ratio >= target else 'MISSED'}   (CPU per "
                                f"request: {common.ratio(gc, cpu[other], False):.2f}×)")
        if c == P99_AT and gp:
            for other, target in P99_TARGETS.items():
                if p99.get(other):
                    r = gp / p99[other]
                    summary.append(common.compare(f"HTTP p99 latency -c{c}", "ms", gp, other,
                                                  p99[other], higher_is_better=False))
                    verdicts.append(f"-c{c:<4} geonode p99 ≤ {target}× {other:<13} {r:5.2f}×  "
                                    f"{'ok' if r <= target else 'MISSED'}   ({gp:.2f} vs "
                                    f"{p99[other]:.2f} ms)")
        hc = cpu.get("geonode-hello")
        if hc:
            summary.append(common.absolute(f"geonode-hello server CPU per request{label}", "µs",
                                           hc, HELLO_CPU_TARGET))
            verdicts.append(f"-c{c:<4} geonode-hello CPU ≤ {HELLO_CPU_TARGET:g} µs/request   "
                            f"{hc:5.1f} µs  {'ok' if hc <= HELLO_CPU_TARGET else 'MISSED'}")

    print("\n== targets ==")
    print("\n".join(verdicts))
    if "geonode" in by:
        s = by["geonode"]
        cb = by.get("crossbar")
        summary.append(common.absolute("geonode start-up", "s", s.startup, STARTUP_TARGET,
                                       cb.startup if cb else None, "crossbar" if cb else ""))
        summary.append(common.absolute("geonode RSS after warm-up", "MB", s.rss_mb, RSS_TARGET,
                                       cb.rss_mb if cb else None, "crossbar" if cb else ""))
        print(f"geonode start-up < {STARTUP_TARGET} s        {s.startup:5.3f} s  "
              f"{'ok' if s.startup < STARTUP_TARGET else 'MISSED'}")
        print(f"geonode RSS < {RSS_TARGET:.0f} MB            {s.rss_mb:5.1f} MB "
              f"{'ok' if s.rss_mb < RSS_TARGET else 'MISSED'}")
        if not args.no_dev:
            dev = measure_dev_restart()
            results["dev_restart_s"] = dev
            summary.append(common.absolute("dev server restart after an edit", "s",
                                           statistics.median(dev), 2.0))
            print(f"dev server restart after an edit  {statistics.median(dev):5.3f} s  (runs: "
                  f"{', '.join(f'{t:.3f}' for t in dev)}) "
                  f"{'ok' if statistics.median(dev) < 2 else 'MISSED'}")
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    common.write_summary(args.summary, "http", summary, wrk=wrk_desc, rounds=args.rounds,
                         client_cpu_max=max((c for s in servers for c in s.client_cpu),
                                            default=None))
    print(f"\nraw numbers: {WORK / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
