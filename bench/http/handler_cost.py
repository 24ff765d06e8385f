"""The handler's own CPU per keep-alive request: gevent's plain pywsgi handler vs geonode's.

No network, no load generator: a socketpair is fed a fixed number of pipelined requests and
one handler serves them all; the process CPU time is divided by the count (best of a few
rounds). What geonode's Handler adds on top of ``gevent.pywsgi.WSGIHandler`` (strict HTTP/1.1
checks, HEAD, one write per response) shows as the difference (both without a log line).

    python bench/http/handler_cost.py                # 20000 requests x 5 rounds per handler
    python bench/http/handler_cost.py --requests 5000 --rounds 3
    python bench/http/handler_cost.py --timeouts     # the server has geonode's default timeouts
    python bench/http/handler_cost.py --only geonode # geonode's handler alone (for callgrind A/B)
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIHandler  # noqa: E402

from geonode.web.handler import Handler  # noqa: E402
from geonode.web.limits import Timeouts  # noqa: E402

REQUEST = (b"GET /j HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: bench\r\n"
           b"Accept: */*\r\n\r\n")
LAST = b"GET /j HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json; charset=utf-8"),
                              ("Content-Length", "2"), ("Access-Control-Allow-Origin", "*")])
    return [b"42"]


class _PlainPywsgi(WSGIHandler):
    """pywsgi's handler without its per-request log line (geonode's has none either)."""

    def log_request(self) -> None:
        pass


class _Server:
    """The few attributes a pywsgi handler reads from its server."""

    application = staticmethod(app)
    closed = False
    error_log = sys.stderr
    log = None

    def get_environ(self) -> dict:
        return {"SERVER_NAME": "bench", "SERVER_PORT": "8080", "wsgi.url_scheme": "http",
                "wsgi.version": (1, 0), "wsgi.errors": sys.stderr, "wsgi.multithread": False,
                "wsgi.multiprocess": False, "wsgi.run_once": False}


class _TimedServer(_Server):
    """A server with the default timeouts of a web transport (``geonode.web.limits``)."""

    client_timeout = Timeouts().client
    request_head_timeout = Timeouts().request_head
    keepalive_timeout = Timeouts().keepalive


def one_round(handler_class: type, requests: int, server_class: type = _Server) -> float:
    """CPU microseconds per request for one handler serving ``requests`` pipelined requests."""
    server_side, client = socket.socketpair()

    def feed() -> None:
        for _ in range(requests // 100):
            client.sendall(REQUEST * 100)
            gevent.sleep(0)
        client.sendall(LAST)

    def drain() -> None:
        while client.recv(1 << 20):
            pass

    feeder = gevent.spawn(feed)
    reader = gevent.spawn(drain)
    handler = handler_class(server_side, ("127.0.0.1", 1), server_class())
    start = time.process_time()
    gevent.spawn(handler.handle).join()
    used = time.process_time() - start
    reader.kill()
    feeder.kill()
    client.close()
    return used / (requests // 100 * 100 + 1) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--timeouts", action="store_true",
                    help="give the server geonode's default timeouts (what a node has)")
    ap.add_argument("--only", choices=("gevent", "geonode"),
                    help="one handler only (instructions per request under valgrind: run it "
                         "with two --requests counts and divide the difference)")
    args = ap.parse_args()
    server = _TimedServer if args.timeouts else _Server
    results = {}
    for name, cls in (("gevent.pywsgi.WSGIHandler", _PlainPywsgi),
                      ("geonode.web.handler.Handler", Handler)):
        if args.only and args.only not in name:
            continue
        results[name] = min(one_round(cls, args.requests, server) for _ in range(args.rounds))
        print(f"{name:30s} {results[name]:6.2f} us CPU/request (best of {args.rounds})")
    if args.only:
        return
    base, ours = results.values()
    print(f"{'geonode adds':30s} {ours - base:6.2f} us ({(ours / base - 1) * 100:+.0f}%)")


if __name__ == "__main__":
    main()
