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
The load generators share the cores with the node, so the wall-clock figures depend on them:
also printed are the node process's own CPU per join and per delivered event (CPU seconds /
count, nearly independent of the load beside it) and the generators' CPU in each phase.
The node runs with a probe of the garbage collector (a ``sitecustomize.py`` on its
PYTHONPATH recording every middle and full collection's time and duration): printed are those during
the arrival and their longest pause (each stalls the whole hub).
``--gc POLICY`` sets the node's ``controller.options.gc.policy`` (auto, default, freeze), for
an A/B of the garbage collector's policy in one tree; the collections during the fan-out are
printed too.
``--profile DIR`` samples the node with py-spy (``pip install py-spy``) during the arrival and
during the fan-out: DIR/arrival.txt and DIR/fanout.txt, collapsed stacks (one line per stack,
its sample count last: ``sort -k2 -t' ' -n``, or any flamegraph tool).
Loopback only; every loop is bounded (a deadline per phase).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "wamp"), str(HERE.parent), str(HERE.parent.parent / "tests")]

from support import config as support_config  # noqa: E402
from support.net import free_port, wait_port  # noqa: E402

REALM = "realm1"
PHASE_TIMEOUT = 600.0


def node_config(port: int, max_connections: int, gc_policy: str | None = None) -> dict:
    paths = {"ws": {"type": "websocket", "serializers": ["json"]},
             "ping": {"type": "json", "value": "pong"}}
    # The default cap is 80% of the fd limit, which the sessions are meant to fill.
    transport = support_config.web_transport(paths, port, {"max_connections": max_connections})
    transport["endpoint"]["backlog"] = 4096
    cfg = support_config.node_config([transport], [support_config.realm(REALM)])
    if gc_policy is not None:
        cfg["controller"] = {"options": {"gc": {"policy": gc_policy}}}
    return cfg


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid: int, user: bool = True) -> float:
    """The process's CPU seconds (user and system; ``user=False``: the kernel's only)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) * user + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The node's probe: one line per middle or full collection,
# "<time.time()> <generation> <duration in s>".
GC_PROBE = """\
import gc, os, time
_fd = os.open(os.environ["GEONODE_FILL_GC_LOG"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
_t0 = [0.0]
def _probe(phase, info):
    gen = info.get("generation", 0)
    if gen == 0:
        return
    if phase == "start":
        _t0[0] = time.perf_counter()
    else:
        os.write(_fd, b"%f %d %f\\n" % (time.time(), gen, time.perf_counter() - _t0[0]))
gc.callbacks.insert(0, _probe)
"""


def collections(path: Path, gen: int, t0: float, t1: float) -> tuple[int, float]:
    """The node's collections of generation ``gen`` between t0 and t1 (time.time()): how
    many, the longest in ms."""
    try:
        rows = [line.split() for line in path.read_text().splitlines()]
    except OSError:
        return 0, 0.0
    inside = [float(d) for t, g, d in rows if int(g) == gen and t0 <= float(t) <= t1]
    return len(inside), max(inside, default=0.0) * 1000


# ---- a client process ----------------------------------------------------------------------

def client(port: int, n: int, batch: int) -> None:
    import loads  # bench/wamp/loads.py

    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    t0 = time.time()
    conns = loads.idle_sessions(("127.0.0.1", port, "/ws"), "json", n, batch)
    print(json.dumps({"ready": time.time(), "started": t0}), flush=True)
    if sys.stdin.readline().strip() != "event":
        return
    import selectors
    sel = selectors.DefaultSelector()
    for i, c in enumerate(conns):
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, i)
    # Lean: one recv per wake-up and no unregister (a socket read empty is not reported
    # again), so the generators' CPU per event stays small beside the node's.
    done = bytearray(len(conns))
    left, last = len(conns), 0.0
    deadline = time.time() + PHASE_TIMEOUT
    while left and time.time() < deadline:
        for key, _ in sel.select(1.0):
            i = key.data
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(key.fileobj)   # closed by the node: reported as missing
                continue
            if done[i]:
                continue
            c = conns[i]
            c.buf += data
            if b"[36," in c.buf:   # an EVENT (json text frames arrive unmasked)
                done[i] = 1
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


class Profiler:
    """py-spy sampling the node for one phase (collapsed stacks in ``path``)."""

    def __init__(self, pid: int, path: Path) -> None:
        self.proc = subprocess.Popen(["py-spy", "record", "--nonblocking", "-r", "200", "-f",
                                      "raw", "-p", str(pid), "-o", str(path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)   # attached

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def p(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * q))] if s else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=19000, help="sessions in all")
    ap.add_argument("--clients", type=int, default=4, help="client processes")
    ap.add_argument("--batch", type=int, default=250, help="handshakes per client batch")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--client-nice", type=int, default=0, metavar="N",
                    help="run the client processes at this nice level (they share the cores "
                         "with the node: with N > 0 the scheduler serves the node first)")
    ap.add_argument("--profile", metavar="DIR",
                    help="py-spy the node during the arrival and the fan-out, into DIR")
    ap.add_argument("--gc", choices=("auto", "default", "freeze"),
                    help="the node's controller.options.gc.policy (a tree that has it; "
                         "unset: the node's default, which is auto)")
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
    import loads
    import wire
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="geonode-fill-"))
    (work / "node.json").write_text(json.dumps(node_config(port, hard - 100, args.gc)))
    (work / "probe").mkdir()
    (work / "probe" / "sitecustomize.py").write_text(GC_PROBE)
    gc_log = work / "gc.log"
    env = dict(os.environ, GEONODE_FILL_GC_LOG=str(gc_log),
               PYTHONPATH=os.pathsep.join(filter(None, [str(work / "probe"),
                                                         os.environ.get("PYTHONPATH")])))
    node = subprocess.Popen([sys.executable, "-m", "geonode", "node.json", "--loglevel",
                             "warning"], cwd=work, stdout=open(work / "node.log", "w"),
                            stderr=subprocess.STDOUT, env=env)
    clients: list[subprocess.Popen] = []
    pinger = Pinger(port)
    try:
        wait_port(port, node, timeout=30)
        pinger.start()
        time.sleep(2.0)
        rss0 = rss_kib(node.pid)
        profile = Path(args.profile) if args.profile else None
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            spy = Profiler(node.pid, profile / "arrival.txt")
        node_cpu0, node_sys0 = cpu_s(node.pid), cpu_s(node.pid, user=False)
        pinger.phase = "arriving"
        share = [args.n // args.clients + (i < args.n % args.clients) for i in range(args.clients)]
        nice = args.client_nice
        clients = [subprocess.Popen([sys.executable, __file__, "--client", str(port), str(k),
                                     str(args.batch)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True,
                                    preexec_fn=(lambda: os.nice(nice)) if nice else None)
                   for k in share]
        ready = [json.loads(c.stdout.readline()) for c in clients]
        t_ready = max(r["ready"] for r in ready)
        node_cpu_join = cpu_s(node.pid) - node_cpu0
        node_sys_join = cpu_s(node.pid, user=False) - node_sys0
        client_cpu = sum(cpu_s(c.pid) for c in clients)
        if profile is not None:
            spy.stop()
        t_start = min(r["started"] for r in ready)   # clients' own start-up excluded
        gc_full, gc_full_ms = collections(gc_log, 2, t_start, t_ready)
        gc_mid, gc_mid_ms = collections(gc_log, 1, t_start, t_ready)
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
        if profile is not None:
            spy = Profiler(node.pid, profile / "fanout.txt")
        client_cpu1 = sum(cpu_s(c.pid) for c in clients)
        node_cpu1 = cpu_s(node.pid)
        pinger.phase = "fanout"
        t_pub = time.time()
        pub.send([16, 1000, {}, loads.TOPIC, ["x" * 50]])
        results = [json.loads(c.stdout.readline()) for c in clients]
        node_cpu_event = cpu_s(node.pid) - node_cpu1
        client_cpu_event = sum(cpu_s(c.pid) for c in clients) - client_cpu1
        pinger.phase = "after"
        if profile is not None:
            spy.stop()
        missing = sum(r["missing"] for r in results)
        t_last = max(r["last_event"] for r in results)
        fanout_ms = (t_last - t_pub) * 1000
        gc_fan = [collections(gc_log, g, t_pub, t_last) for g in (1, 2)]
        pinger.done = True
        pinger.join(timeout=5)
        out = {"sessions": args.n, "clients": args.clients, "client_nice": nice,
               "joins_per_s": round(joins), "client_cpu_s": round(client_cpu, 1),
               "arrival_s": round(t_ready - t_start, 1),
               "node_cpu_per_join_us": round(node_cpu_join / args.n * 1e6, 1),
               "node_cpu_arrival_s": round(node_cpu_join, 2),
               "node_kernel_per_join_us": round(node_sys_join / args.n * 1e6, 1),
               "full_gc_arrival": gc_full, "full_gc_max_ms": round(gc_full_ms, 1),
               "middle_gc_arrival": gc_mid, "middle_gc_max_ms": round(gc_mid_ms, 1),
               "node_cpu_per_event_us": round(node_cpu_event / max(1, args.n - missing) * 1e6,
                                              2),
               "client_cpu_fanout_s": round(client_cpu_event, 2),
               "middle_full_gc_fanout": [n for n, _ in gc_fan],
               "gc_fanout_max_ms": round(max(ms for _, ms in gc_fan), 1),
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
