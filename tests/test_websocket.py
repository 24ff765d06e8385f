"""geonode's WebSocket layer over real sockets: raw handshakes and hand-made frames.

Two servers: a real node with the ``websocket-testee`` echo path, and ``_ws_server.py`` (pywsgi
with geonode's Handler, ``accept()`` driven by the query string) for subprotocol/option cases.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import sys
import threading
import time
import urllib.parse
import zlib
from pathlib import Path

import pytest
from support import Node, free_port, scaled, web_node
from support.certs import self_signed
from support.nodes import start_process
from support.ws import KEY, close_payload
from support.ws import RawWebSocket as Raw

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- servers
@pytest.fixture(scope="module")
def testee(start_module_node):
    return start_module_node(web_node({"/": {"type": "websocket-testee"}}))


@pytest.fixture(scope="module")
def small(start_module_node):
    """Testee with limits: messages ≤ 1000 bytes, frames ≤ 600 bytes."""
    return start_module_node(web_node({"/": {"type": "websocket-testee", "options": {
        "max_message_size": 1000, "max_frame_size": 600,
        "allowed_origins": ["https://*.example.com", "http://localhost:*"],
        "allow_null_origin": False}}}))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    folder = tmp_path_factory.mktemp("ws_server")
    proc = start_process([sys.executable, str(HERE / "_ws_server.py"), str(port)], folder,
                         folder / "server.log")
    srv = Node(proc, port, folder, folder / "server.log", [port])
    try:
        srv.wait_ports()
        yield port
    finally:
        srv.stop()
        out = srv.log()
        # The server never prints tracebacks: every refusal is a clean HTTP answer.
        assert "Traceback" not in out, out


def q(**params) -> str:
    if "opts" in params:
        params["opts"] = json.dumps(params["opts"])
    return "/?" + urllib.parse.urlencode(params)


# --------------------------------------------------------------------------- handshake
def test_plain_get_gets_a_page(testee):
    with socket.create_connection(("127.0.0.1", testee.port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert b"websocket-testee" in data


def test_accept_header_and_echo(testee):
    c = Raw(testee.port, key="dGhlIHNhbXBsZSBub25jZQ==")   # the example of RFC 6455 §1.3
    assert c.status == 101
    assert c.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    c.send_frame(1, "héllo".encode())
    assert c.recv_message() == (1, "héllo".encode())
    c.send_frame(2, b"\x00\xff")
    assert c.recv_message() == (2, b"\x00\xff")
    c.close()


def test_frame_right_behind_the_handshake_is_not_lost(testee):
    frame = struct.pack("!BB", 0x81, 0x80 | 5) + b"\x00\x00\x00\x00" + b"early"
    with socket.create_connection(("127.0.0.1", testee.port), timeout=scaled(10)) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
                  + frame)   # one write: the frame sits in the server's HTTP read buffer
        data = b""
        while not data.endswith(b"early"):
            chunk = s.recv(65536)
            assert chunk
            data += chunk
    assert data.startswith(b"HTTP/1.1 101")
    assert data.endswith(b"\r\n\r\n\x81\x05early")


@pytest.mark.parametrize("key", ["not-base64!!", base64.b64encode(b"short").decode(), ""])
def test_bad_key_is_400_without_traceback(testee, key):
    c = Raw(testee.port, key=key)
    assert c.status == 400
    assert b"Sec-WebSocket-Key" in c.body
    assert b"Traceback" not in c.body
    c.close()
    assert "Traceback" not in testee.log()


def test_version_8_is_426(testee):
    c = Raw(testee.port, version="8")
    assert c.status == 426
    assert c.headers["sec-websocket-version"] == "13"
    c.close()


def test_missing_connection_upgrade_is_400(testee):
    c = Raw(testee.port, headers={"Connection": "keep-alive"})
    assert c.status == 400
    c.close()


def test_subprotocol_exact_match_only(server):
    c = Raw(server, q(protos="wamp.2.json"),
            headers={"Sec-WebSocket-Protocol": "wamp.2.json.batched"})
    assert c.status == 400
    assert b"wamp.2.json.batched" in c.body
    c.close()


def test_subprotocol_missing_is_400_unless_not_required(server):
    c = Raw(server, q(protos="wamp.2.json"))
    assert c.status == 400
    c.close()
    c = Raw(server, q(protos="wamp.2.json", opts={"require_websocket_subprotocol": False}))
    assert c.status == 101
    assert "sec-websocket-protocol" not in c.headers
    c.close()


def test_subprotocol_client_order_wins(server):
    c = Raw(server, q(protos="wamp.2.json,wamp.2.msgpack,wamp.2.cbor"),
            headers={"Sec-WebSocket-Protocol": "wamp.2.cbor, foo, wamp.2.json"})
    assert c.status == 101
    assert c.headers["sec-websocket-protocol"] == "wamp.2.cbor"
    c.close()


def test_open_handshake_timeout(server):
    path = q(opts={"open_handshake_timeout": 200})
    with socket.create_connection(("127.0.0.1", server), timeout=scaled(10)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\n".encode())
        time.sleep(0.4)   # the scenario: headers trickle in slower than the 200 ms allowed
        s.sendall(f"Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        assert s.recv(65536).startswith(b"HTTP/1.1 408")


def test_origin_checks(small):
    ok = Raw(small.port, headers={"Origin": "https://app.example.com"})
    assert ok.status == 101
    ok.close()
    ok = Raw(small.port, headers={"Origin": "http://localhost:8080"})
    assert ok.status == 101
    ok.close()
    no = Raw(small.port, headers={"Origin": "https://evil.com"})
    assert no.status == 403
    no.close()
    no = Raw(small.port, headers={"Origin": "https://example.com.evil.com"})
    assert no.status == 403
    no.close()
    null = Raw(small.port, headers={"Origin": "null"})
    assert null.status == 403
    null.close()


# --------------------------------------------------------------------------- framing rules
def test_unmasked_frame_is_closed_with_1002(testee):
    c = Raw(testee.port)
    c.send_frame(1, b"hi", masked=False)
    code, _ = c.expect_close()
    assert code == 1002
    c.send_frame(8, close_payload(1002))
    assert c.closed_by_server()
    c.close()


@pytest.mark.parametrize("frame", [
    dict(opcode=1, payload=b"x", rsv=0x20),        # RSV2
    dict(opcode=3, payload=b"x"),                  # reserved data opcode
    dict(opcode=11, payload=b""),                  # reserved control opcode
    dict(opcode=9, payload=b"x", fin=False),       # fragmented ping
    dict(opcode=9, payload=b"x" * 126),            # control frame too long
    dict(opcode=0, payload=b"x"),                  # continuation without a message
])
def test_protocol_errors_close_1002(testee, frame):
    c = Raw(testee.port)
    c.send_frame(**frame)
    code, _ = c.expect_close()
    assert code == 1002
    c.close()


def test_invalid_utf8_is_1007_fail_fast(testee):
    c = Raw(testee.port)
    c.send_frame(1, b"ok", fin=False)
    c.send_frame(0, b"\xce\xba\xed\xa0\x80", fin=False)   # a UTF-16 surrogate: invalid
    code, _ = c.expect_close()   # before the message ends
    assert code == 1007
    c.close()


def test_invalid_close_reason_is_1007(testee):
    c = Raw(testee.port)
    c.send_frame(8, close_payload(1000, b"\xff\xfe"))
    assert c.expect_close()[0] == 1007
    c.close()


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2999, 5000])
def test_invalid_close_codes_are_1002(testee, code):
    c = Raw(testee.port)
    c.send_frame(8, close_payload(code))
    assert c.expect_close()[0] == 1002
    c.close()


@pytest.mark.parametrize("code", [1000, 1001, 1011, 3000, 4999])
def test_close_is_echoed_with_its_code(testee, code):
    c = Raw(testee.port)
    c.send_frame(8, close_payload(code, b"bye"))
    fin, rsv, opcode, payload = c.recv_frame()
    assert (fin, rsv, opcode) == (True, 0, 8)
    assert struct.unpack("!H", payload[:2])[0] == code
    assert payload[2:] in (b"", b"bye")   # never the corrupted echo of gevent-websocket
    assert c.closed_by_server()
    c.close()


def test_empty_close_is_answered_empty(testee):
    c = Raw(testee.port)
    c.send_frame(8, b"")
    assert c.recv_frame() == (True, 0, 8, b"")
    c.close()


def test_fragmented_message_with_ping_in_between(testee):
    c = Raw(testee.port)
    c.send_frame(1, b"Hel", fin=False)
    c.send_frame(9, b"ping!")
    c.send_frame(0, b"lo ", fin=False)
    c.send_frame(0, "wörld".encode())
    assert c.recv_frame() == (True, 0, 10, b"ping!")
    assert c.recv_message() == (1, "Hello wörld".encode())
    c.close()


def test_server_close_with_code(server):
    c = Raw(server, q())
    c.send_frame(1, b"close 4001")
    code, reason = c.expect_close()
    assert code == 4001 and reason == b"server says bye"
    c.send_frame(8, close_payload(4001))
    assert c.closed_by_server()
    c.close()


def test_close_from_other_greenlet_while_receiving(server):
    c = Raw(server, q())
    c.send_frame(1, b"closelater 4002")
    code, reason = c.expect_close()
    assert code == 4002 and reason == b"later"
    c.send_frame(8, close_payload(4002))
    assert c.closed_by_server()
    c.close()


def test_silent_peer_dropped_after_close_handshake_timeout(server):
    c = Raw(server, q(opts={"close_handshake_timeout": 300}))
    c.send_frame(1, b"closelater 1000")
    assert c.expect_close()[0] == 1000
    t0 = time.monotonic()
    assert c.closed_by_server(timeout=5)     # we never answered the close
    assert time.monotonic() - t0 < scaled(3)
    c.close()


# --------------------------------------------------------------------------- limits
def test_oversize_message_is_1009(small):
    c = Raw(small.port)
    c.send_frame(2, b"x" * 500, fin=False)
    c.send_frame(0, b"x" * 501)
    assert c.expect_close()[0] == 1009
    c.close()


def test_oversize_frame_is_1009(small):
    c = Raw(small.port)
    c.send_frame(2, b"x" * 601)
    assert c.expect_close()[0] == 1009
    c.close()


def test_within_limits_is_echoed(small):
    c = Raw(small.port)
    c.send_frame(2, b"y" * 500, fin=False)
    c.send_frame(0, b"y" * 500)
    assert c.recv_message() == (2, b"y" * 1000)
    c.close()


def test_huge_length_header_allocates_nothing(testee):
    c = Raw(testee.port)
    # 1 TiB announced, 4 bytes sent: the server waits for data, it does not allocate a TiB.
    c.sock.sendall(struct.pack("!BBQ", 0x82, 0x80 | 127, 1 << 40) + os.urandom(4) + b"abcd")
    # Another client's echo goes through the node's loop after it has read those bytes.
    d = Raw(testee.port)
    d.send_frame(1, b"alive")
    assert d.recv_message() == (1, b"alive")
    d.close()
    c.close()
    assert "MemoryError" not in testee.log()


def test_4mib_binary_echo(testee):
    c = Raw(testee.port, timeout=30)
    data = os.urandom(4 << 20)
    c.send_frame(2, data)
    op, back = c.recv_message()
    assert op == 2 and back == data
    c.close()


def test_auto_ping_timeout_drops_silent_peer(server):
    opts = {"auto_ping_interval": 200, "auto_ping_timeout": 300}
    c = Raw(server, q(opts=opts))
    fin, rsv, opcode, payload = c.recv_frame()    # the server's ping; we do not answer
    assert opcode == 9
    t0 = time.monotonic()
    assert c.closed_by_server(timeout=5)
    assert time.monotonic() - t0 < scaled(3)


def test_auto_ping_answered_keeps_connection(server):
    opts = {"auto_ping_interval": 100, "auto_ping_timeout": 300}
    c = Raw(server, q(opts=opts))
    # five pings answered: at least 0.4 s, longer than auto_ping_timeout
    for _ in range(5):
        fin, rsv, opcode, payload = c.recv_frame()
        assert opcode == 9
        c.send_frame(10, payload)
    c.send_frame(1, b"still here")
    assert c.recv_message() == (1, b"still here")
    c.close()


# --------------------------------------------------------------------------- concurrency
def test_concurrent_sends_from_greenlets_and_threads(server):
    greenlets, threads, count, size = 20, 4, 50, 3000
    c = Raw(server, q(), timeout=30)
    c.send_frame(1, f"burst {greenlets} {threads} {count} {size}".encode())
    seen: dict[str, int] = {}
    while True:
        op, payload = c.recv_message()
        if op == 1:
            assert payload == b"done"
            break
        assert op == 2
        tag, i, body = payload.split(b":", 2)
        i = int(i)
        assert body == bytes([65 + i % 26]) * size       # no interleaved bytes
        assert seen.get(tag.decode(), -1) == i - 1      # each sender's order kept
        seen[tag.decode()] = i
    assert len(seen) == greenlets + threads
    assert all(v == count - 1 for v in seen.values())
    c.close()


def test_thread_sender_to_a_slow_reader_is_bounded(server):
    """A thread sending to a peer that does not read waits once MAX_HANDOFFS calls are queued
    for the hub, instead of queueing without bound; nothing is lost."""
    count, size = 3000, 8192
    c = Raw(server, q(), timeout=30)
    c.send_frame(1, f"tflood {count} {size}".encode())
    time.sleep(1.0)   # the scenario: not reading, the socket fills, the hand-off queue backs up
    for i in range(count):
        assert c.recv_message() == (2, bytes([65 + i % 26]) * size)
    op, payload = c.recv_message()
    assert op == 1 and payload.startswith(b"maxq ")
    assert int(payload.split()[1]) <= 1000
    c.close()


def test_many_clients_at_once(testee):
    errors = []

    def one(n: int) -> None:
        try:
            c = Raw(testee.port)
            for i in range(20):
                msg = f"{n}-{i}".encode() * 50
                c.send_frame(1, msg)
                assert c.recv_message() == (1, msg)
            c.send_frame(8, close_payload(1000))
            assert c.expect_close()[0] == 1000
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=one, args=(n,)) for n in range(20)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(scaled(30))
    assert not errors


# --------------------------------------------------------------------------- permessage-deflate
def _inflate(d, payload: bytes) -> bytes:
    return d.decompress(payload + b"\x00\x00\xff\xff")


def test_deflate_negotiated_and_working(testee):
    c = Raw(testee.port, headers={
        "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"})
    assert c.status == 101
    assert c.headers["sec-websocket-extensions"].startswith("permessage-deflate")
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    inflater = zlib.decompressobj(-15)
    for i in range(3):   # context takeover both ways
        text = json.dumps({"n": i, "data": ["geonode"] * 200}).encode()
        payload = comp.compress(text) + comp.flush(zlib.Z_SYNC_FLUSH)
        assert payload.endswith(b"\x00\x00\xff\xff")
        c.send_frame(1, payload[:-4], rsv=0x40)
        fin, rsv, opcode, back = c.recv_frame()
        assert (fin, rsv, opcode) == (True, 0x40, 1)
        assert len(back) < len(text) // 4
        assert _inflate(inflater, back) == text
    # an uncompressed message is fine too
    c.send_frame(2, b"raw")
    assert c.recv_message() == (2, b"raw")
    c.close()


def test_deflate_parameters(testee):
    c = Raw(testee.port, headers={"Sec-WebSocket-Extensions":
                                  "permessage-deflate; server_max_window_bits=10; "
                                  "server_no_context_takeover"})
    ext = c.headers["sec-websocket-extensions"]
    assert "server_max_window_bits=10" in ext
    assert "server_no_context_takeover" in ext
    for _ in range(2):
        text = b"abcdefgh" * 1000
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        c.send_frame(1, (comp.compress(text) + comp.flush(zlib.Z_SYNC_FLUSH))[:-4], rsv=0x40)
        fin, rsv, opcode, back = c.recv_frame()
        # no context takeover: each message inflates on its own with a 10-bit window
        assert zlib.decompressobj(-10).decompress(back + b"\x00\x00\xff\xff") == text
    c.close()


def test_deflate_bad_offer_declined(testee):
    c = Raw(testee.port, headers={"Sec-WebSocket-Extensions":
                                  "permessage-deflate; server_max_window_bits=99"})
    assert c.status == 101
    assert "sec-websocket-extensions" not in c.headers
    c.close()


def test_deflate_off_unless_configured(server):
    # Like Crossbar: no ``compression`` option, no deflate; RSV1 is then a protocol error.
    c = Raw(server, q(), headers={"Sec-WebSocket-Extensions": "permessage-deflate"})
    assert "sec-websocket-extensions" not in c.headers
    c.send_frame(1, b"x", rsv=0x40)
    assert c.expect_close()[0] == 1002
    c.close()


def test_deflate_bomb_is_1009(server):
    opts = {"max_message_size": 100_000, "compression": {"deflate": {}}}
    c = Raw(server, q(opts=opts), headers={"Sec-WebSocket-Extensions": "permessage-deflate"})
    assert c.headers["sec-websocket-extensions"].startswith("permessage-deflate")
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = comp.compress(b"\x00" * (50 << 20)) + comp.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < 100_000
    c.send_frame(2, bomb[:-4], rsv=0x40)
    assert c.expect_close()[0] == 1009
    c.close()


# --------------------------------------------------------------------------- unmasking
@pytest.mark.inprocess
@pytest.mark.parametrize("nvx", [True, False])
def test_unmask_paths_agree_with_bytewise_xor(monkeypatch, nvx):
    from geonode.websocket import frames

    if not nvx:
        monkeypatch.setattr(frames, "_nvx_lib", None)
    for n in (0, 1, 5, 100, 2047, 2048, 2049, 70001):
        data, mask = os.urandom(n), os.urandom(4)
        expected = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        assert frames.xor_mask(data, mask) == expected
        assert frames.xor_mask(data[3:], mask, 3) == expected[3:]
        buf = bytearray(data)
        frames.unmask_inplace(buf, mask)
        assert buf == expected


# --------------------------------------------------------------------------- TLS (wss)
_self_signed = self_signed


def test_wss_echo_and_close(start_node):
    import ssl

    import websocket

    cert, key = _self_signed()
    cfg = web_node({"/": {"type": "websocket-testee"}})
    cfg["workers"][0]["transports"][0]["endpoint"]["tls"] = {"certificate": "c.pem",
                                                             "key": "k.pem"}
    node = start_node(cfg, files={"c.pem": cert, "k.pem": key})
    ws = websocket.create_connection(f"wss://127.0.0.1:{node.port}/", timeout=scaled(10),
                                     sslopt={"cert_reqs": ssl.CERT_NONE})
    ws.send("über tls")
    assert ws.recv() == "über tls"
    blob = os.urandom(1 << 20)
    ws.send_binary(blob)
    assert ws.recv() == blob
    ws.send_close(4000, b"done")
    frame = ws.recv_data_frame(True)[1]
    assert frame.opcode == websocket.ABNF.OPCODE_CLOSE
    assert struct.unpack("!H", frame.data[:2])[0] == 4000
    ws.shutdown()
    assert "Traceback" not in node.log()
