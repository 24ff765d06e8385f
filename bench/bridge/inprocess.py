#!/usr/bin/env python3
"""In-process WAMP hand-off, no HTTP: publishes/s into the real router from worker threads
(the path a Flask view takes) and from a greenlet on the hub.

    python bench/bridge/inprocess.py [--n 20000] [--threads 4]
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from gevent.threadpool import ThreadPool  # noqa: E402

from geonode import wamp  # noqa: E402
from geonode.router import Router  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

ALLOW = {"call": True, "register": True, "publish": True, "subscribe": True}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000, help="publishes per thread")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--summary", help="write the summary rows (JSON) here, for run_all.py")
    args = ap.parse_args()
    rows = []
    router = Router({"realms": [{"name": "realm1", "roles": [
        {"name": "backend", "permissions": [{"uri": "", "match": "prefix", "allow": ALLOW}]}]}]},
        ".")
    wamp.register_router(router)
    s = wamp.session("realm1", "backend")
    got = [0]
    s.subscribe("com.example.t", wamp.on_hub(lambda i: got.__setitem__(0, got[0] + 1)))
    pool = ThreadPool(args.threads)

    def work(ack: bool) -> None:
        for i in range(args.n):
            s.publish("com.example.t", i, acknowledge=ack)

    total = args.n * args.threads
    for ack in (False, True):
        got[0] = 0
        t0 = time.perf_counter()
        for g in [pool.spawn(work, ack) for _ in range(args.threads)]:
            g.get()
        while got[0] < total and time.perf_counter() - t0 < 60:
            time.sleep(0.001)
        dt = time.perf_counter() - t0
        rows.append(common.absolute(f"in-process publish from {args.threads} pool threads"
                                    + (", acknowledged" if ack else ""), "publishes/s",
                                    total / dt))
        print(f"{args.threads} threads, acknowledge={ack!s:5}: {total / dt:9.0f} publishes/s "
              f"({got[0]} events delivered to an on-hub subscriber)")
    t0 = time.perf_counter()
    for i in range(args.n):
        s.publish("com.example.t", i, acknowledge=True)
    rate = args.n / (time.perf_counter() - t0)
    rows.append(common.absolute("in-process publish from a hub greenlet, acknowledged",
                                "publishes/s", rate))
    print(f"hub greenlet, acknowledge=True: {rate:9.0f} publishes/s")
    common.write_summary(args.summary, "inprocess", rows)


if __name__ == "__main__":
    main()
