"""A small real server for tests/test_websocket.py: pywsgi + geonode's Handler + accept().

Run as ``python tests/_ws_server.py PORT``. The query string drives ``accept()``:
``protos=a,b`` (the subprotocols the server supports; absent: accept any), ``opts=<JSON>``
(WebSocket options in Crossbar's format). Messages are echoed, except the text commands
``burst <greenlets> <threads> <count> <size>`` (concurrent sends, then ``done``) and
``close <code>`` (server-initiated close) and ``closelater <code>`` (close from another
greenlet while the app greenlet is in ``receive()``) and ``tflood <count> <size>`` (one
thread sends ``count`` messages, then ``maxq <longest hand-off queue seen>``).
"""

from __future__ import annotations

import json
import sys
import urllib.parse

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

from geonode.web.handler import Handler  # noqa: E402
from geonode.websocket import HandshakeError, WebSocketOptions  # noqa: E402


def burst(ws, greenlets: int, threads: int, count: int, size: int) -> None:
    def sender(tag: str) -> None:
        for i in range(count):
            body = f"{tag}:{i}:".encode()
            ws.send(body + bytes([65 + i % 26]) * size)

    jobs = [gevent.spawn(sender, f"g{n}") for n in range(greenlets)]
    pool = gevent.get_hub().threadpool
    results = [pool.spawn(sender, f"t{n}") for n in range(threads)]
    gevent.joinall(jobs)
    for r in results:
        r.get()
    # Thread sends are queued to the hub in order: this text goes after every one of them.
    pool.spawn(ws.send, "done").get()


def tflood(ws, count: int, size: int) -> None:
    def sender() -> int:
        longest = 0
        for i in range(count):
            ws.send(bytes([65 + i % 26]) * size)
            longest = max(longest, len(ws._handoffs or ()))
        return longest

    longest = gevent.get_hub().threadpool.spawn(sender).get()
    ws.send(f"maxq {longest}")


def app(environ, start_response):
    qs = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    up = environ.get("geonode.websocket")
    if up is None:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"plain\n"]
    protos = qs["protos"][0].split(",") if "protos" in qs else None
    opts = WebSocketOptions.from_config(json.loads(qs["opts"][0]) if "opts" in qs else {})
    try:
        ws = up.accept(protos, opts)
    except HandshakeError as e:
        body = e.message.encode()
        start_response(f"{e.status} Refused", [("Content-Length", str(len(body)))] + e.headers)
        return [body]
    while True:
        msg = ws.receive()
        if msg is None:
            break
        if isinstance(msg, str) and msg.startswith("burst "):
            burst(ws, *map(int, msg.split()[1:]))
        elif isinstance(msg, str) and msg.startswith("tflood "):
            tflood(ws, *map(int, msg.split()[1:]))
        elif isinstance(msg, str) and msg.startswith("close "):
            ws.close(int(msg.split()[1]), "server says bye")
        elif isinstance(msg, str) and msg.startswith("closelater "):
            # closed by another greenlet while this one waits in receive()
            gevent.spawn_later(0.05, ws.close, int(msg.split()[1]), "later")
        else:
            ws.send(msg)
    return []


if __name__ == "__main__":
    WSGIServer(("127.0.0.1", int(sys.argv[1])), app, handler_class=Handler,
               log=None).serve_forever()
