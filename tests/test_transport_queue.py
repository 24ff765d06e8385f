"""The transports' shared outgoing queue and writer (geonode/transport/queue.py), on real
sockets, in-process on this process's hub: interleavings the hub makes rare but a busy
machine makes common, forced here so they are checked every run.

Shown with RawSocket; WebSocket, MQTT and long-poll peers share this code.
"""

from __future__ import annotations

import json
import time

import pytest
from gevent import socket as gsocket
from gevent.server import StreamServer
from support import scaled
from support.router import green_wait_for, make_router, realm, record_attached

from geonode.config.model import parse_transport
from geonode.transport import queue
from geonode.transport.rawsocket import connection_handler

pytestmark = pytest.mark.inprocess


def _len(payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big")


def _recv_exact(s, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {n} octets")
        data += chunk
    return data


def _read(s) -> list:
    head = _recv_exact(s, 4)
    assert head[0] == 0, head
    return json.loads(_recv_exact(s, int.from_bytes(head[1:], "big")))


@pytest.fixture
def joined():
    """(client socket, the node's peer for it): a RawSocket/JSON session joined to realm1,
    its writer parked (idle) after the WELCOME."""
    router = make_router(realm())
    peers = record_attached(router)
    server = StreamServer(("127.0.0.1", 0),
                          connection_handler(parse_transport(
                              {"type": "rawsocket", "endpoint": {"type": "tcp", "port": 0},
                               "serializers": ["json"]}, "t"), router, "tcp"))
    server.start()
    s = gsocket.create_connection(("127.0.0.1", server.server_port), timeout=scaled(10))
    try:
        s.sendall(bytes((0x7F, 0xF1, 0, 0)))
        assert _recv_exact(s, 4)[0] == 0x7F
        hello = json.dumps([1, "realm1", {"roles": {"subscriber": {}}}]).encode()
        s.sendall(b"\x00" + _len(hello) + hello)
        assert _read(s)[0] == 2   # WELCOME
        peer = peers[0]
        green_wait_for(lambda: peer._wstate == queue._PARKED, scaled(10), "an idle writer")
        yield s, peer
    finally:
        s.close()
        server.stop()


def _sweep_now(monkeypatch) -> None:
    """What the sweeper timer does once this writer has been idle RETIRE_AFTER: retire it.
    Its end is a hub callback: until the hub runs it, the writer is retired but not gone."""
    monkeypatch.setattr(queue, "RETIRE_AFTER", 0.0)
    time.sleep(0.001)   # parked strictly before the sweep's "now"
    queue._sweep()


def test_message_for_a_session_whose_writer_is_being_retired_is_sent(joined, monkeypatch):
    """The sweeper retires hundreds of idle writers at once; the hub runs their ends as
    callbacks, and polls sockets in between. A reader whose message made the router answer one
    of those sessions then (its writer retired, not yet gone) queued the answer and nobody
    wrote it: 2000 idle sessions subscribing at once lost hundreds of SUBSCRIBED on a busy
    machine (bench/probes/many_subscribes.py)."""
    s, peer = joined
    _sweep_now(monkeypatch)
    assert peer._wstate == queue._RETIRED
    # A reader runs before that callback: this session's SUBSCRIBE reaches the router now.
    assert peer._receive_payload(json.dumps([32, 7, {}, "com.example.topic"]))
    msg = _read(s)   # the client socket's timeout bounds the wait
    assert msg[:2] == [33, 7], msg


def test_close_asked_while_the_writer_is_being_retired_closes(joined, monkeypatch):
    """Same window, a message that ends the session (not JSON: ABORT, then the transport
    closes): the ABORT goes out and the connection ends."""
    s, peer = joined
    _sweep_now(monkeypatch)
    assert peer._wstate == queue._RETIRED
    assert not peer._receive_payload("not json")
    assert _read(s)[0] == 3   # ABORT
    assert s.recv(1) == b""   # closed (the client socket's timeout bounds the wait)
