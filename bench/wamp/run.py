"""geonode vs Crossbar.io, WAMP over WebSocket, side by side: ``python bench/wamp/run.py``.

Both routers get the same node.json (one realm, anonymous may do everything, a websocket path
with json and msgpack). For each serializer it measures, with a lean raw-frame client (wire.py):
pub/sub events delivered per second to 10 subscribers, RPC calls per second with 50 in flight,
and the round-trip latency of one call at a time (p50/p99). Each figure is the median of
``--runs`` runs; the client's and the server's CPU use are reported next to the rates, so a
saturated client is visible. Then a scale test on geonode: ``--scale`` idle sessions, the
resident memory each costs, and the time to fan one event out to all of them.

Crossbar comes from /work/cbvenv if present, else from a venv this script makes under
bench/.work/cbvenv (``pip install crossbar``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORK = ROOT / "bench" / ".work"
sys.path.insert(0, str(HERE))

import loads  # noqa: E402
from wire import Conn  # noqa: E402

PATH = "/ws"


def node_config(port: int) -> dict:
    return {
        "version": 2,
        "controller": {},
        "workers": [{
            "type": "router",
            "realms": [{"name": loads.REALM, "roles": [{
                "name": "anonymous",
                "permissions": [{"uri": "", "match": "prefix",
                                 "allow": {"call": True, "register": True, "publish": True,
                                           "subscribe": True},
                                 "disclose": {"caller": False, "publisher": False},
                                 "cache": True}],
            }]}],
            "transports": [{
                "type": "web",
                "endpoint": {"type": "tcp", "port": port, "interface": "127.0.0.1",
                             "backlog": 1024},
                "paths": {"ws": {"type": "websocket", "serializers": ["json", "msgpack"]}},
            }],
        }],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing on port {port} after {timeout}s")


def descendants(pid: int) -> list[int]:
    """pid and every process below it (Crossbar runs its router in a child process)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Server:
    def __init__(self, name: str, cmd: list[str], cwd: Path, port: int, log: Path) -> None:
        self.name, self.port = name, port
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_port(port, self.proc, 60)
        time.sleep(0.5)  # Crossbar opens the port before its realm is fully up

    def pids(self) -> list[int]:
        return descendants(self.proc.pid)

    def stop(self) -> None:
        if self.log.closed:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def crossbar_bin() -> str:
    shared = Path("/work/cbvenv/bin/crossbar")
    if shared.exists():
        return str(shared)
    venv = WORK / "cbvenv"
    exe = venv / "bin" / "crossbar"
    if not exe.exists():
        print("creating", venv, "(pip install crossbar)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "crossbar"], check=True)
    return str(exe)


def start(name: str, tmp: Path) -> Server:
    port = free_port()
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    cfg = node_config(port)
    if name == "geonode":
        (d / "node.json").write_text(json.dumps(cfg, indent=2))
        cmd = [sys.executable, "-m", "geonode", "--loglevel", "warning", str(d / "node.json")]
    else:
        (d / "config.json").write_text(json.dumps(cfg, indent=2))
        cmd = [crossbar_bin(), "start", "--cbdir", str(d), "--loglevel", "warn"]
    return Server(name, cmd, d, port, tmp / f"{name}.log")


def bench_round(servers: list[Server], serializers: list[str], duration: float,
                results: dict) -> None:
    """One run of every load against every server, interleaved so noise hits all alike."""
    for ser in serializers:
        for metric in ("pubsub", "rpc", "latency"):
            for server in servers:
                addr = ("127.0.0.1", server.port, PATH)
                if metric == "pubsub":
                    r = loads.pubsub(addr, ser, duration, server.pids)
                elif metric == "rpc":
                    r = loads.rpc(addr, ser, duration, server.pids)
                else:
                    r = loads.latency(addr, ser)
                results.setdefault((server.name, ser, metric), []).append(r)
                print(f"  {server.name:8} {ser:8} {metric:8} {_fmt(metric, [r])}", flush=True)
                time.sleep(0.3)


def _median(samples, attr):
    return statistics.median(getattr(s, attr) if attr else s for s in samples)


def _fmt(metric: str, samples: list) -> str:
    if metric == "latency":
        p50 = statistics.median(s[0] for s in samples)
        p99 = statistics.median(s[1] for s in samples)
        return f"p50 {p50:.3f} ms  p99 {p99:.3f} ms"
    rate = _median(samples, "rate")
    return (f"{rate:10.0f}/s  client cpu {_median(samples, 'client_cpu'):.0%}  "
            f"server cpu {_median(samples, 'server_cpu'):.0%}  "
            f"(runs: {', '.join(f'{s.rate:.0f}' for s in samples)})")


def table(results: dict, serializers: list[str], servers: list[str]) -> str:
    lines = ["| metric | serializer | " + " | ".join(servers) +
             (" | geonode/crossbar |" if len(servers) == 2 else " |"),
             "|---|---|" + "---|" * (len(servers) + (1 if len(servers) == 2 else 0))]
    for ser in serializers:
        for metric, label in (("pubsub", "events/s (10 subscribers)"),
                              ("rpc", "calls/s (50 in flight)"),
                              ("p50", "call latency p50 (ms)"), ("p99", "call latency p99 (ms)")):
            vals = []
            for name in servers:
                if metric in ("p50", "p99"):
                    samples = results.get((name, ser, "latency"))
                    i = 0 if metric == "p50" else 1
                    vals.append(statistics.median(s[i] for s in samples) if samples else None)
                else:
                    samples = results.get((name, ser, metric))
                    vals.append(_median(samples, "rate") if samples else None)
            cells = [("-" if v is None else (f"{v:.0f}" if metric in ("pubsub", "rpc")
                                             else f"{v:.3f}")) for v in vals]
            row = f"| {label} | {ser} | " + " | ".join(cells) + " |"
            if len(servers) == 2 and None not in vals and vals[1]:
                ratio = vals[0] / vals[1] if metric in ("pubsub", "rpc") else vals[1] / vals[0]
                row += f" {ratio:.1f}x |"
            elif len(servers) == 2:
                row += " - |"
            lines.append(row)
    return "\n".join(lines)


def scale(server: Server, n: int, serializer: str = "json", fanouts: int = 3) -> dict:
    addr = ("127.0.0.1", server.port, PATH)
    warm = loads.idle_sessions(addr, serializer, 100)
    time.sleep(1.0)
    before = rss_kb(server.pids())
    t0 = time.perf_counter()
    conns = loads.idle_sessions(addr, serializer, n - len(warm))
    setup = time.perf_counter() - t0
    time.sleep(5.0)  # idle writers retire after 2-4 s
    after = rss_kb(server.pids())
    conns = warm + conns
    publisher = Conn(*addr, serializer)
    publisher.join(loads.REALM)
    times = [loads.fanout(conns, publisher) for _ in range(fanouts)]
    for c in [*conns, publisher]:
        c.close()
    return {"sessions": n, "setup_s": setup, "rss_before_kb": before, "rss_after_kb": after,
            "kb_per_session": (after - before) / (n - len(warm)),
            "fanout_ms": [t * 1000 for t in times]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds measured per run")
    ap.add_argument("--serializers", default="json,msgpack")
    ap.add_argument("--servers", default="geonode,crossbar")
    ap.add_argument("--scale", type=int, default=10000, help="idle sessions (0: skip)")
    ap.add_argument("--scale-crossbar", action="store_true", help="scale-test Crossbar too")
    args = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    serializers = args.serializers.split(",")
    servers = args.servers.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="bench-wamp-"))
    results: dict = {}
    scale_results = {}
    try:
        running = []
        try:
            for name in servers:
                running.append(start(name, tmp))
            for i in range(args.runs):
                print(f"== run {i + 1}/{args.runs}", flush=True)
                bench_round(running, serializers, args.duration, results)
            for server in running:
                if args.scale and (server.name == "geonode" or args.scale_crossbar):
                    n = min(args.scale, hard - 500)  # client and server each hold n fds
                    scale_results[server.name] = scale(server, n)
                    print(f"  {server.name:8} scale   {scale_results[server.name]}", flush=True)
        finally:
            for server in running:
                server.stop()
        print()
        print(table(results, serializers, servers))
        for name, r in scale_results.items():
            print(f"\nscale ({name}): {r['sessions']} idle sessions (json, each subscribed), "
                  f"opened in {r['setup_s']:.1f}s; RSS {r['rss_before_kb'] / 1024:.1f} MiB -> "
                  f"{r['rss_after_kb'] / 1024:.1f} MiB = {r['kb_per_session']:.1f} KiB/session; "
                  f"one event to all: {', '.join(f'{t:.0f}' for t in r['fanout_ms'])} ms")
        out = WORK / "wamp"
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({
            "runs": [{"server": k[0], "serializer": k[1], "metric": k[2],
                      "samples": [list(x) if isinstance(x, tuple) else vars(x) for x in v]}
                     for k, v in results.items()],
            "scale": scale_results}, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
