"""Webhook bridge: any POST/PUT body (raw text) is published to ``options.topic`` as
``{"headers": {name: [values]}, "body": "<raw text>"}`` and answered 202 ``success_response``
("OK"). With ``github_secret`` the request must carry a valid ``X-Hub-Signature-256`` or
``X-Hub-Signature`` (GitHub's HMAC of the body): missing → 400, wrong → 401, both with
``error_response`` ("NOT OK"), as is a failed publish (500).
"""

from __future__ import annotations

import logging
from typing import Any

from geonode import wamp
from geonode.bridge import signing
from geonode.bridge.common import BridgeService, Deny, request_headers
from geonode.config.services import WebhookConfig

log = logging.getLogger("geonode.bridge")
_TEXT = "text/plain; charset=utf-8"


class Webhook(BridgeService):
    kind = "webhook"
    decode_json = False
    deny_type = "text/plain; charset=utf-8"

    def __init__(self, cfg: WebhookConfig, ctx: Any) -> None:
        super().__init__(cfg, ctx)
        self.topic = cfg.topic
        self.success = cfg.success_response.encode("utf-8")
        self.error = cfg.error_response.encode("utf-8")
        self.github_secret = cfg.github_secret

    def deny_body(self, d: Deny) -> bytes:
        return self.error

    def check_signature(self, environ: dict, body: bytes) -> None:
        if not self.github_secret:
            return
        ok = signing.github_signature_ok(self.github_secret, request_headers(environ), body)
        if ok is None:
            raise Deny(400, "GitHub signature missing")
        if not ok:
            raise Deny(401, "GitHub signature invalid")

    def process(self, environ: dict, text: str) -> tuple[int, bytes, str]:
        headers = {name: [value] for name, value in request_headers(environ).items()}
        try:
            self.session.publish_with(self.topic, [{"headers": headers, "body": text}],
                                      acknowledge=True, timeout=self.timeout)
        except wamp.ApplicationError as e:
            log.error("webhook %s: publishing to %s failed: %s %s", environ.get("PATH_INFO"),
                      self.topic, e.error, e.args)
            return 500, self.error, _TEXT
        return 202, self.success, _TEXT


def build(cfg: WebhookConfig, ctx: Any) -> Webhook:
    return Webhook(cfg, ctx)
