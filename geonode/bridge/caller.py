"""HTTP caller bridge: ``POST {"procedure", "args"?, "kwargs"?}`` → WAMP CALL.

Answers 200 ``{"args": [...], "kwargs": {...}}`` (both keys always present). A WAMP error is
200 ``{"error": uri, "args": [...], "kwargs": {...}}`` like Crossbar. The call never hangs: with
no answer within ``options.timeout`` seconds (default 30) the call is canceled and the reply is
504 ``{"error": "wamp.error.timeout", ...}``.
"""

from __future__ import annotations

from typing import Any

from geonode import wamp
from geonode.bridge.common import BridgeService, json_body, not_json, wamp_request
from geonode.config.services import BridgeConfig


class Caller(BridgeService):
    kind = "caller"

    def process(self, environ: dict, event: dict) -> tuple[int, bytes, str]:
        procedure, args, kwargs = wamp_request(event, "procedure")
        try:
            res_args, res_kwargs = self.session.call_with(procedure, args, kwargs,
                                                          timeout=self.timeout)
        except wamp.ApplicationError as e:
            return self.wamp_error(e)
        try:
            body = json_body({"args": res_args, "kwargs": res_kwargs})
        except (TypeError, ValueError) as e:   # a binary or NaN result
            return 200, not_json("result", e), "application/json; charset=UTF-8"
        return 200, body, "application/json; charset=UTF-8"


def build(cfg: BridgeConfig, ctx: Any) -> Caller:
    return Caller(cfg, ctx)
