"""HTTP caller bridge: ``POST {"procedure", "args"?, "kwargs"?}`` → WAMP CALL.

Answers 200 ``{"args": [...], "kwargs": {...}}`` (both keys always present). A WAMP error is
200 ``{"error": uri, "args": [...], "kwargs": {...}}`` like Crossbar. The call never hangs: with
no answer within ``options.timeout`` seconds (default 30) the call is canceled and the reply is
504 ``{"error": "wamp.error.timeout", ...}``.
"""

from __future__ import annotations

from typing import Any

from geonode import wamp
from geonode.bridge.common import BridgeService, Deny, check_type, json_body

DEFAULT_TIMEOUT = 30.0


class Caller(BridgeService):
    kind = "caller"

    def process(self, environ: dict, event: dict) -> tuple[int, bytes, str]:
        procedure = event.get("procedure")
        if not isinstance(procedure, str) or not procedure:
            raise Deny(400, "request body is missing the key 'procedure' (a string)")
        args = check_type(event.get("args"), list, "args")
        kwargs = check_type(event.get("kwargs"), dict, "kwargs")
        timeout = float(self.options.get("timeout", DEFAULT_TIMEOUT))
        try:
            res_args, res_kwargs = self.session.call_with(procedure, args, kwargs,
                                                          timeout=timeout)
        except wamp.ApplicationError as e:
            return self.wamp_error(e)
        return 200, json_body({"args": res_args, "kwargs": res_kwargs}), \
            "application/json; charset=UTF-8"


def build(cfg: dict, ctx: Any) -> Caller:
    return Caller(cfg, ctx)
