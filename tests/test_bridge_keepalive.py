"""The bridge's HTTP client loses no event to an upstream's keep-alive expiry.

A client that pools connections sends its next request into a kept-alive connection the
upstream may be closing at that moment (its keep-alive timeout fired); the request is then
answered by nothing (urllib3/urllib3#944, psf/requests#4664), and a forwarded event would be
lost. geonode's client opens one connection per request, so it never meets that race. The
upstream here makes the race certain: the second request on any connection is closed
unanswered. (docs/ARCHITECTURE.md "Why we keep our own ...": pooled urllib3 fails this.)
"""

from __future__ import annotations

import json
import socket
import threading

import requests
from support import scaled, wait_for, web_node
from support.wamp import SyncClient, wait_subscribed

EVENTS = 5


class ExpiringUpstream:
    """Answers the first request of each connection (keep-alive), closes at the second."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.answered: list[bytes] = []
        self.expired = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _request(f) -> bytes | None:
        length = 0
        while True:
            line = f.readline()
            if not line:
                return None
            if line in (b"\r\n", b"\n"):
                return f.read(length)
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as f:
            body = self._request(f)
            if body is None:
                return
            with self.lock:
                self.answered.append(body)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            if self._request(f) is not None:
                with self.lock:
                    self.expired += 1   # closed unanswered, like an expired keep-alive

    def seen(self) -> int:
        with self.lock:
            return len(self.answered) + self.expired

    def close(self) -> None:
        self.sock.close()


def test_forwarder_delivers_every_event_to_an_upstream_expiring_keepalive(start_node):
    upstream = ExpiringUpstream()
    realm = {"name": "realm1", "roles": [{"name": "backend", "permissions": [
        {"uri": "", "match": "prefix",
         "allow": {"call": True, "register": True, "publish": True, "subscribe": True}}]}]}
    forwarder = {"type": "class", "classname": "crossbar.bridge.rest.MessageForwarder",
                 "realm": "realm1", "role": "backend",
                 "extra": {"subscriptions": [{"url": f"http://127.0.0.1:{upstream.port}/ev",
                                              "topic": "com.example.ev"}],
                           "expectedcode": 200}}
    # (the ws path is the test's window on the router: is the forwarder subscribed yet?)
    node = start_node(web_node({"pub": {"type": "publisher", "realm": "realm1",
                                        "role": "backend"},
                                "ws": {"type": "websocket", "auth": {"anonymous": {
                                    "type": "static", "role": "backend"}}}},
                               realms=[realm], components=[forwarder]))
    try:
        client = SyncClient(node.port)
        try:
            wait_subscribed(client, ("com.example.ev",))
        finally:
            client.close()
        for i in range(EVENTS):
            # One event at a time, each sent only once the last one reached the upstream.
            r = requests.post(f"http://127.0.0.1:{node.port}/pub",
                              json={"topic": "com.example.ev", "args": [i]}, timeout=scaled(5))
            assert r.status_code == 200, r.text
            wait_for(lambda: upstream.seen() >= i + 1, 10,  # noqa: B023 - called right here
                     f"event {i} at the upstream\n{node.log()}")
            assert upstream.seen() == i + 1, node.log()
        assert upstream.expired == 0
        assert [json.loads(body)["args"] for body in upstream.answered] == \
            [[i] for i in range(EVENTS)]
    finally:
        upstream.close()
