"""The long-URI latency curve (issue 9, row 1): ``python bench/hostile/long_uri.py``.

One client sends one WAMP message whose URI is 64 KiB .. 1 MiB long (SUBSCRIBE by default;
``--kinds subscribe,publish,call,register``) while another keeps GETting a small JSON path of
the same node over a keep-alive connection. For each size it prints the time the node took to
answer the hostile message and the HTTP latency it added meanwhile (the slowest GET that
overlapped the hostile message, minus the median GET before it). The node's role has exact,
prefix and wildcard rules, so permission lookup takes every path (row 1's freeze needed a
prefix rule).

Rows:
  geonode             this checkout, default ``max_uri_length`` (8192): refused at once
  geonode-unlimited   this checkout, ``max_uri_length`` 4 MiB: checked, authorized,
                      subscribed and matched (the O(len) paths themselves)
  baseline            ``--baseline DIR``: another checkout's geonode package, e.g. main from
                      ``git archive <commit> geonode | tar -x -C DIR`` (its node config has no
                      ``max_uri_length``)

A node that does not answer within ``--give-up`` seconds is recorded as such and restarted.
Everything runs on 127.0.0.1; every loop is bounded. Scratch: bench/.work/hostile/.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "wamp")]

import common  # noqa: E402
from support.config import web_node  # noqa: E402
from wire import Conn  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
ALL = {"call": True, "register": True, "publish": True, "subscribe": True}
ROLES = [{"name": "anonymous", "permissions": [
    {"uri": "com.", "match": "prefix", "allow": ALL},
    {"uri": "com.app.x", "match": "exact", "allow": ALL},
    {"uri": "com..x", "match": "wildcard", "allow": ALL},
    {"uri": "org.", "match": "prefix", "allow": {}}]}]
KINDS = {"subscribe": (32, {"match": "prefix"}), "publish": (16, {"acknowledge": True}),
         "call": (48, {}), "register": (64, {"match": "prefix"})}


def node_config(port: int, max_uri_length: int | None) -> dict:
    realm: dict = {"name": "realm1", "roles": ROLES}
    if max_uri_length is not None:
        realm["options"] = {"max_uri_length": max_uri_length}
    return web_node({"ws": {"type": "websocket", "serializers": ["json"],
                            "options": {"max_message_size": 16 * MiB}},
                     "info": {"type": "json", "value": {"ok": True}}}, realms=[realm], port=port)


class Row:
    def __init__(self, name: str, code: Path, max_uri_length: int | None, work: Path) -> None:
        self.name, self.code, self.max_uri_length, self.work = name, code, max_uri_length, work
        self.server: common.Server | None = None

    def start(self) -> None:
        port = common.free_port()
        d = self.work / self.name
        cfg = common.write_config(d, "node.json", node_config(port, self.max_uri_length))
        self.server = common.Server(self.name, common.geonode_cmd(cfg, "--loglevel", "warning"),
                                    d, port, d / "node.log", env={"PYTHONPATH": str(self.code)})
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


class HttpProbe:
    """GET /info in a loop on one keep-alive connection; (start, latency) of each."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                conn.request("GET", "/info")
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
            self.samples.append((t0, time.perf_counter() - t0))
            time.sleep(0.002)
        conn.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(320)


def long_uri(size: int, shape: str) -> str:
    """A valid URI of ``size`` characters, a new one each time (an attacker would not let a
    cache answer): one long component, or ``a.a.a…`` (many components)."""
    tail = os.urandom(8).hex()
    n = size - 4 - len(tail)
    body = "a" * n if shape == "plain" else ("a." * size)[:n - 1] + "a"
    return "com." + body + tail


