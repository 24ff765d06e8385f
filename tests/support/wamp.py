"""Real autobahn-python (asyncio) WAMP clients over real sockets: WebSocket or RawSocket, any
serializer, plain or batched, any authmethod; and ``SyncClient``, a blocking wrapper for test
code that is not async. Each async test runs its own event loop (``asyncio.run``)."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

import txaio

txaio.use_asyncio()

from autobahn.asyncio.rawsocket import WampRawSocketClientFactory  # noqa: E402
from autobahn.asyncio.wamp import ApplicationSession  # noqa: E402
from autobahn.asyncio.websocket import WampWebSocketClientFactory  # noqa: E402
from autobahn.wamp import serializer as S  # noqa: E402
from autobahn.wamp.exception import ApplicationError  # noqa: E402
from autobahn.wamp.types import ComponentConfig, PublishOptions  # noqa: E402

from .timing import scaled  # noqa: E402

__all__ = ["WS_SERIALIZERS", "Client", "SyncClient", "exercise", "make_serializer",
           "rawsocket_session", "ws_session"]

CLASSES = {"json": S.JsonSerializer, "msgpack": S.MsgPackSerializer,
           "cbor": S.CBORSerializer, "ubjson": S.UBJSONSerializer}

#: every WebSocket serializer variant geonode must speak with autobahn-python
WS_SERIALIZERS = ["json", "msgpack", "cbor", "ubjson",
                  "json.batched", "msgpack.batched", "cbor.batched", "ubjson.batched"]


def make_serializer(name: str):
    base, _, batched = name.partition(".")
    return CLASSES[base](batched=bool(batched))


class Client(ApplicationSession):
    """Resolves ``joined`` on WELCOME (``details``: the SessionDetails) and ``left`` when the
    session ends. A refused join fails ``joined`` with ApplicationError(ABORT reason), a
    dropped connection with ConnectionError."""

    def __init__(self, config, joined, left, on_challenge: Callable | None = None,
                 authmethods: list[str] | None = None, authid: str | None = None,
                 authextra: dict | None = None):
        super().__init__(config)
        self._joined, self._left = joined, left
        self._on_challenge = on_challenge
        self._auth = {"authmethods": authmethods, "authid": authid, "authextra": authextra}

    def onConnect(self):
        self.join(self.config.realm, **self._auth)

    def onChallenge(self, challenge):
        return self._on_challenge(challenge)

    def onJoin(self, details):
        self.details = details
        if not self._joined.done():
            self._joined.set_result(self)

    def onLeave(self, details):
        if not self._joined.done():
            self._joined.set_exception(ApplicationError(details.reason, details.message))
        if not self._left.done():
            self._left.set_result(details)
        super().onLeave(details)

    def onDisconnect(self):
        if not self._left.done():
            self._left.set_result(None)
        if not self._joined.done():
            self._joined.set_exception(ConnectionError("disconnected before joining"))


def _auth(ticket: tuple[str, str] | None, auth: dict) -> dict:
    if ticket is not None:   # (authid, ticket): WAMP-Ticket
        auth = dict(auth, authmethods=["ticket"], authid=ticket[0],
                    on_challenge=lambda challenge: ticket[1])
    return auth


async def _session(factory_maker, connect, realm: str, timeout: float, auth: dict):
    loop = asyncio.get_running_loop()
    joined, left = loop.create_future(), loop.create_future()
    factory = factory_maker(lambda: Client(ComponentConfig(realm), joined, left, **auth))
    await connect(factory)
    session = await asyncio.wait_for(joined, scaled(timeout))
    session.left = left
    return session


async def ws_session(port: int, serializer: str = "json", path: str = "ws",
                     realm: str = "realm1", timeout: float = 10.0,
                     ticket: tuple[str, str] | None = None, **auth: Any):
    """A joined autobahn session over WebSocket (``session.left``: future of its end), joined
    within ``scaled(timeout)``. ``auth``: ``authmethods``, ``authid``, ``authextra``,
    ``on_challenge(challenge)``."""
    loop = asyncio.get_running_loop()
    return await _session(
        lambda mk: WampWebSocketClientFactory(mk, url=f"ws://127.0.0.1:{port}/{path}",
                                              serializers=[make_serializer(serializer)]),
        lambda f: loop.create_connection(f, "127.0.0.1", port), realm, timeout,
        _auth(ticket, auth))


async def rawsocket_session(serializer: str = "json", port: int | None = None,
                            unix_path: str | None = None, realm: str = "realm1",
                            timeout: float = 10.0, ticket: tuple[str, str] | None = None,
                            ssl: Any = None, **auth: Any):
    """A joined autobahn session over RawSocket (TCP ``port``, over TLS with an ``ssl``
    context, or ``unix_path``)."""
    loop = asyncio.get_running_loop()

    def connect(f):
        if unix_path is not None:
            return loop.create_unix_connection(f, unix_path)
        tls = {"ssl": ssl, "server_hostname": "127.0.0.1"} if ssl is not None else {}
        return loop.create_connection(f, "127.0.0.1", port, **tls)

    return await _session(
        lambda mk: WampRawSocketClientFactory(mk, serializer=make_serializer(serializer)),
        connect, realm, timeout, _auth(ticket, auth))


async def leave(session, timeout: float = 5.0) -> None:
    """Leave (GOODBYE) and wait until the session has ended."""
    if session.is_attached():
        session.leave()
    await asyncio.wait_for(asyncio.shield(session.left), scaled(timeout))


async def exercise(a, b, tag: str = "") -> None:
    """Register/call, subscribe/publish (acknowledged, binary payload) between two sessions."""
    loop = asyncio.get_running_loop()
    proc, topic = f"com.test.add{tag}", f"com.test.topic{tag}"
    await a.register(lambda x, y, **kw: {"sum": x + y, "kw": kw}, proc)
    got = loop.create_future()
    await a.subscribe(lambda *args, **kwargs: got.done() or got.set_result((args, kwargs)),
                      topic)
    res = await b.call(proc, 2, 3, flag="ü")
    assert res == {"sum": 5, "kw": {"flag": "ü"}}
    pub = await b.publish(topic, 1, "two", b"\x00\x01\xffbinary", {"n": [1.5, None, True]},
                          color="green", options=PublishOptions(acknowledge=True))
    assert pub.id
    args, kwargs = await asyncio.wait_for(got, scaled(5))
    assert list(args) == [1, "two", b"\x00\x01\xffbinary", {"n": [1.5, None, True]}]
    assert kwargs == {"color": "green"}


class SyncClient:
    """A blocking autobahn-python client: its asyncio loop runs in a background thread; test
    code calls ``call``, ``publish``, ``subscribe`` and ``register`` synchronously. Events land
    in ``queue.Queue``s."""

    def __init__(self, port: int, path: str = "ws", realm: str = "realm1",
                 timeout: float = 10.0) -> None:
        self.timeout = scaled(timeout)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.session: ApplicationSession = self._run(
            ws_session(port, path=path, realm=realm, timeout=timeout))

    def _run(self, awaitable: Any, timeout: float | None = None) -> Any:
        """Run a coroutine, or a zero-argument callable returning an awaitable, on the
        client's loop (autobahn's futures belong to the loop that creates them)."""
        async def wrapped():
            return await (awaitable() if callable(awaitable) else awaitable)

        fut = asyncio.run_coroutine_threadsafe(wrapped(), self.loop)
        return fut.result(timeout or self.timeout)

    def call(self, procedure: str, *args: Any, **kwargs: Any) -> Any:
        return self._run(lambda: self.session.call(procedure, *args, **kwargs))

    def publish(self, topic: str, *args: Any, **kwargs: Any) -> Any:
        return self._run(lambda: self.session.publish(topic, *args,
                                              options=PublishOptions(acknowledge=True), **kwargs))

    def subscribe(self, topic: str) -> queue.Queue:
        q: queue.Queue = queue.Queue()

        def handler(*args, **kwargs):
            q.put((list(args), kwargs))

        self._run(lambda: self.session.subscribe(handler, topic))
        return q

    def register(self, procedure: str, fn: Any) -> None:
        self._run(lambda: self.session.register(fn, procedure))

    def close(self) -> None:
        try:
            self._run(leave(self.session), timeout=scaled(5))
        except Exception:
            pass  # already gone (the node stopped): nothing left to close
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(scaled(2))


def wait_subscribed(client: SyncClient, topics: tuple[str, ...] = (),
                    procedures: tuple[str, ...] = (), timeout: float = 10.0) -> None:
    """Wait until every topic has a subscriber and every procedure a callee, as the router's
    meta API sees them (a node's components join and subscribe just after it listens)."""
    from .timing import wait_for

    def ready() -> bool:
        return (all(client.call("wamp.subscription.lookup", t) for t in topics)
                and all(client.call("wamp.registration.lookup", p) for p in procedures))

    wait_for(ready, timeout, f"subscriptions to {list(topics)} and registrations of "
             f"{list(procedures)}", interval=0.05)
