"""WAMP over RawSocket (TCP and Unix): autobahn-python clients and hand-made frames."""

from __future__ import annotations

import asyncio
import json
import socket
import struct

import pytest
from support import router_config, scaled, web_transport
from support.certs import self_signed
from support.wamp import exercise, rawsocket_session, ws_session


@pytest.fixture(scope="module")
def node(start_module_node):
    transports = [
        {"type": "rawsocket", "endpoint": {"type": "tcp", "port": "$PORT",
                                           "interface": "127.0.0.1"},
         "options": {"max_message_size": 65536}},
        {"type": "rawsocket", "endpoint": {"type": "unix", "path": "wamp.sock"},
         "serializers": ["msgpack"]},
        web_transport({"ws": {"type": "websocket"}}, port="$PORT2"),
    ]
    return start_module_node(router_config(transports), nports=2)


def _run(coro, timeout: float = 30):
    return asyncio.run(asyncio.wait_for(coro, scaled(timeout)))


@pytest.mark.parametrize("serializer", ["json", "msgpack", "cbor", "ubjson"])
def test_join_rpc_pubsub_each_serializer(node, serializer):
    async def main():
        a = await rawsocket_session(serializer, port=node.port)
        b = await rawsocket_session(serializer, port=node.port)
        await exercise(a, b, tag=serializer)
        info = await b.call("wamp.session.get", b._session_id)
        assert info["transport"]["channel_framing"] == "rawsocket"
        assert info["transport"]["channel_serializer"] == serializer
        assert info["transport"]["peer"].startswith("tcp4:127.0.0.1:")
        a.leave()
        b.leave()

    _run(main())


def test_unix_socket_and_cross_transport(node):
    """A RawSocket/Unix msgpack session and a WebSocket json session talk to each other."""
    async def main():
        a = await rawsocket_session("msgpack", unix_path=str(node.dir / "wamp.sock"))
        b = await ws_session(node.ports[1], "json")
        await exercise(a, b, tag="unix")
        await exercise(b, a, tag="unix2")
        a.leave()
        b.leave()

    _run(main())


def _connect(node) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5))
    return s


def _recv_exact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        try:
            chunk = s.recv(n - len(data))
        except ConnectionResetError:  # closed with our bytes unread: an RST, not a FIN
            break
        if not chunk:
            break
        data += chunk
    return data


def _frame(kind: int, payload: bytes) -> bytes:
    return struct.pack("!I", (kind << 24) | len(payload)) + payload


def _read_frame(s: socket.socket) -> tuple[int, bytes]:
    head = _recv_exact(s, 4)
    assert len(head) == 4, "connection closed"
    return head[0], _recv_exact(s, int.from_bytes(head[1:], "big"))


def _at_eof(s: socket.socket) -> bool:
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, OSError) as e:
        return not isinstance(e, TimeoutError)
        return False


@pytest.mark.parametrize("hello,reply", [
    (bytes((0x7F, 0xF7, 0, 0)), bytes((0x7F, 0x10, 0, 0))),   # serializer 7: unsupported
    (bytes((0x7F, 0xF1, 0, 1)), bytes((0x7F, 0x30, 0, 0))),   # reserved octets used
    (b"GET / HTTP/1.1\r\n\r\n", b""),                          # not RawSocket at all
])
def test_handshake_errors(node, hello, reply):
    with _connect(node) as s:
        s.sendall(hello)
        assert _recv_exact(s, 4) == reply
        assert _at_eof(s)


def test_handshake_announces_max_length_and_enforces_it(node):
    with _connect(node) as s:
        s.sendall(bytes((0x7F, 0xF1, 0, 0)))
        # 65536 = 2 ** (9 + 7): exponent 7, json
        assert _recv_exact(s, 4) == bytes((0x7F, 0x71, 0, 0))
        s.sendall(struct.pack("!I", 100_000) + b"[" * 1000)
        assert _at_eof(s)


def test_ping_pong_and_protocol_violation(node):
    with _connect(node) as s:
        s.sendall(bytes((0x7F, 0xF1, 0, 0)))
        _recv_exact(s, 4)
        s.sendall(_frame(1, b"are you there?"))
        assert _read_frame(s) == (2, b"are you there?")
        s.sendall(_frame(0, json.dumps([1, "realm1", {"roles": {"caller": {}}}]).encode()))
        kind, payload = _read_frame(s)
        assert kind == 0 and json.loads(payload)[0] == 2          # WELCOME
        s.sendall(_frame(0, b"[48, 1, {}, 12345]"))               # CALL with a bad URI
        kind, payload = _read_frame(s)
        msg = json.loads(payload)
        assert msg[0] == 3 and msg[2] == "wamp.error.protocol_violation"   # ABORT
        assert _at_eof(s)
    # the node goes on serving others
    _run(_call_meta(node))


async def _call_meta(node):
    c = await rawsocket_session("cbor", port=node.port)
    assert isinstance(await c.call("wamp.session.count"), int)
    c.leave()


def _self_signed() -> dict[str, str]:
    cert, key = self_signed()
    return {"server.crt": cert, "server.key": key}


def test_rawsocket_over_tls(start_node):
    files = _self_signed()
    tls_node = start_node(router_config([
        {"type": "rawsocket", "serializers": ["cbor", "json"],
         "endpoint": {"type": "tcp", "port": "$PORT", "interface": "127.0.0.1",
                      "tls": {"key": "server.key", "certificate": "server.crt"}}}]),
        files=files)

    async def main():
        import ssl

        ctx = ssl.create_default_context(cafile=str(tls_node.dir / "server.crt"))
        sessions = [await rawsocket_session(name, port=tls_node.port, ssl=ctx)
                    for name in ("cbor", "json")]
        await exercise(sessions[0], sessions[1], tag="tls")
        info = await sessions[0].call("wamp.session.get", sessions[0]._session_id)
        assert info["transport"]["channel_type"] == "tls"
        for s in sessions:
            s.leave()

    _run(main())


@pytest.mark.inprocess
def test_rawsocket_config_errors_name_the_key():
    """RawSocket reads serializers and queue bounds with the WebSocket path's rules (in the
    config model, so check says the same)."""
    from geonode.config import ConfigError
    from geonode.config.model import parse_transport

    path = "workers[0].transports[1]"
    endpoint = {"type": "tcp", "port": 0, "interface": "127.0.0.1"}
    with pytest.raises(ConfigError, match=r"transports\[1\]\.serializers\[1\]: unknown "
                                          r"serializer 'yaml'"):
        parse_transport({"type": "rawsocket", "serializers": ["json", "yaml"],
                         "endpoint": endpoint}, path)
    with pytest.raises(ConfigError, match=r"transports\[1\]\.options\.max_queue: must be a "
                                          r"positive integer"):
        parse_transport({"type": "rawsocket", "options": {"max_queue": 0},
                         "endpoint": endpoint}, path)


def test_client_resetting_during_handshake_costs_no_traceback(node):
    """Half a handshake then a TCP reset: the server drops it quietly and keeps serving."""
    for hello in (b"\x7f", b"\x7f\xf1\x00\x00"):
        s = socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5))
        s.sendall(hello)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()                                   # RST instead of FIN

    # The join below takes several trips through the node's loop, which has the two resets
    # ready before it: they are handled (and any traceback logged) by the time it is done.
    async def main():
        s = await rawsocket_session("json", port=node.port)
        s.leave()

    _run(main())
    assert "Traceback" not in node.log()
