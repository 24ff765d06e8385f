"""Hostile HTTP clients against a node with the default config (issue 9, rows 6 and 7).

    python bench/hostile/http_limits.py [--baseline DIR] [--slowloris 300] [--seconds 15]

For this checkout, and for ``--baseline DIR`` (another checkout's geonode package, e.g. main
from ``git archive <commit> geonode | tar -x -C DIR``), each on a fresh node whose web
transport has no ``options`` at all:

  slowloris  N connections each send a request line, then one header line a second (each
             line well inside any idle timeout), for at most ``--seconds``: how many got an
             answer (408) and when; an honest GET's latency meanwhile
  chunked    a chunked upload sent as fast as the node takes it, up to ``--upload-mib``:
             how much went in before the node answered (and what), bounded by 30 s
  length     a head announcing a 2 GiB body, no body: the time to the answer (at most 10 s)
  traversal  16 reverse-proxy paths trying to leave the upstream path ``/api``: how many
             reached the upstream (a recorder on loopback) outside ``/api``

Everything on loopback; every loop is bounded by time or count. Scratch: bench/.work/hostile/.
"""

from __future__ import annotations

import argparse
import http.server
import os
import select
import socket
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))

import common  # noqa: E402
from support.config import web_node  # noqa: E402

WORK = common.WORK / "hostile"

APP = '''
def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    out = str(len(body)).encode()
    start_response("200 OK", [("Content-Length", str(len(out)))])
    return [out]
'''

CLIMBS = [
    "/p/../../admin", "/p/..%2f..%2fadmin", "/p/%2e%2e/%2e%2e/admin",
    "/p/%2E%2E%2F%2E%2E%2Fadmin", "/p/a/%2E%2e/%2e./../admin", "/p/..%5c..%5cadmin",
    "/p/..\\..\\admin", "/p/..;/..;/admin", "/p/%252e%252e/%252e%252e/admin",
    "/p/%252E%252E%252Fadmin", "/p/..%00/admin", "/p/x%00", "/p/.../admin", "/p/..%20/admin",
    "/p/a/../../admin", "/p//..//admin",
]


class Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.seen.append(self.raw_requestline.decode("latin-1").split()[1])
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def node_config(port: int, upstream: int) -> dict:
    cfg = web_node({"/": {"type": "wsgi", "module": "benchapp", "object": "echo"},
                    "p": {"type": "reverseproxy", "host": "127.0.0.1", "port": upstream,
                          "path": "/api"}}, worker_options={"pythonpath": ["."]}, port=port)
    cfg["workers"][0]["transports"][0]["endpoint"]["backlog"] = 1024
    return cfg


def slowloris(port: int, n: int, seconds: float) -> str:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    t0 = time.monotonic()
    answered: dict[socket.socket, tuple[float, bytes]] = {}
    latency: list[float] = []
    next_line, line = t0, 0
    while len(answered) < n and time.monotonic() - t0 < seconds:
        waiting = [s for s in socks if s not in answered]
        for s in select.select(waiting, [], [], 0.2)[0]:
            answered[s] = (time.monotonic() - t0, s.recv(65536)[:12])
        if time.monotonic() >= next_line:
            next_line += 1.0
            for s in socks:
                if s not in answered:
                    try:
                        s.sendall(b"X-Line-%d: y\r\n" % line)
                    except OSError:
                        pass
            line += 1
            t = time.monotonic()
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read()
            latency.append((time.monotonic() - t) * 1000)
    for s in socks:
        s.close()
    if not answered:
        return (f"0 of {n} answered in {seconds:.0f} s; honest GET median "
                f"{statistics.median(latency):.1f} ms, max {max(latency):.1f} ms")
    times = sorted(t for t, _ in answered.values())
    kinds = sorted({a.decode("latin-1") for _, a in answered.values()})
    return (f"{len(answered)} of {n} answered ({', '.join(kinds)}) at {times[0]:.1f}-"
            f"{times[-1]:.1f} s; honest GET median {statistics.median(latency):.1f} ms, "
            f"max {max(latency):.1f} ms")


def chunked_upload(port: int, limit_mib: int) -> str:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    s.setblocking(False)
    sent, answer, t0 = 0, b"(none)", time.monotonic()
    try:
        while sent < limit_mib * 2 ** 20 and time.monotonic() - t0 < 30:
            readable, writable, _ = select.select([s], [s], [], 5)
            if readable:
                answer = s.recv(65536)[:40] or b"(closed)"
                break
            if writable:
                try:
                    if s.send(piece) == len(piece):
                        sent += 65536
                except BlockingIOError:
                    pass
    except OSError as e:
        answer = repr(e).encode()
    finally:
        s.close()
    first = answer.split(b"\r\n")[0].decode("latin-1")
    return f"{sent / 2 ** 20:.0f} MiB sent in {time.monotonic() - t0:.1f} s, answer {first!r}"


def declared_length(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        t0 = time.monotonic()
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2147483648\r\n\r\n")
        try:
            answer = s.recv(100).split(b"\r\n")[0].decode("latin-1")
        except TimeoutError:
            answer = "no answer"
        return f"{answer!r} after {(time.monotonic() - t0) * 1000:.1f} ms"


def traversal(port: int) -> str:
    before = len(Recorder.seen)
    statuses: dict[int, int] = {}
    for target in CLIMBS:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                      .encode("latin-1"))
            status = int(s.recv(100).split()[1])
            statuses[status] = statuses.get(status, 0) + 1
    outside = [p for p in Recorder.seen[before:]
               if ".." in p or "%2e" in p.lower() or not p.startswith("/api")]
    return (f"answers {dict(sorted(statuses.items()))}; reached the upstream outside /api "
            f"or with dot-segments: {len(outside)} of {len(CLIMBS)}"
            + (f" (e.g. {outside[0]})" if outside else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", help="a checkout's folder holding a geonode package")
    ap.add_argument("--slowloris", type=int, default=300, help="connections")
    ap.add_argument("--seconds", type=float, default=15.0, help="slowloris duration")
    ap.add_argument("--upload-mib", type=int, default=2048)
    args = ap.parse_args()
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    rows = [("geonode", str(ROOT))]
    if args.baseline:
        rows.append(("baseline", os.path.abspath(args.baseline)))
    for name, path in rows:
        port = common.free_port()
        cfg = common.write_config(WORK / f"http-{name}", "node.json",
                                  node_config(port, upstream.server_address[1]))
        (cfg.parent / "benchapp.py").write_text(APP)
        server = common.Server(f"http-{name}", common.geonode_cmd(cfg), cfg.parent, port,
                               cfg.parent / "node.log", env={"PYTHONPATH": path})
        server.start()
        try:
            print(f"{name:9} slowloris  {slowloris(port, args.slowloris, args.seconds)}",
                  flush=True)
            print(f"{name:9} chunked    {chunked_upload(port, args.upload_mib)}", flush=True)
            print(f"{name:9} length     {declared_length(port)}", flush=True)
            print(f"{name:9} traversal  {traversal(port)}", flush=True)
        finally:
            server.stop()
    upstream.shutdown()


if __name__ == "__main__":
    main()
