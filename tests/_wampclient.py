"""A blocking wrapper around a real autobahn-python (asyncio) WAMP client, for tests.

The client (``_transport_client.ws_session``) runs its own asyncio loop in a background
thread; test code calls ``call``, ``publish``, ``subscribe`` and ``register`` synchronously.
Events land in ``queue.Queue``s.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any

from _transport_client import ws_session
from autobahn.asyncio.wamp import ApplicationSession
from autobahn.wamp.types import PublishOptions


class SyncClient:
    def __init__(self, port: int, path: str = "ws", realm: str = "realm1",
                 timeout: float = 10.0) -> None:
        self.timeout = timeout
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
        async def _leave():
            if self.session.is_attached():
                self.session.leave()
            await asyncio.sleep(0.05)
        try:
            self._run(_leave(), timeout=2)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(2)
