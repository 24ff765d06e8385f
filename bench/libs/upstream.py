#!/usr/bin/env python3
"""The upstream HTTP server of bench/libs (reverse proxy and bridge loads): a fixed small JSON
answer from gevent's pywsgi, with TCP_NODELAY like real upstreams (gunicorn, nginx).

    python bench/libs/upstream.py PORT     # PORT 0: pick one; the port is printed
"""

from gevent import monkey

monkey.patch_all()

import socket  # noqa: E402
import sys  # noqa: E402

from gevent.pywsgi import WSGIHandler, WSGIServer  # noqa: E402

BODY = b'{"ok": true}'


class Handler(WSGIHandler):
    def handle(self):
        # pywsgi writes head and body in two sends: on a kept-alive connection Nagle would
        # hold the body for the client's delayed ACK (~40 ms per request).
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return super().handle()

    def log_request(self):
        pass


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(BODY)))])
    return [BODY]


if __name__ == "__main__":
    server = WSGIServer(("127.0.0.1", int(sys.argv[1])), app, log=None, handler_class=Handler)
    server.start()
    print(server.server_port, flush=True)
    server.serve_forever()
