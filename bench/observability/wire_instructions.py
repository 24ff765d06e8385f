#!/usr/bin/env python3
"""Instructions per operation of a whole node (valgrind callgrind), over real sockets.

    python bench/observability/wire_instructions.py --base /path/to/checkout-without-metrics
    python bench/observability/wire_instructions.py --base B --loads rpc --ops 2000

instructions.py counts the router alone (peers that drop what they get): an upper bound of
what counting adds, since serializing, framing and the socket calls are left out. This script
counts what the node really does per operation: ``python -m geonode`` runs under
``valgrind --tool=callgrind`` (the clients, in this process, are not counted); after a
warm-up the counters are zeroed (``callgrind_control -z``), ``--ops`` operations run one at a
time, and the counters are dumped (``callgrind_control -d``). Instruction counts do not
depend on what else the machine does, so the base and this tree can be compared on a busy
machine. What a timer or a sweep does inside the window counts too (a few thousand
instructions per second of wall time, under valgrind ~50x slower: small against the window).

Loads (json over WebSocket, the bench/wamp raw-frame client):
  rpc      CALL -> INVOCATION -> YIELD -> RESULT, one call at a time
  pubsub   PUBLISH (acknowledged) to 10 subscribers, one publication at a time; the
           subscribers read every EVENT before the next publication
  http     GET of a ``json`` path over one keep-alive connection (no ``metrics`` path: the
           tree's HTTP counting is off then, as in production without one)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT / "bench" / "wamp"), str(ROOT / "tests")]

from support.config import allow_all, realm, role, web_node  # noqa: E402
from support.net import free_port, wait_port  # noqa: E402
from support.timing import WaitTimeout  # noqa: E402
from wire import Conn  # noqa: E402

PROC, TOPIC = "com.bench.echo", "com.bench.topic"
SLOW = 600.0   # s: a node under valgrind on a busy machine answers late, not never


def node_config(port: int, metrics: bool = False) -> dict:
    """``metrics``: with a ``metrics`` path (HTTP requests are counted then)."""
    paths: dict = {"ws": {"type": "websocket", "serializers": ["json"]},
                   "json": {"type": "json", "value": {"hello": "world"}}}
    if metrics:
        paths["metrics"] = {"type": "metrics"}
    return web_node(paths, realms=[realm(roles=[role(permissions=[allow_all()])])], port=port)


def control(pid: int, flag: str) -> None:
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True,
                   timeout=600)


def dumped_total(folder: Path, pid: int) -> int:
    """The Ir total of the newest dump of ``pid`` (callgrind writes <out>.<n> per -d)."""
    dumps = sorted(folder.glob(f"cg.{pid}.*"), key=lambda p: p.stat().st_mtime)
    if not dumps:
        raise RuntimeError(f"no callgrind dump in {folder}")
    m = re.search(r"^summary:\s*(\d+)", dumps[-1].read_text(errors="replace"), re.M)
    if m is None:
        m = re.search(r"^totals:\s*(\d+)", dumps[-1].read_text(errors="replace"), re.M)
    if m is None:
        raise RuntimeError(f"no totals in {dumps[-1]}")
    return int(m.group(1))


def _conn(addr: tuple) -> Conn:
    c = Conn(*addr, "json")
    assert c.sock is not None
    c.sock.settimeout(SLOW)
    c.join("realm1")
    return c


def make_load(kind: str, port: int):
    """One operation of ``kind`` against the node on ``port``, as a closure."""
    addr = ("127.0.0.1", port, "/ws")
    if kind == "rpc":
        callee = _conn(addr)
        callee.register(PROC)
        caller = _conn(addr)
        req = [0]

        def op() -> None:
            req[0] += 1
            caller.send([48, req[0], {}, PROC, [req[0]]])
            inv = callee.recv()
            assert inv[0] == 68, inv
            callee.send([70, inv[1], {}, [req[0]]])
            res = caller.recv()
            assert res[0] == 50 and res[1] == req[0], res
        return op
    if kind == "pubsub":
        subs = []
        for _ in range(10):
            s = _conn(addr)
            s.subscribe(TOPIC)
            subs.append(s)
        pub = _conn(addr)
        req = [0]

        def op() -> None:
            req[0] += 1
            pub.send([16, req[0], {"acknowledge": True}, TOPIC, [req[0]]])
            ack = pub.recv()
            assert ack[0] == 17, ack
            for s in subs:
                ev = s.recv()
                assert ev[0] == 36, ev
        return op
    if kind == "http":
        sock = socket.create_connection(("127.0.0.1", port), timeout=SLOW)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = f"GET /json HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        buf = bytearray()

        def op() -> None:
            sock.sendall(request)
            while True:
                head, sep, rest = bytes(buf).partition(b"\r\n\r\n")
                if sep:
                    n = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))
                    if len(rest) >= n:
                        assert head.startswith(b"HTTP/1.1 200"), head[:80]
                        del buf[:len(head) + 4 + n]
                        return
                data = sock.recv(65536)
                if not data:
                    raise RuntimeError("closed")
                buf.extend(data)
        return op
    raise ValueError(kind)


def measure(tree: str, kind: str, ops: int, warm: int, work: Path,
            metrics: bool = False) -> float:
    for _ in range(3):   # a free port can be taken by someone else before the node binds it
        try:
            return _measure(tree, kind, ops, warm, work, metrics)
        except PortTaken:
            continue
    raise RuntimeError("no free port after 3 tries")


class PortTaken(Exception):
    pass


def _measure(tree: str, kind: str, ops: int, warm: int, work: Path, metrics: bool) -> float:
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix=f"wi-{kind}-", dir=work))
    cfg = folder / "node.json"
    cfg.write_text(json.dumps(node_config(port, metrics)).replace('"$PORT"', str(port)))
    env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()), PYTHONHASHSEED="0")
    log = open(folder / "node.log", "w")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/cg.%p",
                             sys.executable, "-m", "geonode", "--loglevel", "warning", str(cfg)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    try:
        try:
            wait_port(port, proc, timeout=300)   # python under valgrind starts in ~30 s
        except WaitTimeout:
            log.flush()
            if "Address already in use" in (folder / "node.log").read_text():
                raise PortTaken() from None
            raise
        op = make_load(kind, port)
        for _ in range(warm):
            op()
        control(proc.pid, "-z")
        for _ in range(ops):
            op()
        control(proc.pid, "-d")
        return dumped_total(folder, proc.pid) / ops
    finally:
        stop_node(proc)
        log.close()


def stop_node(proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """SIGTERM, then SIGKILL if it has not ended within ``timeout`` (under valgrind a node's
    graceful stop takes long)."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="a checkout to compare with (PYTHONPATH)")
    ap.add_argument("--tree", default=str(ROOT), help="this checkout unless told")
    ap.add_argument("--loads", default="rpc,pubsub,http")
    ap.add_argument("--ops", type=int, default=2000)
    ap.add_argument("--warm", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=2, help="runs per tree and load (ABAB)")
    ap.add_argument("--metrics", action="store_true",
                    help="this tree's node has a metrics path (counting on; base: none)")
    args = ap.parse_args(argv)
    work = ROOT / "bench" / ".work" / "observability"
    work.mkdir(parents=True, exist_ok=True)
    for kind in args.loads.split(","):
        got: dict[str, list[float]] = {"base": [], "tree": []}
        for _ in range(args.repeat):
            for name, tree in (("base", args.base), ("tree", args.tree)):
                got[name].append(measure(tree, kind, args.ops, args.warm, work,
                                         args.metrics and name == "tree"))
        b, t = min(got["base"]), min(got["tree"])
        print(f"{kind:7s} base {b:10.0f}  tree {t:10.0f} instructions/op  tree/base x{t / b:.4f}"
              f"   (runs: base {', '.join(f'{v:.0f}' for v in got['base'])}; "
              f"tree {', '.join(f'{v:.0f}' for v in got['tree'])})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
