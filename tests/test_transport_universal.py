"""Crossbar's stand-alone ``websocket`` transport and the ``universal`` transport (RawSocket and
HTTP/WebSocket on one port, told apart by the first octet), with autobahn-python clients."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from support import router_config, scaled
from support.config import endpoint
from support.http import exchange, read_until_close
from support.wamp import exercise, leave, rawsocket_session, ws_session


@pytest.fixture(scope="module")
def node(start_module_node):
    transports = [
        {"type": "websocket", "endpoint": endpoint("$PORT"), "serializers": ["json", "cbor"],
         "url": "ws://127.0.0.1/"},
        {"type": "universal", "endpoint": endpoint("$PORT2"),
         "rawsocket": {"serializers": ["msgpack", "json"]},
         "websocket": {"ws": {"type": "websocket"}},
         "web": {"paths": {"/": {"type": "json", "value": {"web": True}},
                           "api": {"type": "json", "value": "api"}}}},
        # a universal transport without RawSocket, and old Crossbar's singular "serializer"
        {"type": "universal", "endpoint": endpoint("$PORT3"),
         "websocket": {"/": {"type": "websocket"}}},
        {"type": "rawsocket", "endpoint": endpoint("$PORT4"), "serializer": "cbor"},
    ]
    return start_module_node(router_config(transports), nports=4)


def _run(coro, timeout: float = 30):
    return asyncio.run(asyncio.wait_for(coro, scaled(timeout)))


@pytest.mark.parametrize("path", ["ws", "", "any/path/at/all"])
def test_websocket_transport_serves_wamp_on_every_path(node, path):
    async def main():
        a = await ws_session(node.port, "json", path=path)
        b = await ws_session(node.port, "cbor", path="other")
        await exercise(a, b, tag=path or "root")
        info = await a.call("wamp.session.get", a._session_id)
        assert info["transport"]["http_path"] == "/" + path
        await leave(a)
        await leave(b)

    _run(main())


def test_websocket_transport_plain_get_and_serializers(node):
    status = exchange(node.port, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200") and b"wamp.2.cbor" in status
    assert b"wamp.2.msgpack" not in status   # only the configured serializers are offered


def test_universal_rawsocket_and_websocket_on_one_port(node):
    port = node.ports[1]

    async def main():
        raw = await rawsocket_session("msgpack", port=port)
        ws = await ws_session(port, "json", path="ws")
        await exercise(raw, ws, tag="uni1")
        await exercise(ws, raw, tag="uni2")
        info = await ws.call("wamp.session.get", raw._session_id)
        assert info["transport"]["channel_framing"] == "rawsocket"
        await leave(raw)
        await leave(ws)

    _run(main())


def test_universal_web_paths(node):
    port = node.ports[1]
    for path, body in ((b"/", b'{"web":true}'), (b"/api", b'"api"')):
        resp = exchange(port, b"GET " + path + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 200"), resp
        assert resp.rstrip().endswith(body), resp
    # the websocket entry's plain GET: its status page, not the web paths
    resp = exchange(port, b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 200") and b"wamp.2.json" in resp


def test_universal_root_websocket_and_no_rawsocket(node):
    port = node.ports[2]

    async def main():
        a = await ws_session(port, "json", path="")
        await leave(a)

    _run(main())
    # anything but the root: no web paths here, 404
    resp = exchange(port, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 404"), resp
    # a RawSocket handshake where no RawSocket is configured: closed, nothing answered
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as s:
        s.sendall(b"\x7f\xf1\x00\x00")
        assert read_until_close(s) == b""


def test_rawsocket_singular_serializer(node):
    async def main():
        a = await rawsocket_session("cbor", port=node.ports[3])
        await leave(a)

    _run(main())
    # json is not among its serializers: the spec's error octet (1: serializer unsupported)
    with socket.create_connection(("127.0.0.1", node.ports[3]), timeout=scaled(10)) as s:
        s.sendall(b"\x7f\xf1\x00\x00")
        assert read_until_close(s) == b"\x7f\x10\x00\x00"


@pytest.mark.parametrize("garbage", [b"\x00\x01\x02\x03\r\n\r\n", b"\xff" * 64 + b"\r\n\r\n",
                                     b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"])
def test_universal_garbage_first_octet_then_still_serving(node, garbage):
    """Not RawSocket, not HTTP (a TLS hello on the plain port, binary junk): a 400 or a clean
    close; the node keeps serving both protocols."""
    port = node.ports[1]
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as s:
        s.sendall(garbage)
        s.shutdown(socket.SHUT_WR)
        answer = read_until_close(s)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer
    test_universal_rawsocket_and_websocket_on_one_port(node)


def test_universal_rawsocket_bytes_split_and_pipelined(node):
    """The handshake one octet at a time (the sniffer sees only the first), then a HELLO in
    the same segment as the handshake's rest: nothing is lost between sniffer and RawSocket."""
    port = node.ports[1]
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as s:
        s.sendall(b"\x7f")
        hello = b'[1,"realm1",{"roles":{"subscriber":{}}}]'
        s.sendall(b"\xf1\x00\x00" + struct.pack(">I", len(hello)) + hello)
        buf = b""
        while len(buf) < 8:
            chunk = s.recv(4096)
            assert chunk, buf
            buf += chunk
        assert buf[:4] == b"\x7f\xf1\x00\x00"[:1] + buf[1:2] + b"\x00\x00"
        assert buf[1] & 0x0F == 1
        size = struct.unpack(">I", b"\x00" + buf[5:8])[0]
        while len(buf) < 8 + size:
            buf += s.recv(4096)
        assert buf[8:8 + size].startswith(b"[2,")   # WELCOME


