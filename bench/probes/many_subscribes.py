"""Many sessions, then one SUBSCRIBE each: does every session get its SUBSCRIBED?

A node (WebSocket path /ws + RawSocket, realm1, anonymous allowed everything) in a child
process; N raw WebSocket WAMP sessions (HELLO right after each handshake); every WELCOME read;
then one SUBSCRIBE on each and every SUBSCRIBED awaited (all at once: the run ends when none
came for ``--timeout`` s) and the sessions without one listed.

    PYTHONPATH=$PWD python3 bench/probes/many_subscribes.py 2000
    PYTHONPATH=$PWD python3 bench/probes/many_subscribes.py 2000 --burners 2 --runs 5
    PYTHONPATH=$PWD python3 bench/probes/many_subscribes.py 2000 --burners 2 --rounds 12

It found a lost-wakeup in the transport's writer retirement (geonode/transport/queue.py,
docs/transports.md "Idle writers"): a message queued for a session whose idle writer the
sweeper had just retired stayed queued until the session's next message. ``--burners`` starts
that many CPU burners (``yes``) beside it for the run (a busy machine made the race likely).
Exit status 1 when a reply was missing. Loopback only; every loop bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "wamp"))
sys.path.insert(0, str(HERE.parent.parent / "tests"))

import wire  # noqa: E402
from support import config as support_config  # noqa: E402
from support.net import free_port, wait_port  # noqa: E402

REALM = "realm1"


def node_config(ws_port: int, raw_port: int) -> dict:
    return support_config.node_config(
        [support_config.web_transport({"ws": {"type": "websocket",
                                              "serializers": ["json", "msgpack"]}}, ws_port),
         support_config.rawsocket_transport(raw_port, serializers=["json", "msgpack"])],
        [support_config.realm(REALM)])


PAUSES = (1.6, 1.8, 2.0, 2.2, 2.4, 2.6)


def await_replies(conns: list[wire.Conn], timeout: float) -> list[int]:
    """Read one SUBSCRIBED per connection, all at once; give up when none came for
    ``timeout`` seconds. The indexes of the connections without one."""
    waiting = {c.sock.fileno(): i for i, c in enumerate(conns)}
    with selectors.DefaultSelector() as sel:
        for c in conns:
            sel.register(c.sock, selectors.EVENT_READ)
        while waiting:
            ready = sel.select(timeout)
            if not ready:
                break
            for key, _ in ready:
                i = waiting[key.fd]
                c = conns[i]
                c._fill()
                c.pending.extend(c.frames())
                if c.pending:
                    msg = c.dec(c.pending.pop(0))
                    assert msg[0] == 33, msg
                    sel.unregister(c.sock)
                    del waiting[key.fd]
    return sorted(waiting.values())


def ranges(xs: list[int]) -> str:
    """``1250-1286, 1300``: consecutive runs of sorted integers."""
    out: list[str] = []
    for x in sorted(xs):
        if out and int(out[-1].split("-")[-1]) == x - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{x}"
        else:
            out.append(str(x))
    return ", ".join(out)


def one_run(n: int, timeout: float, workdir: Path, rounds: int = 1) -> list[int]:
    """The indexes of the sessions that got no SUBSCRIBED within ``timeout``."""
    port, raw = free_port(), free_port()
    cfg = workdir / "node.json"
    cfg.write_text(json.dumps(node_config(port, raw)))
    logf = open(workdir / "node.log", "w")
    node = subprocess.Popen([sys.executable, "-m", "geonode", str(cfg), "--loglevel", "debug"],
                            stdout=logf, stderr=subprocess.STDOUT)
    conns: list[wire.Conn] = []
    missing: list[int] = []
    try:
        wait_port(port, node, timeout=60)
        t0 = time.monotonic()
        for _ in range(n):
            c = wire.Conn("127.0.0.1", port, "/ws", "json")
            c.send([1, REALM, {"roles": {"subscriber": {}}}])
            conns.append(c)
        for c in conns:
            msg = c.recv()
            assert msg[0] == 2, msg
        t1 = time.monotonic()
        r = 0
        for r in range(rounds):
            if r:
                # The writers parked together at the end of the last round: the idle-writer
                # sweep (every 2 s) ends them in one batch about now; pauses around 2 s make
                # some round's SUBSCRIBEs arrive in the middle of that batch.
                time.sleep(PAUSES[r % len(PAUSES)])
                t1 = time.monotonic()
            for c in conns:
                c.send([32, r + 1, {}, f"a.b{r}"])
            missing = await_replies(conns, timeout)
            if missing:
                break
        if missing:
            # the client ports let the node log's lines (``tcp4:127.0.0.1:PORT``) be matched
            ports = sorted(conns[i].sock.getsockname()[1] for i in missing)
            print(f"  round {r + 1}: no SUBSCRIBED on conns {ranges(missing)}", flush=True)
            (workdir / "missing-ports.txt").write_text("\n".join(map(str, ports)) + "\n")
        print(f"  {n} sessions joined in {t1 - t0:.1f} s, {r + 1} round(s), the last "
              f"subscribed in {time.monotonic() - t1:.1f} s, missing {len(missing)}", flush=True)
    finally:
        for c in conns:
            c.close()
        node.terminate()
        try:
            node.wait(30)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
        logf.close()
    warnings = [line for line in (workdir / "node.log").read_text().splitlines()
                if " WARNING " in line or " ERROR " in line]
    print(f"  node log: {len(warnings)} warning/error lines"
          + "".join(f"\n    {w}" for w in warnings[:5]), flush=True)
    return missing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n", type=int, nargs="?", default=2000, help="sessions")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per SUBSCRIBED")
    ap.add_argument("--rounds", type=int, default=1,
                    help="SUBSCRIBE rounds per run (pauses of ~2 s between them)")
    ap.add_argument("--burners", type=int, default=0, help="CPU burners beside the run")
    args = ap.parse_args()
    burners = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL)
               for _ in range(args.burners)]
    failed = 0
    try:
        with tempfile.TemporaryDirectory(prefix="many_subscribes-") as d:
            for run in range(args.runs):
                print(f"run {run + 1}/{args.runs}", flush=True)
                if one_run(args.n, args.timeout, Path(d), args.rounds):
                    failed += 1
                    keep = Path(tempfile.gettempdir()) / f"many_subscribes-node-{os.getpid()}-{run}.log"
                    keep.write_bytes((Path(d) / "node.log").read_bytes())
                    ports = keep.with_suffix(".ports")
                    ports.write_bytes((Path(d) / "missing-ports.txt").read_bytes())
                    print(f"  node log kept: {keep}, client ports of the missing: {ports}",
                          flush=True)
    finally:
        for b in burners:
            b.kill()
            b.wait()
    print(f"runs with missing replies: {failed}/{args.runs}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
