"""What every benchmark under bench/ needs: the Crossbar executable, server processes on
loopback, wrk, process-tree CPU and memory, medians and the summary rows run_all.py tabulates.

Import it from a script one folder down with
``sys.path.insert(0, str(Path(__file__).resolve().parents[1]))`` then ``import common``.
Free ports and port probes are the tests' own (``tests/support``, put on sys.path here).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

# common.free_port and common.port_open, as the scripts call them
from support.net import free_port, port_open  # noqa: E402, F401

WORK = ROOT / "bench" / ".work"  # git-ignored: configs, logs, raw numbers, the Crossbar venv
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- Crossbar ---------------------------------------------------------------------------------

def named_trees(specs: list[str]) -> dict[str, str]:
    """``NAME=CHECKOUT`` arguments (A/B scripts) as {name: absolute path}, in order; a
    malformed one is a clear error, not a traceback."""
    trees: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"{spec!r}: expected NAME=CHECKOUT (e.g. main=/work/main)")
        trees[name] = str(Path(path).resolve())
    return trees


def add_crossbar_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--crossbar", default=os.environ.get("CROSSBAR"),
                        help="crossbar executable (default: $CROSSBAR, else a venv made under "
                             "bench/.work/cbvenv with `pip install crossbar`)")
    parser.add_argument("--no-crossbar", action="store_true", help="geonode only")


def crossbar_exe(given: str | None) -> str:
    """``given``, else bench/.work/cbvenv/bin/crossbar, created from PyPI on first use."""
    if given:
        if not Path(given).exists():
            raise SystemExit(f"crossbar not found: {given}")
        return given
    venv = WORK / "cbvenv"
    exe = venv / "bin" / "crossbar"
    if not exe.exists():
        print(f"creating {venv} with `pip install crossbar` (once, a few minutes) ...",
              flush=True)
        subprocess.run([PY, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "crossbar"], check=True)
    return str(exe)


# -- servers ----------------------------------------------------------------------------------

def http_status(url: str, timeout: float = 0.5) -> int | None:
    """Status of GET ``url`` (body read), None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def write_config(directory: Path, filename: str, cfg: dict) -> Path:
    """``directory/filename`` holding ``cfg`` (node.json for geonode, config.json for a cbdir)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    path.write_text(json.dumps(cfg, indent=2))
    return path


def geonode_cmd(config: Path, *extra: str) -> list[str]:
    return [PY, "-m", "geonode", *extra, str(config)]


def crossbar_cmd(exe: str, cbdir: Path) -> list[str]:
    return [exe, "start", "--cbdir", str(cbdir), "--loglevel", "warn"]


class Server:
    """A server process in its own session (so the whole tree can be signalled), on loopback."""

    def __init__(self, name: str, cmd: list[str], cwd: Path, port: int, log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.cmd, self.cwd, self.port, self.log = name, cmd, cwd, port, log
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, ready: Callable[[], bool] | None = None, timeout: float = 60.0) -> float:
        """Launch and poll ``ready`` (default: the port accepts); seconds until it was true."""
        ready = ready or (lambda: port_open(self.port))
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}), see {self.log}")
            if ready():
                return time.perf_counter() - t0
            time.sleep(0.005)
        self.stop()
        raise RuntimeError(f"{self.name} not ready within {timeout}s, see {self.log}")

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

    def pids(self) -> list[int]:
        return tree_pids(self.proc.pid) if self.proc else []

    def rss_mb(self) -> float:
        return tree_rss_kb(self.pids()) / 1024

    def cpu_s(self) -> float:
        return tree_cpu_s(self.pids())


def raise_nofile() -> int:
    """Soft fd limit to the hard one (inherited by servers started afterwards); the limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# -- process tree: CPU and memory -------------------------------------------------------------

