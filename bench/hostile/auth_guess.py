"""Ticket guessing rate (issue 9, row 8): ``python bench/hostile/auth_guess.py``.

One address guesses WAMP-Ticket secrets against a static principal for ``--seconds`` each way:

  wait      one connection at a time, waiting for each answer (a naive guesser)
  hang-up   one connection at a time, hanging up right after AUTHENTICATE (it reads failure
            from the missing WELCOME, so held-back answers cost it nothing by themselves)
  parallel  ``--threads`` hang-up guessers at once from the same address

and prints the guesses the node *examined* per second (counted in the node's log: a failed
ticket comparison; refusals "too many failed authentication attempts in progress" are not
examined, and a hung-up guesser cannot tell which of its attempts were), and the login time
of the right ticket from another address right after. The delays start small (0.1 s) and
double, so short runs overstate the long-run rate (4 in flight / 30 s per address). Rows: this checkout with
its defaults, and ``--baseline DIR`` (another checkout's geonode package, e.g. main from
``git archive <commit> geonode | tar -x -C DIR``). Everything on loopback (127.0.0.x source
addresses); every loop is bounded by time. Scratch: bench/.work/hostile/.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import websocket

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))

import common  # noqa: E402
from support.config import realm, role, web_node  # noqa: E402

WORK = common.WORK / "hostile"
INVALID = "ticket in static WAMP-Ticket authentication is invalid"   # logged per examined guess


def node_config(port: int) -> dict:
    ticket = {"type": "static", "principals": {"joe": {"ticket": "the-right-ticket",
                                                       "role": "user"}}}
    return web_node({"ws": {"type": "websocket", "serializers": ["json"],
                            "auth": {"ticket": ticket}}},
                    realms=[realm(roles=[role("user")])], port=port)


def attempt(port: int, source: str, ticket: str, wait: bool) -> str:
    """"examined", "refused" (unexamined), or "welcome"."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(source, 0))
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", socket=sock,
                                     subprotocols=["wamp.2.json"], timeout=60)
    try:
        ws.send(json.dumps([1, "realm1", {"roles": {"caller": {}}, "authmethods": ["ticket"],
                                          "authid": "joe"}]))
        ans = json.loads(ws.recv())
        if ans[0] != 4:
            return "refused"
        ws.send(json.dumps([5, ticket, {}]))
        if not wait:
            return "examined"
        ans = json.loads(ws.recv())
        return "welcome" if ans[0] == 2 else "examined"
    finally:
        ws.shutdown()


def guess(port: int, source: str, seconds: float, wait: bool, threads: int = 1,
          log: Path | None = None) -> dict:
    counts = {"examined": 0, "refused": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def run() -> None:
        n = 0
        while time.monotonic() < deadline:
            r = attempt(port, source, f"guess-{n}", wait)
            n += 1
            with lock:
                counts[r] = counts.get(r, 0) + 1

    ts = [threading.Thread(target=run) for _ in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    took = time.monotonic() - t0
    t1 = time.monotonic()
    ok = attempt(port, "127.0.0.250", "the-right-ticket", True)
    examined = log.read_text(errors="replace").count(INVALID) if log else counts["examined"]
    return {"examined_per_s": examined / took, "attempts": sum(counts.values()),
            "legit_login_ms": (time.monotonic() - t1) * 1000, "legit": ok}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--baseline", help="a checkout's folder holding a geonode package")
    args = ap.parse_args()
    rows = [("geonode", str(ROOT))]
    if args.baseline:
        rows.append(("baseline", os.path.abspath(args.baseline)))
    print(f"{'row':9} {'mode':9} {'examined/s':>11} {'attempts':>9} {'legit login':>12}")
    for i, (name, path) in enumerate(rows):
        for j, (mode, wait, threads) in enumerate((("wait", True, 1), ("hang-up", False, 1),
                                                   ("parallel", False, args.threads))):
            # a fresh node and a fresh source address per measurement: no carried-over counts
            port = common.free_port()
            cfg = common.write_config(WORK / f"{name}-{mode}", "node.json", node_config(port))
            log = cfg.parent / "node.log"
            log.unlink(missing_ok=True)
            server = common.Server(f"{name}-{mode}", common.geonode_cmd(cfg), cfg.parent, port,
                                   log, env={"PYTHONPATH": path})
            server.start()
            try:
                r = guess(port, f"127.0.0.{10 + 3 * i + j}", args.seconds, wait, threads, log)
            finally:
                server.stop()
            print(f"{name:9} {mode:9} {r['examined_per_s']:11.1f} {r['attempts']:9d} "
                  f"{r['legit_login_ms']:9.1f} ms ({r['legit']})", flush=True)


if __name__ == "__main__":
    main()
