"""HTTP subscriber (Crossbar's ``crossbar.bridge.rest.MessageForwarder``), a router component.

``extra``: ``subscriptions: [{"url", "topic", "match"?}]``, ``method`` ("POST"),
``expectedcode`` (checked when given), and geonode's bounds: ``concurrency`` (10 requests in
flight), ``queue`` (1000 events waiting; more are dropped with a warning), ``timeout`` (10 s
per request), ``tls_ca`` (a PEM file of CAs for https URLs, relative to the config's folder;
default: the system's). Every event is sent as ``{"args": [...], "kwargs": {...}}`` (JSON) to
its URL.
The event handler only queues (on the hub, never blocking the router); a fixed set of
greenlets does the HTTP. An unexpected status or a failed request is logged.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import Any

import gevent
import gevent.queue

from geonode.bridge import httpclient
from geonode.bridge.httpclient import config_path

log = logging.getLogger("geonode.bridge.forwarder")


class MessageForwarder:
    def __init__(self, config: Any) -> None:
        extra = config.extra or {}
        self.subscriptions = extra.get("subscriptions", [])
        for i, s in enumerate(self.subscriptions):
            if "topic" not in s or "url" not in s:
                raise ValueError(f"extra.subscriptions[{i}]: needs 'topic' and 'url'")
        self.method = str(extra.get("method", "POST")).upper()
        self.expected = extra.get("expectedcode")
        self.concurrency = int(extra.get("concurrency", 10))
        self.timeout = float(extra.get("timeout", httpclient.DEFAULT_TIMEOUT))
        self.tls = httpclient.tls_context(config_path(config, extra.get("tls_ca")))
        self.queue: gevent.queue.Queue = gevent.queue.Queue(int(extra.get("queue", 1000)))
        self.workers: list[gevent.Greenlet] = []
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def on_join(self, session: Any) -> None:
        if not self.workers:
            self.workers = [gevent.spawn(self._work) for _ in range(self.concurrency)]
        for s in self.subscriptions:
            session.subscribe(s["topic"], partial(self._on_event, s["url"]),
                              match=s.get("match"), on_hub=True)
            log.info("forwarding %s to %s %s", s["topic"], self.method, s["url"])

    def _on_event(self, url: str, *args: Any, **kwargs: Any) -> None:
        try:
            self.queue.put_nowait((url, args, kwargs))
        except gevent.queue.Full:
            self.dropped += 1
            log.warning("forwarder queue full (%d): event for %s dropped", self.queue.maxsize,
                        url)

    def _work(self) -> None:
        while True:
            url, args, kwargs = self.queue.get()
            try:
                # allow_nan=False: NaN/Infinity (from a msgpack/CBOR publisher) are not JSON
                body = json.dumps({"args": list(args), "kwargs": kwargs}, separators=(",", ":"),
                                  ensure_ascii=False, allow_nan=False).encode("utf-8")
            except (TypeError, ValueError) as e:
                # e.g. a binary payload: that event is lost, never this worker
                self.failed += 1
                log.warning("an event for %s has no JSON form, not forwarded: %s", url, e)
                continue
            try:
                resp = httpclient.request(self.method, url, body,
                                          {"Content-Type": "application/json"},
                                          timeout=self.timeout, context=self.tls)
            except httpclient.HTTPError as e:
                self.failed += 1
                log.warning("forwarding an event to %s failed: %s", url, e)
                continue
            except Exception:
                self.failed += 1
                log.exception("forwarding an event to %s failed", url)
                continue
            if self.expected and resp.status != int(self.expected):
                self.failed += 1
                log.warning("%s %s returned %d, not the expected %s", self.method, url,
                            resp.status, self.expected)
            else:
                self.sent += 1
