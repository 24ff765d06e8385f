"""Hostile HTTP bridge input (issue 9 rows 9 and 10), and the same JSON over WAMP transports.

Row 9: a signed request is accepted once; re-splitting its signed fields (``seq=1,
nonce=2345`` → ``seq=12, nonce=345`` signs the same bytes) does not make it new. Row 10:
NaN/Infinity and deep nesting are refused (400), and nothing invalid reaches JSON peers.
One real node, requests and raw WebSocket clients.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
from urllib.parse import urlencode

import msgpack
import pytest
import requests
import websocket
from support import scaled, web_node

from geonode.bridge.signing import (
    TIMESTAMP_FORMAT,
    ReplayGuard,
    compute_signature,
    sign_query,
)

pytestmark = pytest.mark.hostile

ALL = {"call": True, "register": True, "publish": True, "subscribe": True}
SECRET = "bridge-secret"
KEY = "k1"


@pytest.fixture(scope="module")
def node(start_module_node):
    realm = {"name": "realm1", "roles": [
        {"name": "anonymous", "permissions": [{"uri": "", "match": "prefix", "allow": ALL}]}]}
    bridge = {"realm": "realm1", "role": "anonymous"}
    signed = {"key": KEY, "secret": SECRET, "timestamp_delta_limit": 60}
    paths = {
        "ws": {"type": "websocket"},
        "pub": {"type": "publisher", **bridge},
        "call": {"type": "caller", **bridge, "options": {"timeout": 5}},
        "pubsigned": {"type": "publisher", **bridge, "options": signed},
        "callsigned": {"type": "caller", **bridge, "options": signed},
    }
    return start_module_node(web_node(paths, realms=[realm]))


def post(node, path: str, body: bytes, query: str = "") -> requests.Response:
    return requests.post(f"{node.url}/{path}" + (f"?{query}" if query else ""), data=body,
                         headers={"Content-Type": "application/json"}, timeout=scaled(15))


def signed_query(body: bytes, seq: str, nonce: str, signature: str | None = None,
                 secret: str = SECRET) -> str:
    ts = datetime.datetime.now(datetime.UTC).replace(tzinfo=None).strftime(TIMESTAMP_FORMAT)
    sig = signature or compute_signature(secret, KEY, ts, seq, nonce, body)
    return urlencode({"key": KEY, "timestamp": ts, "seq": seq, "nonce": nonce,
                      "signature": sig})


def strict_json(text: str):
    """JSON as RFC 8259 and JSON.parse read it: NaN/Infinity are errors."""
    def refuse(name):
        raise ValueError(f"{name} in JSON")
    return json.loads(text, parse_constant=refuse)


class Raw:
    """A raw WAMP-over-WebSocket client (``json`` or ``msgpack``), to see the wire text."""

    def __init__(self, node, serializer: str = "json") -> None:
        self.binary = serializer == "msgpack"
        self.ws = websocket.create_connection(f"{node.ws_url}/ws", timeout=scaled(15),
                                              subprotocols=[f"wamp.2.{serializer}"])
        self.send([1, "realm1", {"roles": {"subscriber": {}, "publisher": {}, "caller": {},
                                           "callee": {}}}])
        self.welcome = self.recv()
        assert self.welcome[0] == 2, self.welcome

    def send(self, msg: list) -> None:
        if self.binary:
            self.ws.send_binary(msgpack.packb(msg))
        else:
            self.ws.send(json.dumps(msg))

    def send_text(self, text: str) -> None:
        self.ws.send(text)

    def recv_raw(self):
        return self.ws.recv()

    def recv(self):
        data = self.recv_raw()
        if self.binary:
            return msgpack.unpackb(data)
        return strict_json(data) if data else None

    def close(self) -> None:
        self.ws.shutdown()


# -- row 9: replays ---------------------------------------------------------------------------

def test_signed_request_is_accepted_once(node):
    body = json.dumps({"topic": "com.signed.once", "args": [1]}).encode()
    q = sign_query(KEY, SECRET, body)
    assert post(node, "pubsigned", body, q).status_code == 200
    r = post(node, "pubsigned", body, q)                           # main: 200 again
    assert r.status_code == 401 and "replayed" in r.json()["error"]


def test_shifted_seq_and_nonce_do_not_make_a_new_request(node):
    """seq + nonce are signed joined: "1"+"2345" and "12"+"345" sign the same bytes."""
    body = json.dumps({"topic": "com.signed.shift", "args": [2]}).encode()
    q = signed_query(body, "1", "2345")
    assert post(node, "pubsigned", body, q).status_code == 200
    sig = dict(p.split("=", 1) for p in q.split("&"))["signature"]
    ts = dict(p.split("=", 1) for p in q.split("&"))["timestamp"]
    shifted = urlencode({"key": KEY, "timestamp": requests.utils.unquote(ts), "seq": "12",
                         "nonce": "345", "signature": requests.utils.unquote(sig)})
    r = post(node, "pubsigned", body, shifted)                     # main: 200
    assert r.status_code == 401 and "replayed" in r.json()["error"], r.text
    # the same nonce with another body (and so another signature): refused too
    other = json.dumps({"topic": "com.signed.shift", "args": [3]}).encode()
    r = post(node, "pubsigned", other, signed_query(other, "1", "2345"))
    assert r.status_code == 401 and "nonce already used" in r.json()["error"]
    # seq/nonce are plain decimal integers: other spellings int() takes are malformed (400)
    for seq in ("+7", "1_0", " 7", "٣"):
        assert post(node, "pubsigned", other, signed_query(other, seq, "999")).status_code == 400


def test_a_request_signed_for_one_path_is_refused_on_another_with_the_same_key(node):
    body = json.dumps({"topic": "com.signed.cross", "procedure": "com.none"}).encode()
    q = sign_query(KEY, SECRET, body)
    assert post(node, "pubsigned", body, q).status_code == 200
    assert post(node, "callsigned", body, q).status_code == 401    # main: 200 (the call made)


@pytest.mark.inprocess
def test_replay_memory_is_bounded():
    """Full: the oldest timestamp goes, and nothing not newer than it is accepted again (it
    could be a replay of what was forgotten); fresh requests still are."""
    guard = ReplayGuard(window=300, max_entries=3)
    now = time.time()
    for i in range(3):
        assert guard.admit(now + i, i, bytes([i]) * 16) is None
    assert guard.admit(now + 3, 3, b"\x03" * 16) is None      # evicts timestamp now+0
    assert len(guard) == 3
    assert "too old" in guard.admit(now, 0, b"\x00" * 16)      # the forgotten one: refused
    assert "too old" in guard.admit(now - 1, 99, b"\x63" * 16)
    assert guard.admit(now + 0.5, 98, b"\x62" * 16) is None   # newer than what was dropped
    for i in range(10000):                                    # a flood stays within the bound
        guard.admit(now + 10 + i, 1000 + i, i.to_bytes(16, "big"))
    assert len(guard) == 3 and len(guard._seen) == 6


# -- row 10: NaN/Infinity, nesting --------------------------------------------------------------

def test_nan_and_infinity_are_refused(node):
    for const in ("NaN", "Infinity", "-Infinity"):
        body = b'{"topic": "com.nan", "args": [' + const.encode() + b"]}"
        r = post(node, "pub", body)                                 # main: 200, forwarded
        assert r.status_code == 400 and const in r.json()["error"], r.text


def test_deep_nesting_is_refused_with_400(node):
    deep = b'{"topic": "com.deep", "args": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
    r = post(node, "pub", deep)                                     # main: 500
    assert r.status_code == 400 and "nested deeper than 128" in r.json()["error"]

    def nested(levels: int) -> bytes:   # the body object, "args" and levels-2 more lists
        inner = "[" * (levels - 2) + "]" * (levels - 2)
        return ('{"topic": "com.deep", "args": [' + inner + "]}").encode()

    assert post(node, "pub", nested(128)).status_code == 200
    r = post(node, "pub", nested(129))                              # main: 200
    assert r.status_code == 400 and "nested deeper" in r.json()["error"]
    # many brackets side by side are not depth
    wide = json.dumps({"topic": "com.deep", "args": [[[1]]] * 50_000}).encode()
    assert post(node, "pub", wide).status_code == 200
    assert "Traceback" not in node.log()


def test_json_peers_never_get_nan(node):
    """A msgpack publisher may send NaN (msgpack has it); a JSON subscriber does not get it
    as invalid JSON (the event is not sent to it, one log line), a msgpack one gets it."""
    sub_json, sub_mp = Raw(node), Raw(node, "msgpack")
    for s in (sub_json, sub_mp):
        s.send([32, 1, {}, "com.nan.event"])
        assert s.recv()[0] == 33
    pub = Raw(node, "msgpack")
    pub.send([16, 1, {}, "com.nan.event", [float("nan")]])
    pub.send([16, 2, {}, "com.nan.event", ["fine"]])
    got = sub_mp.recv()
    assert got[0] == 36 and got[4][0] != got[4][0]                 # NaN arrived as NaN
    assert sub_mp.recv()[4] == ["fine"]
    text = sub_json.recv_raw()                                      # main: '...[NaN]]'
    assert strict_json(text)[4] == ["fine"], text
    for s in (sub_json, sub_mp, pub):
        s.close()


def test_caller_bridge_result_without_json_form(node):
    """A msgpack callee answering Infinity: the caller bridge answers the JSON error
    invalid_payload, as a WAMP JSON caller would get, not invalid JSON."""
    callee = Raw(node, "msgpack")
    callee.send([64, 1, {}, "com.nan.proc"])
    assert callee.recv()[0] == 65
    out: dict = {}

    def call() -> None:
        out["r"] = requests.post(f"{node.url}/call", json={"procedure": "com.nan.proc"},
                                 timeout=scaled(15))

    th = threading.Thread(target=call)
    th.start()
    inv = callee.recv()
    assert inv[0] == 68, inv
    callee.send([70, inv[1], {}, [float("inf")]])
    th.join(scaled(20))
    r = out["r"]
    body = strict_json(r.text)                                      # main: "[Infinity]"
    assert r.status_code == 200 and body["error"] == "wamp.error.invalid_payload", r.text
    callee.close()


def test_wamp_json_session_sending_nan_or_deep_nesting_ends_alone(node):
    """Over a WAMP JSON WebSocket: NaN ends that session (protocol violation, saying why),
    so does nesting Python cannot parse (a clear reason, no traceback); others carry on."""
    other = Raw(node)
    other.send([32, 1, {}, "com.alive"])
    assert other.recv()[0] == 33
    for text, why in (('[16, 1, {}, "com.alive", [NaN]]', "NaN is not JSON"),
                      ('[16, 1, {}, "com.alive", [' + "[" * 100_000 + "]" * 100_000 + "]]",
                       "nested too deeply")):
        bad = Raw(node)
        bad.send_text(text)
        abort = bad.recv()
        assert abort[0] == 3 and abort[2] == "wamp.error.protocol_violation", abort
        assert why in abort[1]["message"], abort                     # main: NaN accepted
        bad.close()
    pub = Raw(node)
    pub.send([16, 2, {}, "com.alive", ["still"]])
    assert other.recv()[4] == ["still"]
    log = node.log()
    assert "Traceback" not in log and "RecursionError" not in log
    for s in (other, pub):
        s.close()
