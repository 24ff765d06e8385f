#!/usr/bin/env python3
"""One item's hot path in this process, no load generator: CPU per operation.

    python bench/libs/inproc.py ws 20000 [WARM]    # geonode's code (WARM: warm-up ops)
    GEONODE_LIBS=wsproto PYTHONPATH=.:bench/libs/shim python bench/libs/inproc.py ws 20000

Loads (each after a warm-up of a tenth of ``n``):
  ws      ``n`` 100-byte masked text frames through a socketpair into the WebSocket class
          that ``Upgrader.accept`` builds; each echoed (receive + send).
  wsbig   ``n`` 1 MiB masked binary frames, echoed.
  http    ``n`` pipelined keep-alive GETs (3 headers) through geonode's pywsgi Handler
          (bench/http/handler_cost.py's load).
  head    the request checks alone, no handler, no socket: ``n`` times one 3-header GET head
          parsed and checked (ours: httprules + RequestHeaders.parse; with GEONODE_LIBS=h11:
          a fresh h11.Connection, receive_data, next_event).
  client  ``n`` GETs with ``geonode.bridge.httpclient.request`` to an upstream in another
          process (its CPU is not counted).
  proxy   ``n`` GETs through the ``reverseproxy`` service's WSGI app to that upstream.
  static  ``n`` GETs of a 4 KiB file through the ``static`` service's WSGI app.
  static1m  the same with a 1 MiB file.
Prints ``<load> <µs of CPU per op>``: process CPU time (user + system), so the kernel's
share of socket work counts too. Under ``valgrind --tool=callgrind`` the instruction count
of two runs with different ``n`` gives instructions per op (bench/libs/instructions.py).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "wamp"))
sys.path.insert(0, str(ROOT / "bench" / "http"))

from wire import frame  # noqa: E402


def _drain(sock) -> None:
    try:
        while sock.recv(1 << 20):
            pass
    except OSError:
        pass


def load_ws(n: int, size: int = 100) -> None:
    from geonode.websocket import handshake
    from geonode.websocket.options import WebSocketOptions

    server, client = socket.socketpair()
    if size > 100:
        data = frame(os.urandom(size), 2)
    else:
        data = frame(b"x" * size, 1)
    batch = 100 if size <= 100 else 1

    def feed() -> None:
        for _ in range(n // batch):
            client.sendall(data * batch)
            gevent.sleep(0)

    reader = gevent.spawn(_drain, client)
    feeder = gevent.spawn(feed)
    ws = handshake.WebSocket(server, server.makefile("rb"), WebSocketOptions())
    receive, send = ws.receive, ws.send
    for _ in range(n // batch * batch):
        send(receive())
    feeder.kill()
    reader.kill()
    server.close()
    client.close()


def load_http(n: int) -> None:
    import handler_cost

    from geonode.web.handler import Handler

    handler_cost.one_round(Handler, n)




def _upstream() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "libs" / "upstream.py"), "0"],
                            stdout=subprocess.PIPE, env=dict(os.environ, GEONODE_LIBS=""))
    return proc, int(proc.stdout.readline())


def load_client(n: int, port: int) -> None:
    from geonode.bridge import httpclient

    url = f"http://127.0.0.1:{port}/x"
    for _ in range(n):
        r = httpclient.request("GET", url, headers={"Accept": "application/json"}, timeout=10)
        assert r.status == 200, r


def load_head(n: int) -> None:
    import io

    head = b"GET /j HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
    if os.environ.get("GEONODE_LIBS") == "h11":
        import h11

        for _ in range(n):
            conn = h11.Connection(h11.SERVER)
            conn.receive_data(head)
            ev = conn.next_event()
        assert type(ev) is h11.Request
        return
    from geonode.web.handler import RequestHeaders
    from geonode.web.httprules import check_request_line, framing

    line, _, rest = head.partition(b"\r\n")
    text = line.decode("latin-1") + "\r\n"
    for _ in range(n):
        _, _, version, _ = check_request_line(text)
        framing(RequestHeaders.parse(io.BytesIO(rest)), version)


def _environ(path: str, port: int | None = None) -> dict:
    import io

    return {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8080",
            "HTTP_USER_AGENT": "bench", "HTTP_ACCEPT": "*/*", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr}


def _consume(app, path: str, n: int) -> None:
    seen = []

    def start_response(status, headers, exc_info=None):
        seen.append(status)

    for _ in range(n):
        seen.clear()
        body = app(_environ(path), start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
        assert seen and seen[0].startswith("200"), seen


def _ctx(config_dir: Path, json_path: str):
    from geonode.web.context import BuildContext

    return BuildContext(config_dir=config_dir, router=None, transport_options={},
                        json_path=json_path)


def load_proxy(n: int, port: int) -> None:
    from geonode.config.model import parse_service
    from geonode.web.services import reverseproxy

    app = reverseproxy.build(parse_service({"type": "reverseproxy", "host": "127.0.0.1",
                                            "port": port}, "paths.p"), _ctx(ROOT, "paths.p"))
    _consume(app, "/x", n)


def load_static(n: int, size: int) -> None:
    from geonode.web.services import static

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "f.bin").write_bytes(os.urandom(size))
        from geonode.config.model import parse_service

        app = static.build(parse_service({"type": "static", "directory": d}, "paths.s"),
                           _ctx(Path(d), "paths.s"))
        _consume(app, "/f.bin", n)


def run(load: str, n: int, warm: int | None = None) -> float:
    upstream = None
    try:
        if load in ("client", "proxy"):
            upstream, port = _upstream()
            fn = {"client": load_client, "proxy": load_proxy}[load]

            def go(k: int) -> None:
                fn(k, port)
        else:
            go = {"ws": load_ws, "wsbig": lambda k: load_ws(k, 1 << 20),
                  "http": load_http, "head": load_head, "static": lambda k: load_static(k, 4096),
                  "static1m": lambda k: load_static(k, 1 << 20)}[load]
        go(max(n // 10, 1) if warm is None else warm)   # warm-up: imports, caches, pools
        t = time.process_time()
        go(n)
        return (time.process_time() - t) / n * 1e6
    finally:
        if upstream is not None:
            upstream.kill()
            upstream.wait()


if __name__ == "__main__":
    load, n = sys.argv[1], int(sys.argv[2])
    warm = int(sys.argv[3]) if len(sys.argv) > 3 else None
    print(f"{load} {run(load, n, warm):.2f}")
