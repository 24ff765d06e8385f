#!/usr/bin/env python3
"""The WSGI host's hub <-> pool hand-off alone: CPU (or instructions) per request, no sockets.

``C`` greenlets each call the WSGI Host Service (``geonode.web.wsgi_host``, built from its
config exactly as the node builds it) ``requests / C`` times with a GET environ and read the
response, as pywsgi's handler would. With ``"threads": false`` the app runs inline: the
difference between the two modes is the hand-off (submit, wake a pool thread, run there, tell
the hub, wake the greenlet) and nothing else.

    python bench/http/handoff_cost.py                          # -c 1, 10, 50; 20000 requests
    python bench/http/handoff_cost.py --callgrind              # instructions per request
    PYTHONPATH=/path/to/other/checkout python bench/http/handoff_cost.py   # another geonode

``--callgrind`` runs the same loop twice under ``valgrind --tool=callgrind`` (N and 2N
requests) and prints (Ir(2N) - Ir(N)) / N: start-up cancels out, every thread counts, and the
figure hardly moves on a busy machine (the kernel's part, futex and eventfd, is not in it).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HELLO = Path(__file__).resolve().parent


def run_loop(threads: bool, conns: int, requests: int, app: str) -> float:
    """CPU seconds for ``requests`` requests through one host (after a warm-up)."""
    from gevent import monkey

    monkey.patch_all()
    import gevent

    from geonode.web.context import BuildContext
    from geonode.web.wsgi_host import build

    sys.path.insert(0, str(HELLO))
    cfg = {"type": "wsgi", "module": app, "object": "app"}
    if not threads:
        cfg["threads"] = False
    ctx = BuildContext(config_dir=HELLO, json_path="paths./", router=None,
                       transport_options={}, tls=False)
    host = build(cfg, ctx)
    base = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SCRIPT_NAME": "", "QUERY_STRING": "",
            "SERVER_NAME": "bench", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "bench", "wsgi.url_scheme": "http", "wsgi.version": (1, 0),
            "wsgi.errors": sys.stderr, "wsgi.run_once": False, "geonode.client_timeout": 60}

    def start_response(status: str, headers: list, exc_info: object = None) -> None:
        return None

    def client(n: int) -> None:
        for _ in range(n):
            result = host(dict(base), start_response)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def burst(total: int) -> None:
        per = total // conns
        gevent.joinall([gevent.spawn(client, per) for _ in range(conns)], raise_error=True)

    burst(min(2000, requests))  # warm-up: threads started, caches filled
    t0 = time.process_time()
    burst(requests)
    return time.process_time() - t0


def callgrind_total(args: argparse.Namespace, threads: bool, conns: int, requests: int) -> int:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "cg.out"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
               sys.executable, __file__, "--inner", "--conns", str(conns), "--requests",
               str(requests), "--app", args.app] + ([] if threads else ["--greenlet"])
        subprocess.run(cmd, check=True, capture_output=True)
        for line in out.read_text(errors="replace").splitlines():
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise RuntimeError("no totals in the callgrind output")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conns", default="1,10,50")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--app", default="hello", help="module in bench/http with an `app`")
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--greenlet", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        used = run_loop(not args.greenlet, int(args.conns), args.requests, args.app)
        print(f"{used / args.requests * 1e6:.2f}")
        return 0
    import geonode

    print(f"geonode from {Path(geonode.__file__).parent}")
    for conns in (int(c) for c in args.conns.split(",")):
        row = []
        for threads in (True, False):
            if args.callgrind:
                n = args.requests
                a = callgrind_total(args, threads, conns, n)
                b = callgrind_total(args, threads, conns, 2 * n)
                row.append((b - a) / n)
            else:
                best = []
                for _ in range(args.rounds):
                    out = subprocess.run(
                        [sys.executable, __file__, "--inner", "--conns", str(conns),
                         "--requests", str(args.requests), "--app", args.app]
                        + ([] if threads else ["--greenlet"]),
                        check=True, capture_output=True, text=True,
                        env=dict(os.environ)).stdout
                    best.append(float(re.findall(r"[\d.]+", out)[-1]))
                row.append(min(best))
        unit = "instructions" if args.callgrind else "µs CPU"
        fmt = "{:10.0f}" if args.callgrind else "{:8.2f}"
        print(f"-c{conns:<4} threads {fmt.format(row[0])}  greenlet {fmt.format(row[1])}  "
              f"hand-off {fmt.format(row[0] - row[1])} {unit}/request", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
