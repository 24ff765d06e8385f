#!/usr/bin/env python3
"""HTTP benchmark: the seed's Flask app (samples/flask) under several servers, side by side.

    python bench/http/run.py                      # everything, 3 rounds of wrk -t2 -c50 -d10s
    python bench/http/run.py --crossbar /path/to/venv/bin/crossbar --rounds 1 --duration 5

Servers (all on loopback, one process/worker each, the same app):
  geonode            python -m geonode node.json                      (the repo's root node.json)
  crossbar           crossbar start --cbdir DIR                        (DIR/config.json = same node)
  gunicorn-gevent    gunicorn -k gevent myapp:app
  gunicorn-geonode   gunicorn -k geonode.gunicorn.GeventWorker "geonode:load('node.json')"
  gunicorn-geonode-app  gunicorn -k geonode.gunicorn.GeventWorker myapp:app

The wrk rounds are interleaved (round 1 of every server, then round 2, …) so a noisy moment
hits every row alike; medians and ratios are printed. Then start-up (process launch to the
first 200 answer for GET /) and resident memory after warm-up (RSS of the whole process tree)
for geonode and Crossbar, and the dev server's restart time after an edit of the app.

Crossbar comes from PyPI in its own venv: --crossbar PATH, else $CROSSBAR, else
bench/.work/crossbar-venv (created with ``pip install crossbar`` on first use).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK_ROOT = ROOT / "bench" / ".work" / "http"
#: this run's folder (configs, logs, results): two runs at once must not share a Crossbar cbdir
WORK = WORK_ROOT / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
SAMPLE = ROOT / "samples" / "flask"
PY = sys.executable

TARGETS = {"crossbar": 3.0, "gunicorn-gevent": 1.0}
STARTUP_TARGET = 1.0  # seconds
RSS_TARGET = 60.0  # MB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return r.status == 200
    except OSError:
        return False


def node_config(port: int) -> dict:
    """The repo's root node.json on ``port``, its pythonpath made absolute (Crossbar resolves
    relative paths against its cbdir, geonode against the config's folder)."""
    cfg = json.loads((ROOT / "node.json").read_text())
    for worker in cfg["workers"]:
        opts = worker.setdefault("options", {})
        opts["pythonpath"] = [str(SAMPLE)]
        for t in worker.get("transports", []):
            t["endpoint"]["port"] = port
            t["endpoint"]["interface"] = "127.0.0.1"
    return cfg


def gunicorn_extra() -> list[str]:
    # gunicorn >= 24 shares one control socket in ~/.gunicorn between masters by default.
    from gunicorn.config import KNOWN_SETTINGS

    return ["--no-control-socket"] if any(s.name == "no_control_socket"
                                          for s in KNOWN_SETTINGS) else []


