"""SIGTERM-to-exit time of ``python -m geonode`` and gunicorn's GeventWorker, with idle
keep-alive connections open (and optionally one request in flight).

    python bench/shutdown.py [--runs 3] [--idle 10] [--code DIR]

``--code DIR`` runs another checkout's geonode package (``git archive <commit> geonode |
tar -x -C DIR``) to compare before/after. Everything runs on 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support import free_port, geonode_cmd, wait_for, wait_port, web_node  # noqa: E402
from support.nodes import gunicorn_cmd  # noqa: E402

APP = '''
import time

def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        open("slow-started", "w").close()  # the benchmark waits for this: in flight now
        time.sleep(1.0)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
'''


def start(kind: str, folder: Path, env: dict) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cfg = web_node({"/": {"type": "wsgi", "module": "benchapp", "object": "app"}},
                   worker_options={"pythonpath": ["."]}, port=port)
    (folder / "benchapp.py").write_text(APP)
    (folder / "node.json").write_text(json.dumps(cfg))
    if kind == "node":
        cmd = geonode_cmd("node.json")
    else:
        cmd = gunicorn_cmd("geonode:load('node.json')", port,
                           extra=("--graceful-timeout", "10"))
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port, proc, timeout=20)
    return proc, port


def idle_connection(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    buf = b""
    while not buf.endswith(b"ok"):
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    return s


def one_run(kind: str, idle: int, in_flight: bool, env: dict) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start(kind, Path(tmp), env)
        try:
            conns = [idle_connection(port) for _ in range(idle)]
            th = None
            if in_flight:
                th = threading.Thread(target=lambda: urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/slow", timeout=15).read())
                th.start()
                marker = Path(tmp) / "slow-started"
                wait_for(marker.exists, 10, "the slow request to be in flight")
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            took = time.monotonic() - t0
            if th is not None:
                th.join(15)
            for c in conns:
                c.close()
            return took
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", type=int, default=10, help="idle keep-alive connections")
    ap.add_argument("--code", help="folder holding the geonode package to run")
    args = ap.parse_args()
    env = dict(os.environ)
    if args.code:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.code, env.get("PYTHONPATH")]))
    print(f"{'server':10} {'case':28} {'median s':>9} {'max s':>7}")
    for kind in ("node", "gunicorn"):
        for in_flight in (False, True):
            times = [one_run(kind, args.idle, in_flight, env) for _ in range(args.runs)]
            case = f"{args.idle} idle" + (" + 1 s request" if in_flight else "")
            print(f"{kind:10} {case:28} {statistics.median(times):9.3f} {max(times):7.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
