"""issue 13 item 4: ``forwarded_allow_ips``: a trusted proxy's X-Forwarded-*/Forwarded headers
reach the apps, the access log, the bridge and the WAMP transport details; anyone else's are
ignored. Real sockets: the proxy is 127.0.0.1, a stranger connects from 127.0.0.2."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest
from support import geonode_cmd, scaled, web_node
from support.config import realm, wsgi
from support.http import read_response
from support.ws import RawWamp

APP = '''
import json
KEYS = ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME",
        "SERVER_PORT")

def app(environ, start_response):
    body = json.dumps({k: environ.get(k) for k in KEYS}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def get(port: int, path: str, headers: dict[str, str], source: str = "127.0.0.1",
        method: str = "GET", body: bytes = b"") -> tuple[int, bytes]:
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(10),
                                 source_address=(source, 0))
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        s.sendall(head.encode() + b"\r\n" + body)
        status_line, _, data, _ = read_response(s)
        return int(status_line.split()[1]), data
    finally:
        s.close()


@pytest.fixture(scope="module")
def node(start_module_node):
    bridge = {"realm": "realm1", "role": "anonymous"}
    cfg = web_node({"app": wsgi("app"), "ws": {"type": "websocket"},
                    "pub": {"type": "publisher", **bridge,
                            "options": {"require_ip": ["203.0.113.0/24"]}},
                    "pubtls": {"type": "publisher", **bridge,
                               "options": {"require_tls": True}}},
                   realms=[realm()],
                   options={"access_log": True,
                            "forwarded_allow_ips": ["127.0.0.1", "10.0.0.0/8"]})
    return start_module_node(cfg, files={"app.py": APP})


def seen(node, headers, source="127.0.0.1") -> dict:
    status, body = get(node.port, "/app/", headers, source)
    assert status == 200, body
    return json.loads(body)


def test_x_forwarded_from_a_trusted_proxy(node):
    env = seen(node, {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
                      "X-Forwarded-Host": "example.com"})
    assert env["REMOTE_ADDR"] == "203.0.113.7"
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTP_HOST"] == "example.com"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "443")
    # the access log names the client, not the proxy
    node.wait_log('203.0.113.7 - - [')


def test_ignored_from_anyone_else(node):
    env = seen(node, {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
                      "X-Forwarded-Host": "example.com",
                      "Forwarded": "for=203.0.113.8;proto=https"}, source="127.0.0.2")
    assert env["REMOTE_ADDR"] == "127.0.0.2"
    assert env["wsgi.url_scheme"] == "http"
    assert env["HTTP_HOST"].startswith("127.0.0.1:")


def test_rfc7239_forwarded_wins_and_keeps_the_port(node):
    env = seen(node, {"Forwarded": 'for="[2001:db8::17]:4711";proto=https;host="example.org:8443"',
                      "X-Forwarded-For": "198.51.100.99"})
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("2001:db8::17", "4711")
    assert env["wsgi.url_scheme"] == "https"
    assert (env["HTTP_HOST"], env["SERVER_PORT"]) == ("example.org:8443", "8443")


@pytest.mark.parametrize("header", ["X-Forwarded-For", "Forwarded"])
def test_chain_stops_at_the_first_untrusted_hop(node, header):
    # a client may send any X-Forwarded-For; only the hops our proxies added are believed
    hops = ["1.1.1.1", "198.51.100.1", "10.0.0.5"]
    value = ", ".join(hops) if header == "X-Forwarded-For" else \
        ", ".join(f"for={h}" for h in hops)
    assert seen(node, {header: value})["REMOTE_ADDR"] == "198.51.100.1"


def test_unknown_and_garbage_leave_the_peer(node):
    assert seen(node, {"Forwarded": "for=unknown"})["REMOTE_ADDR"] == "127.0.0.1"
    assert seen(node, {"X-Forwarded-For": "not-an-ip"})["REMOTE_ADDR"] == "127.0.0.1"
    env = seen(node, {"X-Forwarded-Host": "evil.example\tx"})
    assert env["HTTP_HOST"].startswith("127.0.0.1:")


def test_bridge_require_ip_and_tls_see_the_client(node):
    body = json.dumps({"topic": "com.example.t", "args": [1]}).encode()
    ok = {"X-Forwarded-For": "203.0.113.9"}
    assert get(node.port, "/pub", ok, method="POST", body=body)[0] == 200
    assert get(node.port, "/pub", {"X-Forwarded-For": "198.51.100.1"},
               method="POST", body=body)[0] == 403
    # the same header from a stranger counts for nothing
    assert get(node.port, "/pub", ok, source="127.0.0.2", method="POST", body=body)[0] == 403
    assert get(node.port, "/pubtls", {"X-Forwarded-Proto": "https"}, method="POST",
               body=body)[0] == 200
    assert get(node.port, "/pubtls", {}, method="POST", body=body)[0] == 403
    assert get(node.port, "/pubtls", {"X-Forwarded-Proto": "https"}, source="127.0.0.2",
               method="POST", body=body)[0] == 403


def _peer_of(node, **ws_options) -> str:
    """The ``peer`` the router records for a WAMP session opened with these options."""
    watcher = RawWamp(node.port)
    other = RawWamp(node.port, **ws_options)
    try:
        assert watcher.hello()[0] == 2
        welcome = other.hello()
        assert welcome[0] == 2
        watcher.send([48, watcher.next_request(), {}, "wamp.session.get", [welcome[1]]])
        result = watcher.recv()
        assert result[0] == 50, result
        return result[3][0]["transport"]["peer"]
    finally:
        other.close()
        watcher.close()


def test_wamp_transport_details_peer(node):
    assert _peer_of(node, header=["X-Forwarded-For: 203.0.113.7"]) == "tcp4:203.0.113.7"
    assert _peer_of(node, header=['Forwarded: for="203.0.113.8:5555"']) == \
        "tcp4:203.0.113.8:5555"
    peer = _peer_of(node, source="127.0.0.2", header=["X-Forwarded-For: 203.0.113.7"])
    assert peer.startswith("tcp4:127.0.0.2:")


def test_bad_entry_named_by_check_and_start(tmp_path):
    cfg = web_node({"x": {"type": "json", "value": 1}}, port=8080,
                   options={"forwarded_allow_ips": ["127.0.0.1", "10.0.0.300/8"]})
    path = tmp_path / "node.json"
    path.write_text(json.dumps(cfg))
    want = "workers[0].transports[0].options.forwarded_allow_ips[1]"
    for cmd in ("check", "start"):
        r = subprocess.run(geonode_cmd(cmd, str(path)), capture_output=True, text=True,
                           timeout=scaled(30), cwd=tmp_path)
        assert r.returncode != 0
        assert want in r.stdout + r.stderr, (cmd, r.stdout, r.stderr)


@pytest.mark.inprocess
def test_forwarded_parser_bounded_and_quoted():
    from geonode.web.forwarded import parse_forwarded

    assert parse_forwarded('for="a,b";proto=https, for=c') == [
        {"for": "a,b", "proto": "https"}, {"for": "c"}]
    big = "for=1.2.3.4, " * 200_000    # megabytes: linear, and bounded by MAX_HEADER anyway
    assert len(parse_forwarded(big)) == 200_000
