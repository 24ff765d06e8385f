"""HTTP publisher bridge: ``POST {"topic", "args"?, "kwargs"?, "options"?}`` → WAMP PUBLISH.

Answers 200 ``{"id": <publication id>}`` once the router acknowledged the publication; a WAMP
error (e.g. ``wamp.error.not_authorized`` for the configured role) is 200
``{"error": uri, "args": [...], "kwargs": {...}}`` like Crossbar; ``options`` of the wrong
type (e.g. ``"exclude": 5``) are 400; see ``common`` for the rest.
"""

from __future__ import annotations

from typing import Any

from geonode import wamp
from geonode.bridge.common import BridgeService, Deny, check_type, json_body, wamp_request
from geonode.config.services import BridgeConfig


class Publisher(BridgeService):
    kind = "publisher"

    def process(self, environ: dict, event: dict) -> tuple[int, bytes, str]:
        topic, args, kwargs = wamp_request(event, "topic")
        # PUBLISH options geonode does not know are ignored (wamp.publish_with filters them)
        options = check_type(event.get("options"), dict, "options")
        try:
            pub_id = self.session.publish_with(topic, args, kwargs, options=options,
                                               acknowledge=True, timeout=self.timeout)
        except wamp.ApplicationError as e:
            return self.wamp_error(e)
        except ValueError as e:
            raise Deny(400, str(e)) from None
        return 200, json_body({"id": pub_id}), "application/json; charset=UTF-8"


def build(cfg: BridgeConfig, ctx: Any) -> Publisher:
    return Publisher(cfg, ctx)
