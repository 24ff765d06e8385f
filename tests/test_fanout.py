"""Idle sessions are written without a writer greenlet each (``geonode.transport.queue._flush``:
an event to 19,000 idle subscribers, issue 16 item 3), and a write the socket takes only in part
finishes whole and in order. In-process on this process's hub; clients are real sockets in OS
threads.
"""

from __future__ import annotations

import json
import socket

import gevent
import pytest
from support import scaled
from support.router import green_wait_for, in_thread, make_router, record_attached, websocket_server
from support.ws import RawWamp, RawWebSocket, subscribed_clients

from geonode.transport import queue
from geonode.websocket.connection import WebSocket

pytestmark = pytest.mark.inprocess

TOPIC = "com.fanout.topic"


# -- writing idle sessions ----------------------------------------------------------------

@pytest.fixture
def node():
    """(server, the peers attached so far)"""
    router = make_router()
    peers = record_attached(router)
    srv = websocket_server(router, max_connections=100)
    yield srv, peers
    srv.stop(timeout=1)



def test_an_event_to_idle_sessions_makes_no_writer_greenlet(node):
    srv, peers = node
    n = 8

    clients = in_thread(lambda: subscribed_clients(srv.server_port, n, TOPIC), 60)
    try:
        # WELCOME and SUBSCRIBED went out without a writer greenlet.
        assert all(p._writer is None for p in peers)

        def publish_and_receive():
            pub = clients[0]
            pub.send([16, pub.next_request(), {"exclude_me": False}, TOPIC, ["hi"]])
            return [c.recv() for c in clients]
        events = in_thread(publish_and_receive, 60)
        assert [e[0] for e in events] == [36] * n
        assert [e[4] for e in events] == [["hi"]] * n
        assert all(p._writer is None and p._wstate == queue._RUNNING for p in peers)
    finally:
        for c in clients:
            c.close()
        gevent.idle()


def test_a_partial_write_finishes_whole_and_in_order(node, monkeypatch):
    """A subscriber that does not read: the first big event fills its socket part way
    (send_nowait leaves a tail), the next ones queue behind it; its GOODBYE's answer comes
    last. Read afterwards, every frame is whole and in order."""
    srv, peers = node
    results: list[int] = []
    real = WebSocket.send_nowait

    def recording(self, messages):
        r = real(self, messages)
        results.append(r)
        return r
    monkeypatch.setattr(WebSocket, "send_nowait", recording)
    big = 200_000
    count = 4

    def scenario():
        sub = RawWebSocket(srv.server_port, "/", headers={"Sec-WebSocket-Protocol":
                                                           "wamp.2.json"})

        def send(msg):
            sub.send_frame(1, json.dumps(msg).encode())
        send([1, "realm1", {"roles": {"subscriber": {}}}])
        assert json.loads(sub.recv_message()[1])[0] == 2
        send([32, 1, {}, TOPIC])
        assert json.loads(sub.recv_message()[1])[0] == 33
        return sub

    sub = in_thread(scenario, 60)
    try:
        green_wait_for(lambda: len(peers) == 1, scaled(10), "the subscriber's session")
        # A small send buffer on the node's side: the first event cannot go out whole.
        peers[0].ws._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)

        def publish():
            pub = RawWamp(srv.server_port, "")
            assert pub.hello()[0] == 2
            for i in range(count):
                pub.send([16, pub.next_request(), {}, TOPIC, [i, str(i) * big]])
            pub.send([16, pub.next_request(), {"acknowledge": True}, "com.other", []])
            assert pub.recv()[0] == 17    # all published
            pub.close()
        in_thread(publish, 60)
        sub_peer = peers[0]
        green_wait_for(lambda: queue.PART_WRITTEN in results, scaled(10), "a partial write")
        sub.send_frame(1, json.dumps([6, {}, "wamp.close.normal"]).encode())

        def read_all():
            sub.sock.settimeout(scaled(30))
            got = []
            while True:
                op, payload = sub.recv_message()
                assert op == 1, (op, payload[:100])
                msg = json.loads(payload)
                got.append(msg)
                if msg[0] == 6:
                    return got
        got = in_thread(read_all, 60)
        assert [m[0] for m in got] == [36] * count + [6]
        for i, m in enumerate(got[:-1]):
            assert m[4] == [i, str(i) * big]
        assert sub_peer._writer is None or sub_peer._wstate == queue._PARKED
    finally:
        sub.close()
        gevent.idle()
