"""An ended session is freed by reference counting alone (issue 16).

The node freezes what it built at start-up, and each full collection of the cyclic GC walks
every live session (tens of ms at 19,000 sessions): a session's objects must therefore leave
no reference cycle behind when they end, so that they are freed at once, not whenever a full
collection next runs. The server runs on this process's hub with the cyclic GC off; the
clients are real sockets in an OS thread.
"""

from __future__ import annotations

import gc
import json
import socket
import time
import weakref

import gevent
import pytest
from support import scaled
from support.router import (
    green_wait_for,
    in_thread,
    make_router,
    rawsocket_server,
    websocket_server,
)
from support.ws import subscribed_clients

pytestmark = pytest.mark.inprocess

N = 10
TOPIC = "com.teardown.topic"


@pytest.fixture
def server():
    router = make_router()
    srv = websocket_server(router, max_connections=N + 5)
    yield srv, router
    srv.stop(timeout=1)


@pytest.fixture
def no_cyclic_gc():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("ending", ["goodbye_close", "abrupt"])
def test_ended_sessions_are_freed_without_the_cyclic_gc(server, no_cyclic_gc, ending):
    srv, router = server
    port = srv.server_port

    def open_sessions():
        clients = subscribed_clients(port, N, TOPIC)
        # a message through the router, so the writer path has run too
        pub = clients[0]
        pub.send([16, pub.next_request(), {"exclude_me": False}, TOPIC, ["hi"]])
        assert [c.recv()[0] for c in clients] == [36] * N
        return clients

    clients = in_thread(open_sessions, 30)
    green_wait_for(lambda: len(router.sessions) == N, scaled(10), "every session attached")
    refs = [weakref.ref(o) for s in router.sessions for o in (s, s.peer, s.peer.ws)]

    def end():
        for c in clients:
            if ending == "abrupt":
                c.ws.sock.shutdown(2)
                c.ws.sock.close()
            else:
                c.send([6, {}, "wamp.close.normal"])
                assert c.recv()[0] == 6
                c.close()
    in_thread(end, 30)
    green_wait_for(lambda: not router.sessions and len(srv.pool) == 0, scaled(10),
                   "every session ended")
    # the ended sessions' greenlets run their last lines just after the release
    deadline = time.monotonic() + scaled(5)
    while any(r() is not None for r in refs) and time.monotonic() < deadline:
        gevent.sleep(0.01)
    alive = [type(r()).__name__ for r in refs if r() is not None]
    assert not alive, f"kept alive by a reference cycle: {alive}"


def _raw_wamp(port: int) -> socket.socket:
    """A RawSocket json client (handshake, then HELLO/WELCOME and SUBSCRIBE/SUBSCRIBED)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(15))
    f = s.makefile("rb")
    s.sendall(bytes((0x7F, 0xF1, 0, 0)))
    assert f.read(4)[0] == 0x7F

    def call(msg: list) -> list:
        data = json.dumps(msg).encode()
        s.sendall(bytes((0,)) + len(data).to_bytes(3, "big") + data)
        head = f.read(4)
        return json.loads(f.read(int.from_bytes(head[1:], "big")))
    assert call([1, "realm1", {"roles": {"subscriber": {}}}])[0] == 2
    assert call([32, 1, {}, TOPIC])[0] == 33
    f.close()
    return s


def test_ended_rawsocket_sessions_are_freed_without_the_cyclic_gc(no_cyclic_gc):
    router = make_router()
    srv = rawsocket_server(router)
    try:
        port = srv.server_port
        clients = in_thread(lambda: [_raw_wamp(port) for _ in range(N)], 30)
        green_wait_for(lambda: len(router.sessions) == N, scaled(10), "every session attached")
        refs = [weakref.ref(o) for s in router.sessions for o in (s, s.peer)]
        for c in clients:
            c.close()
        green_wait_for(lambda: not router.sessions, scaled(10), "every session ended")
        deadline = time.monotonic() + scaled(5)
        while any(r() is not None for r in refs) and time.monotonic() < deadline:
            gevent.sleep(0.01)
        alive = [type(r()).__name__ for r in refs if r() is not None]
        assert not alive, f"kept alive by a reference cycle: {alive}"
    finally:
        srv.stop(timeout=1)
