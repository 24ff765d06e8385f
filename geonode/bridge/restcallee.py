"""HTTP callee (Crossbar's ``crossbar.bridge.rest.RESTCallee``), a router component.

``extra``: ``procedure`` and ``baseurl`` (R), and geonode's bounds ``concurrency`` (10 requests
in flight; callers beyond wait up to ``timeout``) and ``timeout`` (10 s per request);
``tls_ca``: a PEM file of CAs to verify an https server with (relative to the config's folder;
default: the system's). Registers ``procedure(method, url="", body="", headers={},
params={})``: the HTTP request goes to ``urljoin(baseurl, url)`` with ``params`` as query
string and ``headers`` as ``{name: value or [values]}``; the result is ``{"code", "content"
(text), "headers": {name: [values]}}``. A request that fails or times out raises ``wamp.error.runtime_error``.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode, urljoin

import gevent.lock

from geonode.bridge import httpclient
from geonode.bridge.httpclient import config_path
from geonode.router.errors import RUNTIME_ERROR
from geonode.wamp import ApplicationError

log = logging.getLogger("geonode.bridge.restcallee")


class RESTCallee:
    def __init__(self, config: Any) -> None:
        extra = config.extra or {}
        if "procedure" not in extra or "baseurl" not in extra:
            raise ValueError("extra: RESTCallee needs 'procedure' and 'baseurl'")
        self.procedure = extra["procedure"]
        self.baseurl = extra["baseurl"]
        self.timeout = float(extra.get("timeout", httpclient.DEFAULT_TIMEOUT))
        self.slots = gevent.lock.BoundedSemaphore(int(extra.get("concurrency", 10)))
        self.tls = httpclient.tls_context(config_path(config, extra.get("tls_ca")))

    def on_join(self, session: Any) -> None:
        session.register(self.procedure, self.on_call, on_hub=True)
        log.info("%s calls %s", self.procedure, self.baseurl)

    def on_call(self, method: str = "GET", url: str = "", body: str = "",
                headers: dict | None = None, params: dict | None = None) -> dict:
        full = urljoin(self.baseurl, url or "")
        if params:
            full += ("&" if "?" in full else "?") + urlencode(params, doseq=True)
        hdrs = []
        for k, v in (headers or {}).items():
            if k.lower() in ("content-length", "host"):
                continue
            for item in v if isinstance(v, list) else [v]:
                hdrs.append((k, str(item)))
        data = body.encode("utf-8") if isinstance(body, str) else (body or None)
        if not self.slots.acquire(timeout=self.timeout):
            raise ApplicationError(RUNTIME_ERROR,
                                   f"{self.procedure}: too many HTTP requests in flight")
        try:
            resp = httpclient.request(str(method).upper(), full, data or None, hdrs,
                                      timeout=self.timeout, context=self.tls)
        except httpclient.HTTPError as e:
            raise ApplicationError(RUNTIME_ERROR, str(e)) from None
        finally:
            self.slots.release()
        return {"code": resp.status, "content": resp.text, "headers": resp.header_lists()}
