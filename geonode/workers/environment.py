"""A worker's process environment, as Crossbar builds it (``create_process_env``).

``options.env.inherit``: true (default) copies the node's environment, false starts empty, a
list copies those names; ``options.env.vars`` are set on top. ``PYTHONUNBUFFERED=1`` is added
unless the config sets it (a child's lines then reach the node's log as they are written).
"""

from __future__ import annotations

import os


def process_env(options: dict) -> dict[str, str]:
    env_cfg = options.get("env") or {}
    inherit = env_cfg.get("inherit", True)
    env: dict[str, str] = {}
    if inherit is True:
        env.update(os.environ)
    elif isinstance(inherit, list):
        env.update({k: os.environ[k] for k in inherit if k in os.environ})
    for k, v in (env_cfg.get("vars") or {}).items():
        env[k] = str(v)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