def test_universal_silent_client_does_not_hold_the_port(node):
    """A client that connects and sends nothing is closed by the HTTP timeouts; others are
    served meanwhile."""
    port = node.ports[1]
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)):
        resp = exchange(port, b"GET /api HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 200")


def test_check_and_start_name_the_same_errors(tmp_path):
    """Every mistake in the new transports and services: ``geonode check`` and ``geonode
    start`` print the same JSON-path lines (start listens nowhere)."""
    import json
    import subprocess

    from support.nodes import geonode_cmd

    config = {"version": 2, "workers": [
        {"type": "router", "transports": [
            {"type": "websocket", "endpoint": endpoint(18766),
             "serializers": ["json", "flatbuffers"], "bogus": 1},
            {"type": "universal", "endpoint": endpoint(18767), "mqtt": {},
             "rawsocket": {"serializer": "flatbuffers"},
             "websocket": {"ws": {"type": "websocket", "endpoint": {}}},
             "web": {"paths": {"lp": {"type": "longpoll",
                                      "options": {"request_timeout": -1, "bogus": 1}},
                               "s": {"type": "static", "directory": "nope"}}}},
            {"type": "rawsocket", "endpoint": endpoint(18767)}]},
        {"type": "websocket-testee", "transport": {"type": "websocket",
                                                   "endpoint": endpoint(18766)}}]}
    path = tmp_path / "node.json"
    path.write_text(json.dumps(config))
    check = subprocess.run(geonode_cmd("check", str(path)), capture_output=True, text=True,
                           timeout=scaled(60))
    start = subprocess.run(geonode_cmd("start", str(path)), capture_output=True, text=True,
                           timeout=scaled(60))
    assert check.returncode == 1 and start.returncode == 1

    def lines(out: str) -> list[str]:
        return [ln.strip() for ln in out.splitlines() if ln.startswith("  ")]

    assert lines(check.stderr) == lines(start.stderr)
    got = "\n".join(lines(check.stderr))
    for expected in (
        "workers[0].transports[0].bogus: unknown key 'bogus'",
        "workers[0].transports[1].mqtt.options: 'options' is required",
        "workers[0].transports[1].websocket.ws.endpoint: unknown key 'endpoint'",
        "workers[0].transports[1].web.paths.lp.options.request_timeout: -1 is out of range",
        "workers[0].transports[1].web.paths.lp.options.bogus: unknown key 'bogus'",
        "workers[0].transports[0]: a websocket transport needs a router worker with realms",
        "workers[0].transports[0].serializers[1]: serializer 'flatbuffers' is not supported",
        "workers[0].transports[1].rawsocket.serializer: serializer 'flatbuffers' is not "
        "supported",
        "workers[0].transports[1].web.paths.lp: a longpoll path needs a router worker",
        "workers[0].transports[1].web.paths.s.directory: folder 'nope' not found",
        "workers[0].transports[1].websocket.ws: a websocket path needs a router worker",
        "workers[0].transports[2].endpoint.port: port 18767 is already used by "
        "workers[0].transports[1].endpoint",
        "workers[1].transport.endpoint.port: port 18766 is already used",
    ):
        assert expected in got, (expected, got)


