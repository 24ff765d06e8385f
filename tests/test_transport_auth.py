"""A transport's ``auth`` reaches the router: ticket logins over WebSocket and RawSocket."""

from __future__ import annotations

import asyncio

import pytest
from autobahn.wamp.exception import ApplicationError
from support import router_config, scaled, web_transport
from support.wamp import rawsocket_session, ws_session

AUTH = {"ticket": {"type": "static",
                   "principals": {"joe": {"ticket": "s3cr3t", "role": "anonymous"}}}}


@pytest.fixture(scope="module")
def node(start_module_node):
    transports = [
        web_transport({"ws": {"type": "websocket", "auth": AUTH},
                       "open": {"type": "websocket"}}),
        {"type": "rawsocket", "auth": AUTH,
         "endpoint": {"type": "tcp", "port": "$PORT2", "interface": "127.0.0.1"}},
    ]
    return start_module_node(router_config(transports), nports=2)


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, scaled(30)))


def test_websocket_path_auth(node):
    async def main():
        s = await ws_session(node.port, "msgpack", ticket=("joe", "s3cr3t"))
        info = await s.call("wamp.session.get", s._session_id)
        assert (info["authid"], info["authmethod"]) == ("joe", "ticket")
        s.leave()
        with pytest.raises(ApplicationError) as e:
            await ws_session(node.port, "json", ticket=("joe", "wrong"))
        assert e.value.error == "wamp.error.authentication_failed"
        with pytest.raises(ApplicationError) as e:
            await ws_session(node.port, "json")          # anonymous is not configured here
        assert e.value.error == "wamp.error.no_auth_method"
        # a path without auth on the same transport stays anonymous
        anon = await ws_session(node.port, "json", path="open")
        info = await anon.call("wamp.session.get", anon._session_id)
        assert info["authmethod"] == "anonymous"
        anon.leave()

    _run(main())


def test_rawsocket_auth(node):
    async def main():
        s = await rawsocket_session("cbor", port=node.ports[1], ticket=("joe", "s3cr3t"))
        info = await s.call("wamp.session.get", s._session_id)
        assert (info["authid"], info["authmethod"]) == ("joe", "ticket")
        s.leave()
        with pytest.raises(ApplicationError) as e:
            await rawsocket_session("json", port=node.ports[1])
        assert e.value.error == "wamp.error.no_auth_method"

    _run(main())
