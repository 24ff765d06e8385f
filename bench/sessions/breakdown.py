"""What one idle WAMP session costs the node, part by part (issue 16).

The node runs in this process (so tracemalloc and ``gc`` see it); a child process opens N
idle sessions (joined to realm1, one subscription each) over WebSocket or RawSocket, json or
msgpack, and holds them. Two passes per transport/serializer:

- RSS: the node's RSS before and after the N sessions, tracemalloc off (the figure the
  issue's target is about: KiB per idle session);
- tracemalloc: the Python allocations those sessions keep, grouped by the file and line that
  made them (``--top`` lines), and the live objects per session by type (``gc``).

    python bench/sessions/breakdown.py                       # ws+rawsocket, json+msgpack, 2000
    python bench/sessions/breakdown.py --transports ws --serializers json -n 5000 --top 40

Loopback only; every loop bounded; the child stops when its stdin closes.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "wamp"))
sys.path.insert(0, str(HERE.parent.parent / "tests"))

from support import config as support_config  # noqa: E402
from support.net import free_port  # noqa: E402

REALM = "realm1"
TOPIC = "com.bench.idle"


def node_config(ws_port: int, raw_port: int) -> dict:
    ws = {"type": "websocket", "serializers": ["json", "msgpack"],
          "options": {"compression": {"deflate": {}}} if os.environ.get("BREAKDOWN_DEFLATE")
          else {}}
    return support_config.node_config(
        [support_config.web_transport({"ws": ws}, ws_port),
         support_config.rawsocket_transport(raw_port, serializers=["json", "msgpack"])],
        [support_config.realm(REALM)])


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---- the client process -------------------------------------------------------------------

def _raw_conn(port: int, serializer: str, encode, decode):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(bytes([0x7F, 0xF0 | (1 if serializer == "json" else 2), 0, 0]))
    if s.recv(4)[0] != 0x7F:
        raise RuntimeError("rawsocket handshake refused")

    def send(msg) -> None:
        body = encode(msg)
        s.sendall(struct.pack("!I", len(body)) + body)

    def recv():
        head = b""
        while len(head) < 4:
            head += s.recv(4 - len(head))
        n = struct.unpack("!I", head)[0] & 0xFFFFFF
        body = b""
        while len(body) < n:
            body += s.recv(n - len(body))
        return decode(body)
    return s, send, recv


def client(transport: str, serializer: str, port: int, n: int) -> None:
    import wire  # bench/wamp/wire.py

    encode, decode, _ = wire.encoder(serializer)
    held = []
    batch = 200
    while len(held) < n:
        group = []
        for _ in range(min(batch, n - len(held))):
            if transport == "ws":
                c = wire.Conn("127.0.0.1", port, "/ws", serializer)
                group.append((c, c.send, c.recv))
            else:
                s, send, recv = _raw_conn(port, serializer, encode, decode)
                group.append((s, send, recv))
        for _c, send, _recv in group:
            send([1, REALM, {"roles": {"subscriber": {}, "publisher": {}}}])
        for _c, _send, recv in group:
            if recv()[0] != 2:
                raise RuntimeError("not welcomed")
        for _c, send, _recv in group:
            send([32, 1, {}, TOPIC])
        for _c, _send, recv in group:
            if recv()[0] != 33:
                raise RuntimeError("not subscribed")
        held.extend(group)
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes it


# ---- the node side ------------------------------------------------------------------------

def start_node(folder: Path):
    from geonode.config import load
    from geonode.node import Node, prepare

    ws_port, raw_port = free_port(), free_port()
    path = folder / "node.json"
    path.write_text(json.dumps(node_config(ws_port, raw_port)))
    cfg = load(str(path))
    prepare(cfg)
    node = Node(cfg)
    node.build()
    node.bind()
    node.start()
    return node, {"ws": ws_port, "rawsocket": raw_port}


def open_sessions(transport: str, serializer: str, port: int, n: int) -> subprocess.Popen:
    from gevent import subprocess as gsub

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent / "wamp"), os.environ.get("PYTHONPATH", "")])}
    proc = gsub.Popen([sys.executable, __file__, "--client", transport, serializer,
                       str(port), str(n)], stdin=gsub.PIPE, stdout=gsub.PIPE, env=env)
    line = proc.stdout.readline()
    if line.strip() != b"ready":
        proc.kill()
        raise RuntimeError(f"client failed: {line!r}")
    return proc


def settle() -> None:
    import gevent
    # Idle writers and per-connection timers retire a few seconds after the last message.
    gevent.sleep(float(os.environ.get("BREAKDOWN_SETTLE", "5")))
    gc.collect()


def close_sessions(proc) -> None:
    import gevent
    proc.stdin.close()
    proc.wait(timeout=60)
    gevent.sleep(1.0)
    gc.collect()


def type_counts() -> Counter:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


def measure(ports: dict, transport: str, serializer: str, n: int, top: int) -> dict:
    warm = open_sessions(transport, serializer, ports[transport], 50)
    settle()
    # RSS pass
    before = rss_kib()
    proc = open_sessions(transport, serializer, ports[transport], n)
    settle()
    after = rss_kib()
    rss_per = (after - before) / n
    close_sessions(proc)
    # tracemalloc pass
    tracemalloc.start(8)
    types0 = type_counts()
    snap0 = tracemalloc.take_snapshot()
    proc = open_sessions(transport, serializer, ports[transport], n)
    settle()
    snap1 = tracemalloc.take_snapshot()
    types1 = type_counts()
    traced = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    lines = snap1.compare_to(snap0, "lineno")
    close_sessions(proc)
    tracemalloc.stop()
    close_sessions(warm)
    out = {"transport": transport, "serializer": serializer, "sessions": n,
           "rss_kib_per_session": round(rss_per, 2),
           "traced_kib_per_session": round(traced / n / 1024, 2),
           "by_line": [], "objects_per_session": {}}
    for stat in lines[:top]:
        frame = stat.traceback[0]
        out["by_line"].append({"where": f"{_short(frame.filename)}:{frame.lineno}",
                               "bytes_per_session": round(stat.size_diff / n),
                               "blocks_per_session": round(stat.count_diff / n, 2)})
    diff = {k: (types1[k] - types0.get(k, 0)) / n for k in types1}
    for name, per in sorted(diff.items(), key=lambda kv: -kv[1])[:top]:
        if per >= 0.5:
            out["objects_per_session"][name] = round(per, 2)
    return out


def _short(path: str) -> str:
    for marker in ("/geonode/", "/site-packages/", "/lib/python3"):
        i = path.rfind(marker)
        if i >= 0:
            return path[i + 1:]
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2000, help="idle sessions per measurement")
    ap.add_argument("--transports", default="ws,rawsocket")
    ap.add_argument("--serializers", default="json,msgpack")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.client:
        transport, serializer, port, n = args.client
        client(transport, serializer, int(port), int(n))
        return 0
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import logging
    logging.basicConfig(level=logging.WARNING)
    combos = [(t, s) for t in args.transports.split(",") for s in args.serializers.split(",")]
    if len(combos) > 1:
        # One process per combination: memory freed by one measurement would otherwise be
        # reused by the next, and its RSS growth would read as zero.
        results = []
        for transport, serializer in combos:
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                subprocess.run([sys.executable, __file__, "-n", str(args.n), "--top",
                                str(args.top), "--transports", transport, "--serializers",
                                serializer, "--json", out.name], check=True)
                results.extend(json.loads(Path(out.name).read_text()))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        print("\nKiB per idle session (RSS / traced): " + "; ".join(
            f"{r['transport']} {r['serializer']} {r['rss_kib_per_session']} / "
            f"{r['traced_kib_per_session']}" for r in results))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        node, ports = start_node(Path(tmp))
        gc.freeze()
        results = []
        try:
            for transport, serializer in combos:
                t0 = time.monotonic()
                r = measure(ports, transport, serializer, args.n, args.top)
                results.append(r)
                print(f"\n== {transport} {serializer}: {r['rss_kib_per_session']} KiB RSS per "
                      f"idle session, {r['traced_kib_per_session']} KiB traced by Python "
                      f"({args.n} sessions, {time.monotonic() - t0:.0f} s)")
                for row in r["by_line"]:
                    print(f"  {row['bytes_per_session']:7d} B {row['blocks_per_session']:6.2f} "
                          f"blocks  {row['where']}")
                print("  objects per session: " + ", ".join(
                    f"{k} {v}" for k, v in r["objects_per_session"].items()))
        finally:
            node.stop(grace=0)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
