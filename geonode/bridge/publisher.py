"""HTTP publisher bridge: ``POST {"topic", "args"?, "kwargs"?, "options"?}`` → WAMP PUBLISH.

Answers 200 ``{"id": <publication id>}`` once the router acknowledged the publication; a WAMP
error (e.g. ``wamp.error.not_authorized`` for the configured role) is 200
``{"error": uri, "args": [...], "kwargs": {...}}`` like Crossbar; see ``common`` for the rest.
"""

from __future__ import annotations

from typing import Any

from geonode import wamp
from geonode.bridge.common import BridgeService, Deny, check_type, json_body

_OPTIONS = ("exclude_me", "exclude", "exclude_authid", "exclude_authrole", "eligible",
            "eligible_authid", "eligible_authrole", "retain")


class Publisher(BridgeService):
    kind = "publisher"

    def process(self, environ: dict, event: dict) -> tuple[int, bytes, str]:
        topic = event.get("topic")
        if not isinstance(topic, str) or not topic:
            raise Deny(400, "request body is missing the key 'topic' (a string)")
        args = check_type(event.get("args"), list, "args")
        kwargs = check_type(event.get("kwargs"), dict, "kwargs")
        options = check_type(event.get("options"), dict, "options") or {}
        opts = {k: options[k] for k in _OPTIONS if options.get(k) is not None}
        try:
            pub_id = self.session.publish_with(topic, args, kwargs, options=opts,
                                               acknowledge=True, timeout=self.timeout)
        except wamp.ApplicationError as e:
            return self.wamp_error(e)
        return 200, json_body({"id": pub_id}), "application/json; charset=UTF-8"

    @property
    def timeout(self) -> float:
        return float(self.options.get("timeout", wamp.DEFAULT_TIMEOUT))


def build(cfg: dict, ctx: Any) -> Publisher:
    return Publisher(cfg, ctx)
