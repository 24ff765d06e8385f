"""``{"type": "dynamic", "authenticator": "<uri>"}`` for any method.

Each method module has its own ``DynamicAuth`` (the authenticator is called at a different step:
at HELLO for anonymous/wampcra/cryptosign, at AUTHENTICATE for ticket); this module just picks it.
"""

from __future__ import annotations

from typing import Any

from geonode.router.auth import PendingAuth, pending_auth


def dynamic_auth(method: str, cfg: dict, session: Any) -> PendingAuth:
    return pending_auth(method, dict(cfg, type="dynamic"), session)
