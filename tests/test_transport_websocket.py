"""WAMP over WebSocket: autobahn-python clients against a real node, every serializer."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
import websocket  # websocket-client: a raw client that can misbehave on purpose
from support import async_wait_for, router_config, scaled, web_transport
from support.wamp import WS_SERIALIZERS, exercise, ws_session

PATHS = {
    "ws": {"type": "websocket"},
    "wsjson": {"type": "websocket", "serializers": ["json"]},
    "wsany": {"type": "websocket", "serializers": ["msgpack", "json"],
              "options": {"require_websocket_subprotocol": False}},
}


@pytest.fixture(scope="module")
def node(start_module_node):
    return start_module_node(router_config([web_transport(PATHS)]))


def _run(coro, timeout: float = 30):
    return asyncio.run(asyncio.wait_for(coro, scaled(timeout)))


@pytest.mark.parametrize("serializer", WS_SERIALIZERS)
def test_join_rpc_pubsub_each_serializer(node, serializer):
    async def main():
        a = await ws_session(node.port, serializer)
        b = await ws_session(node.port, serializer)
        await exercise(a, b, tag=serializer.replace(".", "_"))
        info = await b.call("wamp.session.get", b._session_id)
        transport = info["transport"]
        assert transport["websocket_protocol"] == f"wamp.2.{serializer}"
        assert transport["channel_serializer"] == serializer
        assert transport["peer"].startswith("tcp4:127.0.0.1:")
        assert "sec-websocket-key" in transport["http_headers_received"]
        a.leave()
        b.leave()
        await asyncio.wait_for(a.left, scaled(5))

    _run(main())


def test_one_event_many_serializers(node):
    """One PUBLISH reaches subscribers on every serializer (each encodes the EVENT its way)."""
    async def main():
        loop = asyncio.get_running_loop()
        subs = [await ws_session(node.port, s) for s in WS_SERIALIZERS]
        futs = []
        for s in subs:
            f = loop.create_future()
            futs.append(f)
            await s.subscribe(lambda *a, _f=f, **k: _f.done() or _f.set_result((a, k)),
                              "com.test.fanout")
        pub = await ws_session(node.port, "json")
        pub.publish("com.test.fanout", "x", b"\x01\x02", n=7)
        for f in futs:
            assert await asyncio.wait_for(f, scaled(5)) == (("x", b"\x01\x02"), {"n": 7})

    _run(main())


def test_sessions_are_detached_when_connections_go(node):
    async def main():
        watcher = await ws_session(node.port)
        others = [await ws_session(node.port, s) for s in ("json", "msgpack", "cbor")]
        ids = {o._session_id for o in others}
        assert ids <= set(await watcher.call("wamp.session.list"))
        for o in others[:2]:
            o.leave()
        others[2]._transport.close()   # no GOODBYE: the connection just goes

        async def all_gone() -> bool:
            return not ids & set(await watcher.call("wamp.session.list"))

        await async_wait_for(all_gone, 5, "the three sessions to be detached", interval=0.1)

    _run(main())


def _raw_ws(node, protocol: str = "wamp.2.json", path: str = "ws", **kw):
    return websocket.create_connection(f"{node.ws_url}/{path}", subprotocols=[protocol],
                                       timeout=scaled(10), **kw)


HELLO = json.dumps([1, "realm1", {"roles": {"subscriber": {}, "caller": {}}}])


@pytest.mark.parametrize("protocol,payload", [
    ("wamp.2.json", "this is not json"),
    ("wamp.2.json", "[999, 1, {}]"),
    ("wamp.2.json", '{"not": "a list"}'),
    ("wamp.2.json", "[32, 1, {}, 42]"),
    ("wamp.2.msgpack", "text frame where msgpack is binary"),
    ("wamp.2.cbor", b"\xff\xfe\xfd"),
])
def test_malformed_message_ends_only_that_session(node, protocol, payload):
    async def main():
        loop = asyncio.get_running_loop()
        callee = await ws_session(node.port)
        await callee.register(lambda: "still here", "com.test.alive")

        def misbehave():
            ws = _raw_ws(node, protocol)
            hello = json.loads(HELLO)
            if protocol == "wamp.2.json":
                ws.send(HELLO)
            else:
                import cbor2
                import msgpack
                enc = msgpack.packb if "msgpack" in protocol else cbor2.dumps
                ws.send_binary(enc(hello))
            ws.recv()                       # WELCOME
            if isinstance(payload, bytes):
                ws.send_binary(payload)
            else:
                ws.send(payload)
            frames = []
            try:
                while True:
                    opcode, data = ws.recv_data()
                    frames.append((opcode, data))
                    if opcode == websocket.ABNF.OPCODE_CLOSE:
                        break
            except websocket.WebSocketConnectionClosedException:
                pass
            ws.close()
            return frames

        log_before = node.log().count("protocol violation")
        frames = await loop.run_in_executor(None, misbehave)
        # an ABORT (protocol_violation) then the close, with 1002 (protocol error)
        assert frames and frames[-1][0] == websocket.ABNF.OPCODE_CLOSE
        assert frames[-1][1][:2] == (1002).to_bytes(2, "big"), frames[-1]
        abort_seen = any(b"protocol_violation" in (d if isinstance(d, bytes) else d.encode())
                         or b"protocol_violation" in _decode_any(d) for _, d in frames[:-1])
        assert abort_seen, frames
        other = await ws_session(node.port, "msgpack")
        assert await other.call("com.test.alive") == "still here"
        await async_wait_for(lambda: node.log().count("protocol violation") > log_before, 1,
                             "the protocol violation's log line", interval=0.05)
        assert node.log().count("protocol violation") == log_before + 1
        callee.leave()
        other.leave()

    _run(main())


def _decode_any(data: bytes) -> bytes:
    import cbor2
    import msgpack
    for dec in (msgpack.unpackb, cbor2.loads):
        try:
            return repr(dec(data)).encode()
        except Exception:
            pass
    return b""


def _http(node, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5)) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_plain_get_shows_status_page(node):
    reply = _http(node, b"GET /wsjson HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")   # not "200 Error"
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5)) as s:
        s.sendall(b"GET /wsjson HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        body = b""
        while chunk := s.recv(65536):
            body += chunk
    assert b"text/html" in body and b"wamp.2.json" in body and b"wamp.2.msgpack" not in body


def test_unconfigured_serializer_is_refused(node):
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    reply = _http(node, (
        "GET /wsjson HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: wamp.2.msgpack\r\n\r\n").encode())
    assert reply.startswith(b"HTTP/1.1 400"), reply[:100]


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_slow_subscriber_is_closed_not_buffered(start_node):
    """A subscriber that never reads, a publisher flooding: the node stays responsive, the
    slow session is closed when its queue passes the bound, memory stays bounded."""
    paths = {"ws": {"type": "websocket", "options": {"max_queue": 200}}}
    node = start_node(router_config([web_transport(paths)]))
    payload = "x" * 4096

    async def main():
        loop = asyncio.get_running_loop()
        # The slow one: joins, subscribes, then never reads (tiny receive buffer).
        slow = _raw_ws(node, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
        slow.send(HELLO)
        json.loads(slow.recv())
        slow.send(json.dumps([32, 1, {}, "com.test.flood"]))
        assert json.loads(slow.recv())[0] == 33
        rss_before = _rss_kb(node.proc.pid)
        callee = await ws_session(node.port, "msgpack")
        await callee.register(lambda: "pong", "com.test.ping")
        pub = await ws_session(node.port, "json")
        from autobahn.wamp.types import PublishOptions
        t0 = time.monotonic()
        for i in range(4000):     # ~16 MB for the slow subscriber
            pub.publish("com.test.flood", i, payload)
            if i % 200 == 0:
                await asyncio.sleep(0)  # a yield, not a wait: the publishes go out meanwhile
        await pub.publish("com.test.flood", "last", options=PublishOptions(acknowledge=True))
        assert await pub.call("com.test.ping") == "pong"
        assert time.monotonic() - t0 < scaled(20)
        await async_wait_for(lambda: "outgoing queue over its bound" in node.log(), 10,
                             "the slow subscriber's queue to pass its bound", interval=0.1)
        assert "outgoing queue over its bound" in node.log()
        assert _rss_kb(node.proc.pid) - rss_before < 64 * 1024

        def drain_slow():
            # It gets what was in flight, then the connection ends.
            slow.settimeout(scaled(10))
            try:
                while True:
                    opcode, _ = slow.recv_data()
                    if opcode == websocket.ABNF.OPCODE_CLOSE:
                        return True
            except (websocket.WebSocketConnectionClosedException, ConnectionError):
                return True
            except Exception as e:  # noqa: BLE001
                return e

        assert await loop.run_in_executor(None, drain_slow) is True
        assert await pub.call("com.test.ping") == "pong"

    _run(main(), timeout=60)


def test_no_subprotocol_falls_back_to_json_when_allowed(node):
    ws = websocket.create_connection(f"{node.ws_url}/wsany", timeout=scaled(10))
    try:
        ws.send(HELLO)
        welcome = json.loads(ws.recv())
        assert welcome[0] == 2
    finally:
        ws.close()


@pytest.mark.parametrize("serializer", ["json.batched", "cbor.batched"])
def test_batched_subscriber_gets_a_large_burst(node, serializer):
    """A burst bigger than one batch frame (256 KiB) arrives whole and in order."""
    async def main():
        loop = asyncio.get_running_loop()
        sub = await ws_session(node.port, serializer)
        got: list = []
        done = loop.create_future()

        def on_event(i, blob):
            got.append(i)
            if i == 399 and not done.done():
                done.set_result(None)

        await sub.subscribe(on_event, f"com.test.burst.{serializer}")
        pub = await ws_session(node.port, "msgpack")
        blob = "y" * 2048
        for i in range(400):         # ~800 KiB queued for the subscriber at once
            pub.publish(f"com.test.burst.{serializer}", i, blob)
        await asyncio.wait_for(done, scaled(20))
        assert got == list(range(400))
        sub.leave()
        pub.leave()

    _run(main())


def test_payload_the_other_serializer_cannot_encode_fails_the_call(node):
    """A CBOR bignum cannot go to a msgpack client: the call fails with invalid_payload instead
    of hanging, whichever way the payload travels, and both sessions carry on."""
    # autobahn raises its SerializationError for ERROR wamp.error.invalid_payload
    from autobahn.wamp.exception import SerializationError

    async def main():
        big = 2 ** 70
        cb = await ws_session(node.port, "cbor")
        mp = await ws_session(node.port, "msgpack")
        await mp.register(lambda x: "got it", "com.test.mp_callee")
        await cb.register(lambda: big, "com.test.cbor_callee")
        for caller, proc, args in ((cb, "com.test.mp_callee", [big]),   # INVOCATION fails
                                   (mp, "com.test.cbor_callee", [])):   # RESULT fails
            with pytest.raises(SerializationError, match="cannot be encoded with msgpack"):
                await asyncio.wait_for(caller.call(proc, *args), scaled(5))
        assert await mp.call("com.test.mp_callee", 1) == "got it"
        assert await cb.call("com.test.cbor_callee") == big
        cb.leave()
        mp.leave()

    _run(main())