def one(row: Row, kind: str, size: int, shape: str, give_up: float) -> dict:
    """One hostile message of ``kind`` with a URI of ``size`` characters."""
    port = row.server.port
    probe = HttpProbe(port)
    probe.start()
    time.sleep(0.3)                                  # baseline GETs
    conn = Conn("127.0.0.1", port, "/ws", "json")
    conn.join("realm1")
    conn.sock.settimeout(give_up)
    code, options = KINDS[kind]
    payload = [code, 1, options, long_uri(size, shape)]
    t_send = time.perf_counter()
    answered = None
    try:
        conn.send(payload)
        reply = conn.recv()
        answered = time.perf_counter() - t_send
        outcome = "ERROR " + reply[4] if reply[0] == 8 else {
            17: "PUBLISHED", 33: "SUBSCRIBED", 50: "RESULT", 65: "REGISTERED"}.get(
            reply[0], str(reply[0]))
    except OSError:
        outcome = f"no answer within {give_up:.0f}s"
    t_done = time.perf_counter()
    time.sleep(0.2)
    probe.stop()
    conn.close()
    before = [lat for t, lat in probe.samples if t + lat < t_send]
    during = [lat for t, lat in probe.samples if t < t_done and t + lat > t_send]
    base = statistics.median(before) if before else 0.0
    worst = max(during, default=0.0)
    return {"row": row.name, "kind": kind, "size": size, "shape": shape, "answer_s": answered,
            "outcome": outcome, "http_base_ms": base * 1000,
            "http_added_ms": max(0.0, worst - base) * 1000, "http_during": len(during)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,128,256,512,1024", help="URI sizes in KiB")
    ap.add_argument("--kinds", default="subscribe", help=",".join(KINDS))
    ap.add_argument("--shape", choices=["plain", "dotted"], default="plain",
                    help="one long component, or a.a.a... (many components)")
    ap.add_argument("--rounds", type=int, default=3, help="median of this many per point")
    ap.add_argument("--baseline", help="folder holding another checkout's geonode package")
    ap.add_argument("--give-up", type=float, default=20.0, help="seconds to wait for an answer")
    ap.add_argument("--summary", help="write the summary rows (JSON) here, for run_all.py")
    args = ap.parse_args(argv)
    sizes = [int(s) * KiB for s in args.sizes.split(",")]
    kinds = args.kinds.split(",")
    work = common.WORK / "hostile" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    rows = [Row("geonode", ROOT, None, work), Row("geonode-unlimited", ROOT, 4 * MiB, work)]
    if args.baseline:
        rows.append(Row("baseline", Path(args.baseline).resolve(), None, work))
    results: list[dict] = []
    # SIGTERM (e.g. timeout) ends the run like ^C, stopping the servers
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        for row in rows:
            row.start()
        for kind in kinds:
            for size in sizes:
                for _ in range(args.rounds):
                    for row in rows:            # interleaved: noise hits every row alike
                        if any(r["row"] == row.name and r["kind"] == kind and r["size"] <= size
                               and r["answer_s"] is None for r in results):
                            continue            # gave up on a smaller size already
                        r = one(row, kind, size, args.shape, args.give_up)
                        results.append(r)
                        took = ("-" if r["answer_s"] is None
                                else f"{r['answer_s'] * 1000:9.1f} ms")
                        print(f"  {r['row']:18} {kind:9} {size // KiB:5} KiB  answer {took}"
                              f"  HTTP +{r['http_added_ms']:8.1f} ms ({r['outcome']})",
                              flush=True)
                        if r["answer_s"] is None:   # frozen: start it afresh
                            row.stop()
                            row.start()
    finally:
        for row in rows:
            row.stop()
    work.mkdir(parents=True, exist_ok=True)
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print()
    print("| row | message | URI size | answered in (ms) | HTTP latency added (ms) | answer |")
    print("|---|---|---:|---:|---:|---|")
    for kind in kinds:
        for row in rows:
            for size in sizes:
                rs = [r for r in results if (r["row"], r["kind"], r["size"]) ==
                      (row.name, kind, size)]
                if not rs:
                    continue
                answers = [r["answer_s"] for r in rs if r["answer_s"] is not None]
                ans = (f"{statistics.median(answers) * 1000:.1f}" if len(answers) == len(rs)
                       else f"> {args.give_up * 1000:.0f}")
                added = statistics.median(r["http_added_ms"] for r in rs)
                print(f"| {row.name} | {kind.upper()} | {size // KiB} KiB | {ans} | "
                      f"{added:.1f} | {rs[0]['outcome']} |")
    print(f"\nraw numbers: {work / 'results.json'}")
    common.write_summary(args.summary, "hostile-uri", summary(results, rows, kinds, sizes))
    return 0


#: the issue's target: HTTP latency added while one client sends a 256 KiB-URI SUBSCRIBE
TARGET_MS = 10.0


def summary(results: list[dict], rows: list[Row], kinds: list[str], sizes: list[int]) -> list:
    out = []
    for kind in kinds:
        for size in sizes:
            for row in rows:
                rs = [r for r in results
                      if (r["row"], r["kind"], r["size"]) == (row.name, kind, size)]
                if not rs:
                    continue
                label = f"{row.name}: {kind.upper()} with a {size // KiB} KiB URI"
                answers = [r["answer_s"] for r in rs if r["answer_s"] is not None]
                if len(answers) == len(rs):
                    out.append(common.absolute(f"{label}, answered in", "ms",
                                               statistics.median(answers) * 1000))
                added = statistics.median(r["http_added_ms"] for r in rs)
                target = TARGET_MS if kind == "subscribe" and size == 256 * KiB \
                    and row.name != "baseline" else None
                out.append(common.absolute(f"{label}, HTTP latency added", "ms", added, target))
    return out


if __name__ == "__main__":
    sys.exit(main())
