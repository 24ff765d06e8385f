"""In-process clients for the router core: a real Router, a Peer that records messages.

Every message the router sends is serialized and parsed back with autobahn's JSON serializer,
so what the tests see is what a real client would receive. The router runs on this process's
gevent hub (not monkey-patched): waits here yield to it with ``gevent.sleep``.
"""

from __future__ import annotations

import txaio

txaio.use_asyncio()

import threading  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from autobahn.wamp import message as m  # noqa: E402
from autobahn.wamp import role  # noqa: E402
from autobahn.wamp.serializer import JsonSerializer  # noqa: E402

from geonode.router import Router  # noqa: E402

from .config import ALL, realm  # noqa: E402
from .timing import wait_for  # noqa: E402

__all__ = ["ALL", "ROLES_ALL", "Client", "TestPeer", "green_wait_for", "in_thread",
           "make_router", "realm", "record_attached", "settle"]

_ser = JsonSerializer()
_client_ser = JsonSerializer()

ROLES_ALL = dict(role.DEFAULT_CLIENT_ROLES)


def make_router(*realms) -> Router:
    return Router({"realms": list(realms) or [realm()]}, None)


def green_wait_for(predicate, timeout: float = 5.0, what: str | None = None,
                   interval: float = 0.001):
    """``wait_for`` on the hub: the router's greenlets and timers run while it polls."""
    return wait_for(predicate, timeout, what, interval=interval, sleep=gevent.sleep)


def record_attached(router: Router) -> list:
    """The peers ``router`` attaches from now on, in order (the list fills as they come)."""
    peers: list = []
    attach = router.attach

    def recording_attach(peer, **kw):
        peers.append(peer)
        return attach(peer, **kw)

    router.attach = recording_attach  # type: ignore[method-assign]
    return peers


def in_thread(fn: Callable[[], Any], timeout: float) -> Any:
    """``fn()`` in an OS thread (a blocking client) while the hub keeps running; its value,
    or its exception raised here. ``timeout``: nominal seconds, scaled."""
    from .timing import scaled

    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # reported to the caller
            out["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    green_wait_for(lambda: not t.is_alive(), scaled(timeout), "the client thread")
    if "error" in out:
        raise out["error"]
    return out.get("value")


def settle() -> None:
    """Return once the hub has nothing left to run now: every greenlet the router spawned for
    what was sent so far has had its turn (timers that are not due yet have not fired)."""
    gevent.idle()


class TestPeer:
    __test__ = False

    def __init__(self):
        self.transport_details = {"type": "test", "peer": "test"}
        self.messages: list = []
        self.closed = False

    def send(self, msg):
        assert not self.closed, f"send after close: {msg}"
        data, binary = _ser.serialize(msg)
        self.messages.extend(_client_ser.unserialize(data, binary))

    def close(self):
        self.closed = True


class Client:
    """A WAMP client driven by hand: ``c.send(msg)``, ``c.take(m.Welcome)``."""

    def __init__(self, router: Router, auth_config=None, auth=None):
        self.router = router
        self.peer = TestPeer()
        self.session = router.attach(self.peer, auth_config=auth_config, auth=auth)
        self.req = 0
        self.id = None

    def send(self, msg):
        # Round-trip through the serializer, as a transport would deliver it.
        data, binary = _client_ser.serialize(msg)
        for parsed in JsonSerializer().unserialize(data, binary):
            self.session.receive(parsed)
        gevent.sleep(0)  # a yield, not a wait: what the router spawned runs first

    def next(self) -> int:
        self.req += 1
        return self.req

    @property
    def messages(self):
        return self.peer.messages

    def take(self, cls=None, timeout: float = 5.0):
        # a deadline, not a count: a failed authentication is answered late (auth throttle)
        green_wait_for(lambda: self.peer.messages, timeout,
                       f"a message (wanted {cls.__name__ if cls else 'any'})")
        msg = self.peer.messages.pop(0)
        if cls is not None:
            assert isinstance(msg, cls), f"wanted {cls.__name__}, got {msg}"
        return msg

    def none(self):
        """Nothing was sent to this client for anything sent so far (once the hub is idle)."""
        settle()
        assert self.peer.messages == [], f"unexpected {self.peer.messages}"

    def join(self, realm="realm1", authmethods=None, authid=None, authextra=None, roles=None):
        self.send(m.Hello(realm, roles or dict(role.DEFAULT_CLIENT_ROLES),
                          authmethods=authmethods, authid=authid, authextra=authextra))
        msg = self.take()
        if isinstance(msg, m.Welcome):
            self.id = msg.session
        return msg

    def joined(self, **kw) -> Client:
        msg = self.join(**kw)
        assert isinstance(msg, m.Welcome), msg
        return self

    def subscribe(self, topic, **opts) -> int:
        r = self.next()
        self.send(m.Subscribe(r, topic, **opts))
        return self.take(m.Subscribed).subscription

    def register(self, proc, **opts) -> int:
        r = self.next()
        self.send(m.Register(r, proc, **opts))
        return self.take(m.Registered).registration

    def publish(self, topic, *args, **opts):
        r = self.next()
        self.send(m.Publish(r, topic, args=list(args) or None, **opts))
        return r

    def call(self, proc, *args, **opts):
        r = self.next()
        self.send(m.Call(r, proc, args=list(args) or None, **opts))
        return r

    def meta(self, proc, *args, **kwargs):
        """Call a meta procedure and return its single result (or the ERROR)."""
        r = self.next()
        self.send(m.Call(r, proc, args=list(args) or None, kwargs=kwargs or None))
        msg = self.take()
        assert msg.request == r
        if isinstance(msg, m.Result):
            return msg.args[0] if msg.args else None
        return msg


def websocket_server(router: Router, max_connections: int) -> Any:
    """A started in-process WebServer on 127.0.0.1 (port 0) whose root path is a json
    ``websocket`` service of ``router``; the caller stops it."""
    from pathlib import Path

    from geonode.config.model import Endpoint, parse_service
    from geonode.web.context import BuildContext
    from geonode.web.server import WebServer
    from geonode.web.services import websocket as service

    ctx = BuildContext(config_dir=Path("."), json_path="paths.ws", router=router)
    app = service.build(parse_service({"type": "websocket", "serializers": ["json"]}, "paths.ws"),
                        ctx)
    srv = WebServer(Endpoint(port=0, interface="127.0.0.1"), app, config_dir=Path("."),
                    json_path="transports[0]", max_connections=max_connections)
    srv.start()
    return srv


def rawsocket_server(router: Router) -> Any:
    """A started RawSocket server (json) of ``router`` on 127.0.0.1 (port 0); the caller stops
    it."""
    from geonode.config.model import parse_transport
    from geonode.transport import rawsocket

    transport = parse_transport({"type": "rawsocket", "serializers": ["json"],
                                 "endpoint": {"type": "tcp", "port": 0,
                                              "interface": "127.0.0.1"}}, "transports[0]")
    srv = rawsocket.serve(transport, router, None)
    srv.start()
    return srv
