"""Fill the machine: one node holding ~19,000 idle WAMP sessions (issue 16 item 3).

    python bench/sessions/fill.py                     # 19000 sessions, 4 client processes
    python bench/sessions/fill.py -n 5000 --clients 2 # a quick run

A ``python -m geonode`` node (WebSocket path ``/ws``, json, and a ``json`` path ``/ping``) with
its fd limit raised to the hard one; ``--clients`` processes open the sessions in batches
(joined to realm1, one subscription each) and hold them. Printed: joins per second while they
arrive (and the clients' CPU, so a saturated generator shows), HTTP latency of ``/ping``
(sequential GETs on a keep-alive connection) while the sessions arrive and once they idle, the
node's RSS before and after (KiB per session), and the time one PUBLISH takes to reach every
session (each client process reports when its last EVENT arrived; same clock).
Loopback only; every loop is bounded (a deadline per phase).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "wamp"), str(HERE.parent)]

REALM = "realm1"
TOPIC = "com.bench.fill"
PHASE_TIMEOUT = 600.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_config(port: int) -> dict:
    allow = {"uri": "", "match": "prefix",
             "allow": {"call": True, "register": True, "publish": True, "subscribe": True}}
    return {"version": 2, "controller": {}, "workers": [{
        "type": "router",
        "realms": [{"name": REALM, "roles": [{"name": "anonymous", "permissions": [allow]}]}],
        "transports": [{
            "type": "web", "endpoint": {"type": "tcp", "port": port, "interface": "127.0.0.1",
                                        "backlog": 4096},
            "paths": {"ws": {"type": "websocket", "serializers": ["json"]},
                      "ping": {"type": "json", "value": "pong"}}}]}]}


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- a client process ----------------------------------------------------------------------

def client(port: int, n: int, batch: int) -> None:
    import wire

    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    conns = []
    t0 = time.time()
    while len(conns) < n:
        group = []
        for _ in range(min(batch, n - len(conns))):
            c = wire.Conn("127.0.0.1", port, "/ws", "json", connect=False)
            c.open()
            group.append(c)
        for c in group:
            c.handshake_finish()
            c.hello(REALM)
        for c in group:
            if c.recv()[0] != 2:
                raise RuntimeError("not welcomed")
            c.send([32, 1, {}, TOPIC])
        for c in group:
            if c.recv()[0] != 33:
                raise RuntimeError("not subscribed")
        conns.extend(group)
    print(json.dumps({"ready": time.time(), "started": t0}), flush=True)
    if sys.stdin.readline().strip() != "event":
        return
    import selectors
    sel = selectors.DefaultSelector()
    for c in conns:
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)
    left, last = len(conns), 0.0
    deadline = time.time() + PHASE_TIMEOUT
    while left and time.time() < deadline:
        for key, _ in sel.select(1.0):
            c = key.data
            try:
                c._fill()
            except BlockingIOError:
                continue
            if b"[36," in c.buf:   # an EVENT (json text frames arrive unmasked)
                sel.unregister(c.sock)
                left -= 1
                last = time.time()
    print(json.dumps({"last_event": last, "missing": left}), flush=True)
    sys.stdin.readline()


# ---- the parent ----------------------------------------------------------------------------

class Pinger(threading.Thread):
    """Sequential GET /ping on one keep-alive connection; latencies in ms per phase label."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.phase = "before"
        self.samples: dict[str, list[float]] = {}
        self.stop_at = time.monotonic() + 3 * PHASE_TIMEOUT
        self.done = False

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.done and time.monotonic() < self.stop_at:
            t = time.perf_counter()
            conn.request("GET", "/ping")
            conn.getresponse().read()
            self.samples.setdefault(self.phase, []).append((time.perf_counter() - t) * 1000)
            time.sleep(0.01)


def p(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * q))] if s else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=19000, help="sessions in all")
    ap.add_argument("--clients", type=int, default=4, help="client processes")
    ap.add_argument("--batch", type=int, default=250, help="handshakes per client batch")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--client", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.client:
        client(*args.client)
        return 0
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.n + 200:
        print(f"fd limit {hard} < {args.n} sessions + 200: lower -n", file=sys.stderr)
        return 2
    import wire
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="geonode-fill-"))
    (work / "node.json").write_text(json.dumps(node_config(port)))
    node = subprocess.Popen([sys.executable, "-m", "geonode", "node.json", "--loglevel",
                             "warning"], cwd=work, stdout=open(work / "node.log", "w"),
                            stderr=subprocess.STDOUT)
    clients: list[subprocess.Popen] = []
    pinger = Pinger(port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or node.poll() is not None:
                    raise RuntimeError(f"node did not start: {work / 'node.log'}") from None
                time.sleep(0.1)
        pinger.start()
        time.sleep(2.0)
        rss0 = rss_kib(node.pid)
        pinger.phase = "arriving"
        share = [args.n // args.clients + (i < args.n % args.clients) for i in range(args.clients)]
        clients = [subprocess.Popen([sys.executable, __file__, "--client", str(port), str(k),
                                     str(args.batch)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True) for k in share]
        ready = [json.loads(c.stdout.readline()) for c in clients]
        t_ready = max(r["ready"] for r in ready)
        client_cpu = sum(cpu_s(c.pid) for c in clients)
        t_start = min(r["started"] for r in ready)   # clients' own start-up excluded
        joins = args.n / (t_ready - t_start)
        pinger.phase = "settling"
        time.sleep(6.0)   # idle writers retire a few seconds after the last message
        rss1 = rss_kib(node.pid)
        pinger.phase = "idle"
        time.sleep(5.0)
        pub = wire.Conn("127.0.0.1", port, "/ws", "json")
        pub.join(REALM)
        for c in clients:
            c.stdin.write("event\n")
            c.stdin.flush()
        time.sleep(2.0)   # every client process is in its select loop
        t_pub = time.time()
        pub.send([16, 1000, {}, TOPIC, ["x" * 50]])
        results = [json.loads(c.stdout.readline()) for c in clients]
        missing = sum(r["missing"] for r in results)
        fanout_ms = (max(r["last_event"] for r in results) - t_pub) * 1000
        pinger.done = True
        pinger.join(timeout=5)
        out = {"sessions": args.n, "clients": args.clients,
               "joins_per_s": round(joins), "client_cpu_s": round(client_cpu, 1),
               "arrival_s": round(t_ready - t_start, 1),
               "rss_before_mib": round(rss0 / 1024, 1), "rss_after_mib": round(rss1 / 1024, 1),
               "kib_per_session": round((rss1 - rss0) / args.n, 2),
               "fanout_ms": round(fanout_ms), "missing_events": missing,
               "http_ms": {ph: {"n": len(s), "p50": round(statistics.median(s), 2),
                                "p99": round(p(s, 0.99), 2)}
                           for ph, s in pinger.samples.items()}}
        print(json.dumps(out, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))
        return 0
    finally:
        pinger.done = True
        for c in clients:
            try:
                c.stdin.close()
            except OSError:
                pass
            try:
                c.wait(timeout=30)
            except subprocess.TimeoutExpired:
                c.kill()
        node.terminate()
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()


if __name__ == "__main__":
    raise SystemExit(main())
