"""WAMP over HTTP long-poll (the ``longpoll`` path service): autobahn|js's long-poll transport
in Node against autobahn-python over WebSocket, and the protocol by hand with requests."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from support import router_config, scaled, wait_for, web_transport
from support.wamp import leave, ws_session

JS = Path(__file__).resolve().parent / "js"


@pytest.fixture(scope="module")
def node(start_module_node):
    paths = {
        "ws": {"type": "websocket"},
        "lp": {"type": "longpoll"},
        # short timeouts and small bounds, for the tests of those bounds
        "lps": {"type": "longpoll", "options": {
            "request_timeout": 1, "session_timeout": 2, "max_sessions": 3,
            "max_body_size": 4096, "queue_limit_messages": 20}},
    }
    return start_module_node(router_config([web_transport(paths)]))


def _open(base: str, protocols: list[str] | None = None) -> str:
    r = requests.post(f"{base}/open", json={"protocols": protocols or ["wamp.2.json"]},
                      timeout=scaled(10))
    assert r.status_code == 200, r.text
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    return r.json()["transport"]


def _send(base: str, tid: str, msg: object, timeout: float = 10) -> requests.Response:
    return requests.post(f"{base}/{tid}/send", data=json.dumps(msg), timeout=scaled(timeout))


def _receive(base: str, tid: str, timeout: float = 15) -> requests.Response:
    return requests.post(f"{base}/{tid}/receive", timeout=scaled(timeout))


def _join(base: str) -> tuple[str, int]:
    tid = _open(base)
    assert _send(base, tid, [1, "realm1", {"roles": {"subscriber": {}, "caller": {}}}]
                 ).status_code == 204
    r = _receive(base, tid)
    assert r.status_code == 200, r.text
    welcome = r.json()
    assert welcome[0] == 2, welcome
    return tid, welcome[1]


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                    reason="node/npm not installed")
def test_autobahn_js_longpoll(node):
    if not ((JS / "node_modules" / "autobahn").is_dir() and (JS / "node_modules" / "xhr2").is_dir()):
        subprocess.run(["bash", str(JS / "install.sh")], check=True, timeout=scaled(300))

    async def main():
        loop = asyncio.get_running_loop()
        py = await ws_session(node.port, "cbor")
        await py.register(lambda *args: list(args), "com.py.echo")
        got = loop.create_future()
        await py.subscribe(lambda *a: got.done() or got.set_result(list(a)), "com.py.topic")
        proc = await asyncio.create_subprocess_exec(
            "node", str(JS / "interop.js"), f"{node.url}/lp", "json",
            str(int(scaled(20) * 1000)),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=JS)
        out, err = await asyncio.wait_for(proc.communicate(), scaled(30))
        assert proc.returncode == 0, err.decode()
        seen = json.loads(out.decode().strip().splitlines()[-1])
        assert seen["transport"] == "longpoll"
        assert seen["protocol"] == "wamp.2.json"
        assert seen["sum"] == 15
        assert seen["event"] == {"args": [1, "two", {"three": 3}], "kwargs": {"k": "v"}}
        assert seen["error"] == "wamp.error.no_such_procedure"
        assert seen["py"] == ["hi", 42]
        assert await asyncio.wait_for(got, scaled(5)) == ["from js", "json"]
        await leave(py)

    asyncio.run(asyncio.wait_for(main(), scaled(60)))


def test_session_by_hand_call_and_info(node):
    base = f"{node.url}/lp"
    tid, sid = _join(base)
    info = requests.get(f"{base}/{tid}", timeout=scaled(10)).json()
    assert info == {"transport": tid, "session": sid}
    # a call to the meta API comes back on the next poll
    assert _send(base, tid, [48, 7, {}, "wamp.session.get", [sid]]).status_code == 204
    result = _receive(base, tid).json()
    assert result[:2] == [50, 7]
    assert result[3][0]["transport"]["type"] == "longpoll"
    assert result[3][0]["transport"]["channel_serializer"] == "json"
    assert requests.post(f"{base}/{tid}/close", timeout=scaled(10)).status_code == 204
    assert requests.get(f"{base}/{tid}", timeout=scaled(10)).status_code == 404
    # closing twice is fine (autobahn|js closes after the GOODBYE ended the session)
    assert requests.post(f"{base}/{tid}/close", timeout=scaled(10)).status_code == 204


def test_batched_serializer_gets_every_pending_message(node):
    base = f"{node.url}/lp"
    r = requests.post(f"{base}/open", json={"protocols": ["wamp.2.json.batched"]},
                      timeout=scaled(10))
    assert r.json()["protocol"] == "wamp.2.json.batched"
    tid = r.json()["transport"]
    hello = json.dumps([1, "realm1", {"roles": {"caller": {}}}]) + "\x18"
    calls = "".join(json.dumps([48, i, {}, "wamp.session.count"]) + "\x18" for i in (1, 2, 3))
    assert requests.post(f"{base}/{tid}/send", data=hello + calls,
                         timeout=scaled(10)).status_code == 204
    got: list = []
    deadline = time.monotonic() + scaled(10)
    while len(got) < 4 and time.monotonic() < deadline:
        r = _receive(base, tid)
        if r.status_code == 200:
            got += [json.loads(x) for x in r.text.split("\x18") if x]
    assert [m[0] for m in got] == [2, 50, 50, 50]
    requests.post(f"{base}/{tid}/close", timeout=scaled(10))


def test_receive_waits_at_most_request_timeout(node):
    base = f"{node.url}/lps"
    tid, _ = _join(base)
    t0 = time.monotonic()
    r = _receive(base, tid)
    assert r.status_code == 204 and r.content == b""
    assert 0.8 <= time.monotonic() - t0 <= scaled(10)
    requests.post(f"{base}/{tid}/close", timeout=scaled(10))


def test_newer_receive_releases_the_older(node):
    base = f"{node.url}/lp"
    tid, sid = _join(base)
    older: list = []
    t = threading.Thread(target=lambda: older.append(_receive(base, tid)))
    t.start()
    time.sleep(0)   # the thread starts its poll; the second one below may come first: fine
    assert _send(base, tid, [48, 9, {}, "wamp.session.count"]).status_code == 204
    newer = _receive(base, tid)
    t.join(scaled(15))
    answers = sorted([older[0], newer], key=lambda r: r.status_code)
    # one of them got the RESULT, none waited the full 10 s for nothing
    assert answers[-1].status_code == 200 or answers[0].status_code == 200
    bodies = [r.json() for r in answers if r.status_code == 200]
    assert bodies and bodies[0][:2] == [50, 9]
    requests.post(f"{base}/{tid}/close", timeout=scaled(10))


def test_unknown_transport_and_operations(node):
    base = f"{node.url}/lp"
    for op in ("send", "receive", "close"):
        r = requests.post(f"{base}/nosuchtransport/{op}", data="[]", timeout=scaled(10))
        assert r.status_code == 404, (op, r.status_code)
        assert "no WAMP transport" in r.text
    tid = _open(base)
    assert requests.post(f"{base}/{tid}/frobnicate", timeout=scaled(10)).status_code == 404
    assert requests.get(f"{base}/{tid}/send", timeout=scaled(10)).status_code == 405
    assert requests.get(f"{base}/open", timeout=scaled(10)).status_code == 405
    # the root: a page for a human; CORS preflight answered
    assert "Long-Poll" in requests.get(base, timeout=scaled(10)).text
    r = requests.options(f"{base}/open", headers={"Origin": "http://example.org",
                                                  "Access-Control-Request-Headers": "content-type"},
                         timeout=scaled(10))
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "http://example.org"
    assert r.headers["Access-Control-Allow-Headers"] == "content-type"
    requests.post(f"{base}/{tid}/close", timeout=scaled(10))


def test_bad_open_requests(node):
    base = f"{node.url}/lp"
    for body in (b"not json", b"[]", b'{"protocols": "wamp.2.json"}',
                 b'{"protocols": ["wamp.2.flatbuffers", "mqtt"]}'):
        r = requests.post(f"{base}/open", data=body, timeout=scaled(10))
        assert r.status_code == 400, body
    r = requests.post(f"{base}/open", data=b"{" + b" " * (128 * 1024) + b"}",
                      timeout=scaled(10))
    assert r.status_code == 413


def test_oversized_send_is_413_and_the_node_keeps_serving(node):
    base = f"{node.url}/lps"
    tid, _ = _join(base)
    big = json.dumps([16, 1, {}, "com.topic", ["x" * 8192]])
    r = requests.post(f"{base}/{tid}/send", data=big, timeout=scaled(10))
    assert r.status_code == 413
    # chunked (no Content-Length): held to the same bound
    r = requests.post(f"{base}/{tid}/send", data=iter([big.encode()[:3000], big.encode()[3000:]]),
                      timeout=scaled(10))
    assert r.status_code == 413
    other, _ = _join(base)
    requests.post(f"{base}/{other}/close", timeout=scaled(10))
    requests.post(f"{base}/{tid}/close", timeout=scaled(10))


def test_bad_message_ends_only_that_session(node):
    base = f"{node.url}/lp"
    tid, _ = _join(base)
    good, _ = _join(base)
    r = requests.post(f"{base}/{tid}/send", data=b"[not json", timeout=scaled(10))
    assert r.status_code == 400
    abort = _receive(base, tid)   # the ABORT (protocol violation) is still delivered
    assert abort.status_code in (200, 404)
    if abort.status_code == 200:
        assert abort.json()[0] == 3
    wait_for(lambda: requests.get(f"{base}/{tid}", timeout=scaled(10)).status_code == 404,
             scaled(10), "the violating session to end")
    assert _send(base, good, [48, 1, {}, "wamp.session.count"]).status_code == 204
    assert _receive(base, good).json()[:2] == [50, 1]
    requests.post(f"{base}/{good}/close", timeout=scaled(10))


def test_idle_session_is_reaped(node):
    base = f"{node.url}/lps"
    tid, _ = _join(base)
    assert requests.get(f"{base}/{tid}", timeout=scaled(10)).status_code == 200
    wait_for(lambda: requests.get(f"{base}/{tid}", timeout=scaled(10)).status_code == 404,
             scaled(15), "the idle session to be reaped")
    assert _receive(base, tid).status_code == 404
    assert _send(base, tid, [48, 1, {}, "wamp.session.count"]).status_code == 404
    node.wait_log("idle for")


def test_session_that_polls_stays(node):
    """A client that keeps polling is never reaped, even with session_timeout 2 s."""
    base = f"{node.url}/lps"
    tid, _ = _join(base)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3.5:
        assert _receive(base, tid).status_code in (200, 204)
    assert requests.get(f"{base}/{tid}", timeout=scaled(10)).status_code == 200
    requests.post(f"{base}/{tid}/close", timeout=scaled(10))


def test_max_sessions(node):
    base = f"{node.url}/lps"
    wait_for(lambda: requests.post(f"{base}/open", json={"protocols": ["wamp.2.json"]},
                                   timeout=scaled(10)).status_code == 503
             or None, scaled(10), "the session table to fill")
    r = requests.post(f"{base}/open", json={"protocols": ["wamp.2.json"]}, timeout=scaled(10))
    assert r.status_code == 503
    # the other long-poll path and WebSocket are unaffected; the full one frees up by reaping
    tid, _ = _join(f"{node.url}/lp")
    requests.post(f"{node.url}/lp/{tid}/close", timeout=scaled(10))
    wait_for(lambda: requests.post(f"{base}/open", json={"protocols": ["wamp.2.json"]},
                                   timeout=scaled(10)).status_code == 200,
             scaled(20), "idle sessions to be reaped")


def test_client_that_never_polls_is_dropped_at_its_queue_bound(node):
    """queue_limit_messages 20: events for a subscriber that never polls overflow its queue;
    it is closed, the publisher goes on."""
    base = f"{node.url}/lps"
    wait_for(lambda: requests.post(f"{base}/open", json={"protocols": ["wamp.2.json"]},
                                   timeout=scaled(10)).status_code == 200 or None,
             scaled(20), "room for a session")
    tid, _ = _join(base)
    assert _send(base, tid, [32, 1, {}, "com.flood"]).status_code == 204
    assert _receive(base, tid).json()[0] == 33   # SUBSCRIBED

    async def flood():
        pub = await ws_session(node.port, "json")
        for i in range(200):
            pub.publish("com.flood", i)
        await pub.call("wamp.session.count")
        await leave(pub)

    asyncio.run(asyncio.wait_for(flood(), scaled(30)))
    node.wait_log("outgoing queue over its bound")
    wait_for(lambda: requests.get(f"{base}/{tid}", timeout=scaled(10)).status_code == 404,
             scaled(10), "the overflowing session to be closed")