@dataclass
class Server:
    name: str
    cmd: list[str]
    cwd: Path
    port: int
    proc: subprocess.Popen | None = None
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # server CPU time per request
    errors: list[str] = field(default_factory=list)
    startup: float | None = None
    rss_mb: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 60.0) -> float:
        """Launch; return seconds until the first 200 for GET /."""
        log = open(WORK / f"{self.name}.log", "ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                     start_new_session=True)
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}), see "
                                   f"{WORK / (self.name + '.log')}")
            if http_ok(self.url, timeout=0.5):
                return time.perf_counter() - t0
            time.sleep(0.005)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout}s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants (Crossbar and gunicorn fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def tree_rss_mb(pid: int) -> float:
    """Resident memory of the process tree."""
    total_kb = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            pass
    return total_kb / 1024


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) used so far by the process tree."""
    ticks = 0
    for p in tree_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk(url: str, threads: int, conns: int, duration: float) -> tuple[float, int, str]:
    """(requests/s, requests, problems) of one wrk run."""
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration:g}s", url],
                         capture_output=True, text=True, timeout=duration + 60).stdout
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    problems = []
    for pat in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: (.*)"):
        e = re.search(pat, out)
        if e:
            problems.append(e.group(0).strip())
    return (float(m.group(1)) if m else 0.0), (int(n.group(1)) if n else 0), "; ".join(problems)


def ensure_crossbar(given: str | None) -> str | None:
    exe = given or os.environ.get("CROSSBAR")
    if exe:
        return exe
    venv = ROOT / "bench" / ".work" / "crossbar-venv"
    exe = str(venv / "bin" / "crossbar")
    if not Path(exe).exists():
        print(f"creating {venv} with crossbar from PyPI (once; a few minutes) …", flush=True)
        subprocess.run([PY, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "crossbar"], check=True)
    return exe


def make_servers(args: argparse.Namespace) -> list[Server]:
    WORK.mkdir(parents=True, exist_ok=False)
    servers: list[Server] = []
    want = set(args.only.split(",")) if args.only else None

    def add(name: str, build) -> None:
        if want is None or name in want:
            servers.append(build(name))

    def geonode(name: str) -> Server:
        port = free_port()
        d = WORK / "geonode"
        d.mkdir(exist_ok=True)
        (d / "node.json").write_text(json.dumps(node_config(port), indent=2))
        return Server(name, [PY, "-m", "geonode", str(d / "node.json")], d, port)

    def crossbar(name: str) -> Server:
        exe = ensure_crossbar(args.crossbar)
        port = free_port()
        d = WORK / "crossbar"
        d.mkdir(exist_ok=True)
        (d / "config.json").write_text(json.dumps(node_config(port), indent=2))
        return Server(name, [exe, "start", "--cbdir", str(d), "--loglevel", "warn"], d, port)

    def gunicorn_gevent(name: str) -> Server:
        port = free_port()
        return Server(name, [PY, "-m", "gunicorn", "-k", "gevent", "-w", "1", "-b",
                             f"127.0.0.1:{port}", *gunicorn_extra(), "myapp:app"], SAMPLE, port)

    def gunicorn_geonode(name: str) -> Server:
        port = free_port()
        d = WORK / "gunicorn-geonode"
        d.mkdir(exist_ok=True)
        (d / "node.json").write_text(json.dumps(node_config(port), indent=2))
        return Server(name, [PY, "-m", "gunicorn", "-k", "geonode.gunicorn.GeventWorker", "-w",
                             "1", "-b", f"127.0.0.1:{port}", *gunicorn_extra(),
                             "geonode:load('node.json')"], d, port)

    def gunicorn_worker_app(name: str) -> Server:
        # geonode's worker class with the bare Flask app: the worker alone vs -k gevent.
        port = free_port()
        return Server(name, [PY, "-m", "gunicorn", "-k", "geonode.gunicorn.GeventWorker", "-w",
                             "1", "-b", f"127.0.0.1:{port}", *gunicorn_extra(), "myapp:app"],
                      SAMPLE, port)

    add("geonode", geonode)
    if not args.skip_crossbar:
        add("crossbar", crossbar)
    add("gunicorn-gevent", gunicorn_gevent)
    add("gunicorn-geonode", gunicorn_geonode)
    add("gunicorn-geonode-app", gunicorn_worker_app)
    return servers


def measure_dev_restart(tries: int = 3) -> list[float]:
    """Seconds from saving an edit of the sample app to the first answer with the new text."""
    d = WORK / "dev"
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(SAMPLE, d, ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    cfg = node_config(port)
    cfg["workers"][0]["options"]["pythonpath"] = ["."]
    (d / "node.json").write_text(json.dumps(cfg))
    s = Server("dev", [PY, "-m", "geonode", "dev", "--loglevel", "warning", "node.json"], d, port)
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
                    with urllib.request.urlopen(s.url, timeout=0.5) as r:
                        if marker in r.read().decode():
                            break
                except OSError:
                    pass
                time.sleep(0.005)
            times.append(time.perf_counter() - t0)
            time.sleep(0.3)
    finally:
        s.stop()
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--crossbar", help="crossbar executable (default: $CROSSBAR or own venv)")
    p.add_argument("--skip-crossbar", action="store_true")
    p.add_argument("--only", help="comma-separated server names")
    p.add_argument("--startup-tries", type=int, default=3)
    args = p.parse_args()
    if not shutil.which("wrk"):
        print("wrk is needed (apt-get install wrk)", file=sys.stderr)
        return 2

    servers = make_servers(args)
    results: dict = {"wrk": f"-t{args.threads} -c{args.connections} -d{args.duration:g}s",
                     "servers": {}}
    try:
        # Start-up: fresh launches, stopped again, the median reported.
        for s in servers:
            times = []
            for _ in range(args.startup_tries):
                times.append(s.start())
                s.stop()
            s.startup = statistics.median(times)
            print(f"start-up  {s.name:<21} {s.startup:6.3f} s  (runs: "
                  f"{', '.join(f'{t:.3f}' for t in times)})", flush=True)
        for s in servers:
            s.start()
            wrk(s.url, args.threads, args.connections, 2)  # warm-up
            s.rss_mb = tree_rss_mb(s.proc.pid)
            print(f"RSS       {s.name:<21} {s.rss_mb:6.1f} MB (process tree, after warm-up)",
                  flush=True)
        for r in range(args.rounds):
            for s in servers:
                cpu0 = tree_cpu_s(s.proc.pid)
                rps, count, problems = wrk(s.url, args.threads, args.connections, args.duration)
                cpu = tree_cpu_s(s.proc.pid) - cpu0
                s.rps.append(rps)
                if count:
                    s.cpu_us.append(cpu / count * 1e6)
                if problems:
                    s.errors.append(problems)
                print(f"round {r + 1}   {s.name:<21} {rps:9.0f} req/s  "
                      f"{s.cpu_us[-1] if count else 0:6.0f} CPU µs/req {problems}", flush=True)
    finally:
        for s in servers:
            s.stop()

    print(f"\n== wrk {results['wrk']} on loopback, {args.rounds} rounds, medians ==")
    med = {s.name: statistics.median(s.rps) if s.rps else 0.0 for s in servers}
    g = med.get("geonode", 0.0)
    # CPU per request is steadier than req/s on a shared machine: a busy neighbour slows the
    # clock time of a round, hardly the CPU time the server spends per request.
    cpu = {s.name: statistics.median(s.cpu_us) if s.cpu_us else 0.0 for s in servers}
    gc = cpu.get("geonode", 0.0)
    print(f"{'server':<22}{'req/s':>10}{'geonode ×':>12}{'CPU µs/req':>12}{'geonode ×':>12}"
          f"{'start-up s':>12}{'RSS MB':>9}")
    for s in servers:
        ratio = g / med[s.name] if med[s.name] else float("nan")
        cratio = cpu[s.name] / gc if gc else float("nan")
        print(f"{s.name:<22}{med[s.name]:>10.0f}{ratio:>12.2f}{cpu[s.name]:>12.0f}"
              f"{cratio:>12.2f}{s.startup or 0:>12.3f}{s.rss_mb or 0:>9.1f}")
        results["servers"][s.name] = {"rps_median": med[s.name], "rps": s.rps,
                                      "cpu_us_per_request": s.cpu_us,
                                      "startup_s": s.startup, "rss_mb": s.rss_mb,
                                      "errors": s.errors}
    for row in ("gunicorn-geonode", "gunicorn-geonode-app"):
        if row in med and med.get("gunicorn-gevent"):
            print(f"{row} / gunicorn-gevent: {med[row] / med['gunicorn-gevent']:.2f}")

    print("\n== targets ==")
    by = {s.name: s for s in servers}
    for other, target in TARGETS.items():
        if other in med and med[other] and g:
            ratio = g / med[other]
            cratio = cpu[other] / gc if gc else float("nan")
            print(f"geonode ≥ {target}× {other:<16} {ratio:5.2f}×  "
                  f"{'ok' if ratio >= target else 'MISSED'}   (CPU per request: {cratio:.2f}×)")
    if "geonode" in by:
        s = by["geonode"]
        print(f"geonode start-up < {STARTUP_TARGET} s        {s.startup:5.3f} s  "
              f"{'ok' if s.startup < STARTUP_TARGET else 'MISSED'}")
        print(f"geonode RSS < {RSS_TARGET:.0f} MB            {s.rss_mb:5.1f} MB "
              f"{'ok' if s.rss_mb < RSS_TARGET else 'MISSED'}")
        dev = measure_dev_restart()
        results["dev_restart_s"] = dev
        print(f"dev server restart after an edit  {statistics.median(dev):5.3f} s  (runs: "
              f"{', '.join(f'{t:.3f}' for t in dev)}) "
              f"{'ok' if statistics.median(dev) < 2 else 'MISSED'}")
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nraw numbers: {WORK / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
