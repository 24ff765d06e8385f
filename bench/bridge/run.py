#!/usr/bin/env python3
"""HTTP bridge and in-process WAMP benchmark: geonode vs Crossbar.io, same node.json.

    python bench/bridge/run.py                              # 3 rounds × 5 s per row
    python bench/bridge/run.py --crossbar /work/cbvenv/bin/crossbar --rounds 1 --duration 3

Rows (wrk, requests/s, one server process at a time on loopback; a WAMP subscriber is
connected to the topic so every publication is delivered):
  publisher      wrk POST /publish (post.lua)     the HTTP publisher bridge (acknowledged publish)
  flask-noop     wrk GET /app/noop                the same Flask app, a view that does not publish
                                                  (the baseline for the two rows below)
  flask-pub      wrk GET /app/pub                 a Flask view publishing one event: geonode
                                                  in-process (fire and forget); Crossbar: the view
                                                  POSTs to Crossbar's /publish bridge
  flask-puback   wrk GET /app/puback              same, geonode waits for the acknowledgement

Rounds are interleaved (round 1 of both servers, then round 2, …); medians and the
geonode/Crossbar ratio are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORK = ROOT / "bench" / ".work" / "bridge"
PY = sys.executable
ROWS = [("publisher", "/publish", True), ("flask-noop", "/app/noop", False),
        ("flask-pub", "/app/pub", False), ("flask-puback", "/app/puback", False)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_config(port: int, geonode: bool) -> dict:
    app: dict = {"type": "wsgi", "module": "app", "object": "app", "maxthreads": 20}
    if geonode:
        app["wamp"] = {"realm": "realm1", "role": "backend"}
    allow = {"call": True, "register": True, "publish": True, "subscribe": True}
    return {"version": 2, "controller": {}, "workers": [{
        "type": "router",
        "options": {"pythonpath": [str(HERE)]},
        "realms": [{"name": "realm1", "roles": [
            {"name": "anonymous", "permissions": [{"uri": "", "match": "prefix", "allow": allow}]},
            {"name": "backend", "permissions": [{"uri": "", "match": "prefix", "allow": allow}]},
        ]}],
        "transports": [{
            "type": "web",
            "endpoint": {"type": "tcp", "port": port, "interface": "127.0.0.1"},
            "paths": {
                "/": {"type": "json", "value": "ok"},
                "app": app,
                "ws": {"type": "websocket"},
                "publish": {"type": "publisher", "realm": "realm1", "role": "backend"},
            },
        }],
    }]}


class Server:
    def __init__(self, name: str, exe: str | None) -> None:
        self.name, self.exe = name, exe
        self.port = free_port()
        self.dir = WORK / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.rps: dict[str, list[float]] = {r[0]: [] for r in ROWS}
        self.problems: list[str] = []

    def start(self) -> None:
        cfg = node_config(self.port, self.name == "geonode")
        if self.name == "geonode":
            path = self.dir / "node.json"
            cmd = [PY, "-m", "geonode", str(path)]
        else:
            path = self.dir / "config.json"
            cmd = [self.exe, "start", "--cbdir", str(self.dir)]
        path.write_text(json.dumps(cfg, indent=2))
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   BENCH_BRIDGE_URL=f"http://127.0.0.1:{self.port}/publish")
        log = open(WORK / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited, see {WORK / (self.name + '.log')}")
            # Crossbar listens before its path services exist (404): wait for all of them
            if all(self._status(p) not in (None, 404) for p in ("/ws", "/publish", "/app/noop")):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start")

    def _status(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=0.5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

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


class Subscriber:
    """An autobahn (asyncio) client subscribed to the bench topic, counting events."""

    def __init__(self, port: int) -> None:
        import txaio

        txaio.use_asyncio()
        from autobahn.asyncio.wamp import ApplicationSession
        from autobahn.asyncio.websocket import WampWebSocketClientFactory
        from autobahn.wamp.types import ComponentConfig

        self.count = 0
        self.loop = asyncio.new_event_loop()
        joined = threading.Event()
        outer = self

        class Client(ApplicationSession):
            async def onJoin(self, details):
                await self.subscribe(outer._on_event, "com.example.bench")
                joined.set()

        async def connect():
            factory = WampWebSocketClientFactory(lambda: Client(ComponentConfig("realm1")),
                                                 url=f"ws://127.0.0.1:{port}/ws")
            await self.loop.create_connection(factory, "127.0.0.1", port)

        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(connect(), self.loop).result(10)
        if not joined.wait(10):
            raise RuntimeError("subscriber did not join")

    def _on_event(self, *args, **kwargs) -> None:
        self.count += 1

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def wrk(url: str, lua: bool, threads: int, conns: int, duration: float) -> tuple[float, str]:
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration:g}s"]
    if lua:
        cmd += ["-s", str(HERE / "post.lua")]
    out = subprocess.run(cmd + [url], capture_output=True, text=True,
                         timeout=duration + 60).stdout
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    problems = [e.group(0).strip() for pat in (r"Non-2xx or 3xx responses: (\d+)",
                                                r"Socket errors: (.*)")
                if (e := re.search(pat, out))]
    return (float(m.group(1)) if m else 0.0), "; ".join(problems)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--crossbar", default=os.environ.get("CROSSBAR", "/work/cbvenv/bin/crossbar"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--only", help="geonode or crossbar")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    names = ["geonode", "crossbar"]
    if args.only:
        names = [args.only]
    if "crossbar" in names and not Path(args.crossbar).exists():
        print(f"crossbar not found at {args.crossbar}: geonode only", file=sys.stderr)
        names = ["geonode"]
    servers = [Server(n, args.crossbar if n == "crossbar" else None) for n in names]
    events: dict[str, int] = {}
    for rnd in range(1, args.rounds + 1):
        for srv in servers:
            srv.start()
            try:
                sub = Subscriber(srv.port)
            except Exception:
                srv.stop()
                raise
            try:
                # warm-up (thread pools, keep-alive sessions, JIT-free but caches)
                for _, path, lua in ROWS:
                    wrk(f"http://127.0.0.1:{srv.port}{path}", lua, 1, 4, 1)
                for row, path, lua in ROWS:
                    rps, problem = wrk(f"http://127.0.0.1:{srv.port}{path}", lua, args.threads,
                                       args.connections, args.duration)
                    srv.rps[row].append(rps)
                    if problem:
                        srv.problems.append(f"{row}: {problem}")
                    print(f"round {rnd} {srv.name:9s} {row:13s} {rps:10.0f} req/s"
                          + (f"  ({problem})" if problem else ""), flush=True)
                time.sleep(0.5)
                events[srv.name] = events.get(srv.name, 0) + sub.count
            finally:
                sub.close()
                srv.stop()
    print(f"\nmedian requests/s (wrk -t{args.threads} -c{args.connections} "
          f"-d{args.duration:g}s, {args.rounds} rounds):")
    head = f"{'row':14s}" + "".join(f"{s.name:>12s}" for s in servers)
    if len(servers) == 2:
        head += f"{'geonode/crossbar':>18s}"
    print(head)
    for row, _, _ in ROWS:
        med = [statistics.median(s.rps[row]) for s in servers]
        line = f"{row:14s}" + "".join(f"{m:12.0f}" for m in med)
        if len(servers) == 2 and med[1]:
            line += f"{med[0] / med[1]:17.1f}x"
        print(line)
    for s in servers:
        print(f"{s.name}: events delivered to the WAMP subscriber: {events.get(s.name, 0)}")
        for p in s.problems:
            print(f"  {s.name} {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
