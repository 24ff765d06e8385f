"""The ``websocket`` path service outside the happy path: config errors, foreign servers."""

from __future__ import annotations

import http.client
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from support import scaled

from geonode.config import ConfigError
from geonode.config.model import parse_service
from geonode.transport import serializers as ser
from geonode.web.context import BuildContext
from geonode.web.services import websocket as service

pytestmark = pytest.mark.inprocess

PATH = "workers[0].transports[0].paths.ws"


def _ctx() -> BuildContext:
    # The service only hands the router to connections; none are made here.
    return BuildContext(config_dir=Path("."), json_path=PATH, router=object())


@pytest.mark.parametrize("cfg,key", [
    ({"serializers": ["json", "xml"]}, f"{PATH}.serializers[1]"),
    ({"serializers": []}, f"{PATH}.serializers"),
    ({"options": {"max_queue": 0}}, f"{PATH}.options.max_queue"),
    ({"options": {"max_queue_bytes": "lots"}}, f"{PATH}.options.max_queue_bytes"),
])
def test_config_errors_name_the_key(cfg, key):
    with pytest.raises(ConfigError) as err:
        parse_service({"type": "websocket", **cfg}, PATH)
    assert key in str(err.value)


def test_no_router_is_a_config_error():
    with pytest.raises(ConfigError, match=r"paths\.ws: a websocket path needs a router"):
        parse_service({"type": "websocket"}, PATH, has_router=False)


def test_default_serializers_are_all_installed_plain_and_batched():
    names = parse_service({"type": "websocket"}, PATH).serializers
    assert set(names) == {"json", "msgpack", "cbor", "ubjson"}
    protocols = ser.subprotocols(names)
    assert "wamp.2.cbor.batched" in protocols and "wamp.2.json" in protocols


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def foreign_server():
    """The service under wsgiref: a WSGI server that knows nothing of geonode.websocket."""
    app = service.build(parse_service({"type": "websocket", "serializers": ["json"]}, PATH),
                        _ctx())
    httpd = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd.server_port
    httpd.shutdown()
    httpd.server_close()


def _get(port: int, headers: dict) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(5))
    conn.request("GET", "/", headers=headers)
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    return resp.status, body


def test_upgrade_under_a_foreign_server_is_501_with_a_reason(foreign_server):
    status, body = _get(foreign_server, {"Upgrade": "websocket", "Connection": "Upgrade",
                                         "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                         "Sec-WebSocket-Version": "13",
                                         "Sec-WebSocket-Protocol": "wamp.2.json"})
    assert status == 501
    assert "geonode" in body and "WebSocket" in body


def test_plain_get_under_a_foreign_server_is_the_status_page(foreign_server):
    status, body = _get(foreign_server, {})
    assert status == 200 and "wamp.2.json" in body