def test_universal_over_tls(start_node):
    """The sniffer reads the decrypted stream: RawSocket and HTTPS on one TLS port."""
    import ssl

    import requests
    from support.certs import tls_files

    tls_node = start_node(router_config([
        {"type": "universal", "rawsocket": {"serializers": ["json"]},
         "endpoint": {**endpoint("$PORT"), "tls": {"key": "server.key",
                                                   "certificate": "server.crt"}},
         "web": {"paths": {"/": {"type": "json", "value": 1}}}}]), files=tls_files())
    cafile = str(tls_node.dir / "server.crt")

    async def main():
        ctx = ssl.create_default_context(cafile=cafile)
        s = await rawsocket_session("json", port=tls_node.port, ssl=ctx)
        info = await s.call("wamp.session.get", s._session_id)
        assert info["transport"]["channel_type"] == "tls"
        await leave(s)

    _run(main())
    r = requests.get(f"https://127.0.0.1:{tls_node.port}/", verify=cafile, timeout=scaled(10))
    assert r.status_code == 200 and r.json() == 1


def test_universal_mqtt_and_wamp_on_one_port(start_node):
    """``mqtt`` inside a universal transport: paho-mqtt (first octet 0x10) and an autobahn
    WAMP client over WebSocket share one port, events flow both ways through the realm."""
    import json
    import queue
    import threading

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from support.timing import wait_for
    from support.wamp import SyncClient

    transports = [{"type": "universal", "endpoint": endpoint("$PORT"),
                   "websocket": {"ws": {"type": "websocket"}},
                   "mqtt": {"options": {"realm": "realm1", "payload_mapping": {
                       "": {"type": "native", "serializer": "json"}}}}}]
    node = start_node(router_config(transports))
    wamp = SyncClient(node.port)
    got: queue.Queue = queue.Queue()
    connected = threading.Event()
    mq = paho.Client(CallbackAPIVersion.VERSION2, client_id="uni", protocol=paho.MQTTv311)
    mq.on_connect = lambda *a: connected.set()
    mq.on_message = lambda c, u, msg: got.put(msg)
    mq.connect("127.0.0.1", node.port, keepalive=60)
    mq.loop_start()
    try:
        assert connected.wait(scaled(10)), "no CONNACK on the universal port"
        suback = threading.Event()
        mq.on_subscribe = lambda *a: suback.set()
        mq.subscribe("from/wamp", 1)
        assert suback.wait(scaled(10))
        wait_for(lambda: wamp.call("wamp.subscription.lookup", "from.wamp"), scaled(10),
                 "the MQTT subscription seen by the router")
        events = wamp.subscribe("from.mqtt")
        wamp.publish("from.wamp", "hello", n=1)
        msg = got.get(timeout=scaled(10))
        assert msg.topic == "from/wamp"
        assert json.loads(msg.payload) == {"args": ["hello"], "kwargs": {"n": 1}}
        info = mq.publish("from/mqtt", json.dumps({"args": [1, 2], "kwargs": {"k": "v"}}), 1)
        info.wait_for_publish(scaled(10))
        assert events.get(timeout=scaled(10)) == ([1, 2], {"k": "v"})
    finally:
        mq.disconnect()
        mq.loop_stop()
        wamp.close()
    # HTTP still answered on the same port
    resp = exchange(node.port, b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 200")
