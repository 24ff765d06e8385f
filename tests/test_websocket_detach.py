"""An upgraded WAMP WebSocket leaves its HTTP request behind (issue 16: lean idle sessions).

Once the 101 is out, the session runs in a greenlet of its own: the pywsgi handler, its
environ, headers and 8 KiB read buffer are freed, the connection still counts against
``max_connections`` and the graceful stop still closes it with 1001. The server runs on this
process's hub; the clients are real sockets in an OS thread.
"""

from __future__ import annotations

import gc

import gevent
import pytest
from support import scaled
from support.router import green_wait_for, in_thread, make_router, websocket_server
from support.ws import subscribed_clients

from geonode.web.handler import Handler
from geonode.websocket.connection import WebSocket
from geonode.websocket.handshake import Upgrader

pytestmark = pytest.mark.inprocess

N = 20
TOPIC = "com.lean.topic"


def _alive(cls: type) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is cls)


@pytest.fixture
def server():
    srv = websocket_server(make_router(), max_connections=N + 5)
    yield srv
    srv.stop(timeout=1)


def test_idle_sessions_keep_no_request_state(server):
    handlers_before, upgraders_before = _alive(Handler), _alive(Upgrader)
    port = server.server_port

    clients = in_thread(lambda: subscribed_clients(port, N, TOPIC), 30)
    try:
        green_wait_for(lambda: len(server.connections._websockets) == N, scaled(10),
                       "every session handed over")
        # No request handler (nor its environ and buffers) stays behind for an idle session...
        assert _alive(Handler) == handlers_before
        assert _alive(Upgrader) == upgraders_before
        assert _alive(WebSocket) >= N
        # ...yet each still holds a slot of the endpoint's connection cap.
        assert len(server.pool) == N

        def publish_and_receive():
            pub = clients[0]
            pub.send([16, pub.next_request(), {"exclude_me": False}, TOPIC, ["hi"]])
            return [c.recv()[0] for c in clients]
        assert in_thread(publish_and_receive, 30) == [36] * N

        # The graceful stop finds the handed-over WebSockets and closes them with 1001.
        assert server.connections.close_websockets() == N

        def closes():
            codes = []
            for c in clients:
                c.ws.settimeout(scaled(5))
                frame = c.ws.recv_frame()
                codes.append(int.from_bytes(frame.data[:2], "big"))
            return codes
        assert in_thread(closes, 30) == [1001] * N
        green_wait_for(lambda: len(server.pool) == 0, scaled(10), "connections released")
        assert not server.connections._websockets
    finally:
        for c in clients:
            c.close()
        gevent.idle()
