"""The small path services through a real node: redirect, json, nodeinfo, none."""

from __future__ import annotations

import json
import re

import pytest
import requests
from support import scaled, web_node
from support.http import exchange, split_response

VALUE = {"name": "geonode", "list": [1, 2.5, None, True], "text": "caf\u00e9 <&>"}


@pytest.fixture(scope="module")
def node(start_module_node):
    paths = {
        "/": {"type": "json", "value": VALUE},
        "go": {"type": "redirect", "url": "https://example.com/target?q=1"},
        "pretty": {"type": "json", "value": VALUE,
                   "options": {"prettify": True, "allow_cross_origin": False,
                               "discourage_caching": True}},
        "scalar": {"type": "json", "value": 42},
        "info": {"type": "nodeinfo"},
        "nothing": {"type": "none"},
        "nested": {"type": "path", "paths": {
            "/": {"type": "none"},
            "away": {"type": "redirect", "url": "/elsewhere"},
        }},
    }
    cfg = web_node(paths)
    cfg["controller"] = {"options": {"title": "<b>node & co</b>"}}
    return start_module_node(cfg)


def raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as given, read until the node closes: (status, headers, body)."""
    return split_response(exchange(port, request, timeout=5))


def test_json_value_and_defaults(node):
    r = requests.get(node.url + "/")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    assert r.json() == VALUE
    # Compact by default, UTF-8 on the wire (not \u escapes).
    assert b"\n" not in r.content and "caf\u00e9".encode() in r.content
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "no-store" not in r.headers.get("Cache-Control", "")
    # Every sub-path answers the same value.
    assert requests.get(node.url + "/any/sub/path").json() == VALUE
    assert requests.get(node.url + "/scalar").json() == 42


def test_json_options(node):
    r = requests.get(node.url + "/pretty")
    assert r.json() == VALUE
    assert r.text.startswith("{\n  ")
    assert "Access-Control-Allow-Origin" not in r.headers
    assert "no-store" in r.headers["Cache-Control"]
    assert r.headers["Pragma"] == "no-cache"


def test_json_methods(node):
    status, headers, body = raw(node.port, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 10
    r = requests.options(node.url + "/")
    assert r.status_code == 204 and "GET" in r.headers["Allow"]
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    r = requests.post(node.url + "/", data=b"x")
    assert r.status_code == 405 and "GET" in r.headers["Allow"]
    assert requests.delete(node.url + "/pretty").status_code == 405


def test_redirect(node):
    for path in ("/go", "/go/", "/go/deeper/path?x=2"):
        r = requests.get(node.url + path, allow_redirects=False)
        assert r.status_code == 302, path
        assert r.headers["Location"] == "https://example.com/target?q=1"
    r = requests.post(node.url + "/go", allow_redirects=False)
    assert r.status_code == 302
    r = requests.get(node.url + "/nested/away/x", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == "/elsewhere"


def test_none_is_404(node):
    for path in ("/nothing", "/nothing/", "/nothing/a/b", "/nested", "/nested/zzz"):
        r = requests.get(node.url + path)
        assert r.status_code == 404, path
    assert requests.post(node.url + "/nothing", data=b"abc").status_code == 404


def test_nodeinfo(node):
    r = requests.get(node.url + "/info")
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/html; charset=utf-8"
    from geonode import __version__
    assert __version__ in r.text
    assert str(node.proc.pid) in r.text
    assert re.search(r"uptime</th><td>\d", r.text)
    assert "gevent" in r.text and "Python" in r.text
    assert re.search(r"sessions</th><td>\d+</td>", r.text)
    # The title comes from the config: shown escaped, never as markup.
    assert "&lt;b&gt;node &amp; co&lt;/b&gt;" in r.text and "<b>node" not in r.text
    assert requests.post(node.url + "/info").status_code == 405
    status, _, body = raw(node.port, b"HEAD /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200 and body == b""


def test_bad_request_leaves_node_serving(node):
    status, _, _ = raw(node.port, b"GARBAGE\r\n\r\n")
    assert 400 <= status < 500
    assert requests.get(node.url + "/scalar").json() == 42


@pytest.mark.parametrize("service, key", [
    ({"type": "static", "directory": "missing"}, "paths.www.directory"),
    ({"type": "static", "package": "geonode.web", "resource": "no-such-folder"},
     "paths.www.resource"),
    ({"type": "static", "package": "no_such_package_xyz", "resource": "x"}, "paths.www.package"),
    ({"type": "redirect"}, "paths.www"),
    ({"type": "json"}, "paths.www"),
    ({"type": "reverseproxy", "port": 80}, "paths.www"),
])
def test_bad_service_config_exits_1(start_node, service, key):
    node = start_node(web_node({"www": service}), wait=False)
    rc = node.proc.wait(scaled(20))
    log = node.log()
    assert rc == 1, log
    assert key in log, log
    assert "Traceback" not in log, log


def test_json_large_value(start_node):
    big = {"items": list(range(20000))}
    node = start_node(web_node({"/": {"type": "json", "value": big}}))
    first = requests.get(node.url + "/").content
    assert json.loads(first) == big
    assert requests.get(node.url + "/x").content == first