def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants (Crossbar and gunicorn fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def tree_rss_kb(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def tree_cpu_s(pids: Iterable[int]) -> float:
    """CPU seconds (user + system, all threads) used so far by ``pids``."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            pass
    return ticks / CLK_TCK


# -- wrk --------------------------------------------------------------------------------------

def require_wrk() -> None:
    if subprocess.run(["sh", "-c", "command -v wrk"], capture_output=True).returncode:
        raise SystemExit("wrk is needed (apt-get install wrk)")


@dataclass
class Wrk:
    rps: float
    requests: int
    problems: str  # non-2xx answers and socket errors, "" when none
    cpu: float  # wrk's own CPU, in cores (2.0 = both cores of this machine: wrk is the limit)
    p99_ms: float | None = None  # 99th percentile latency (with ``latency=True``)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(url: str, threads: int, conns: int, duration: float, script: Path | None = None,
        latency: bool = False) -> Wrk:
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration:g}s"]
    if latency:
        cmd.append("--latency")
    if script:
        cmd += ["-s", str(script)]
    # wrk is the only child reaped during the run, so the children's rusage delta is its CPU
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd + [url], capture_output=True, text=True,
                         timeout=duration + 60).stdout
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / duration
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    problems = [e.group(0).strip() for pat in (r"Non-2xx or 3xx responses: (\d+)",
                                                r"Socket errors: (.*)")
                if (e := re.search(pat, out))]
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M) if latency else None
    return Wrk(float(m.group(1)) if m else 0.0, int(n.group(1)) if n else 0, "; ".join(problems),
               cpu, _ms(*p99.groups()) if p99 else None)


# -- numbers ----------------------------------------------------------------------------------

def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def ratio(geonode: float, other: float, higher_is_better: bool = True) -> float:
    """How many times better geonode is (> 1: geonode wins), whichever way the metric points."""
    num, den = (geonode, other) if higher_is_better else (other, geonode)
    return num / den if den else float("nan")


def compare(metric: str, unit: str, geonode: float, vs: str, other: float | None,
            higher_is_better: bool = True, target: float | None = None) -> dict:
    """A summary row: geonode against ``vs``; ``target`` is the ratio the issue asks for."""
    r = ratio(geonode, other, higher_is_better) if other is not None else None
    return {"metric": metric, "unit": unit, "geonode": geonode, "vs": vs, "other": other,
            "ratio": r, "target": f"≥ {target:g}×" if target else "",
            "ok": None if target is None or r is None else r >= target}


def absolute(metric: str, unit: str, geonode: float, limit: float | None = None,
             other: float | None = None, vs: str = "") -> dict:
    """A summary row with an absolute bound (geonode must stay below ``limit``)."""
    return {"metric": metric, "unit": unit, "geonode": geonode, "vs": vs, "other": other,
            "ratio": None, "target": f"< {limit:g} {unit}" if limit is not None else "",
            "ok": None if limit is None else geonode < limit}


def write_summary(path: str | None, bench: str, rows: list[dict], **extra: object) -> None:
    """The rows run_all.py puts in RESULTS.md (``--summary PATH`` of every run.py)."""
    if path:
        Path(path).write_text(json.dumps({"bench": bench, "rows": rows, **extra}, indent=2))


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if unit == "ms" else f"{value:.2f}"


def markdown_rows(rows: list[dict]) -> list[str]:
    out = ["| metric | unit | geonode | vs | other | geonode × | target | |",
           "|---|---|---:|---|---:|---:|---|---|"]
    for r in rows:
        unit = r["unit"]
        verdict = "" if r["ok"] is None else ("ok" if r["ok"] else "**missed**")
        times = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        out.append(f"| {r['metric']} | {unit} | {fmt(r['geonode'], unit)} | {r['vs']} | "
                   f"{fmt(r['other'], unit)} | {times} | {r['target']} | {verdict} |")
    return out


class LoadSampler:
    """The 1-minute load average every ``every`` seconds while the benchmarks run (the
    machine is shared: the figures only mean something next to it)."""

    def __init__(self, every: float = 5.0) -> None:
        self.every, self.samples = every, [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> str:
        s = self.samples
        return f"{min(s):.2f}–{max(s):.2f} (median {median(s):.2f}, {len(s)} samples)"
