"""Several geonode processes as one router: the Redis backplane (docs/scaling.md).

``create(router, config, worker_path)`` is handed to ``geonode.router.Router`` by the node and
called for a router worker with ``options.backplane``; it returns the ``Backplane`` (the router
starts it) or None (one log line saying why: the process is not monkey-patched, redis is not
installed).
"""

from __future__ import annotations

import logging
from typing import Any

from geonode.config.backplane import OPTION, BackplaneConfig

log = logging.getLogger("geonode.cluster")

__all__ = ["BackplaneConfig", "create"]


def create(router: Any, config: BackplaneConfig, worker_path: str = "") -> Any:
    where = f"{worker_path}.{OPTION}" if worker_path else OPTION
    try:
        import hiredis  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        log.error("%s: the backplane needs redis-py and hiredis (pip install "
                  "'geonode[cluster]'); serving local clients only", where)
        return None
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        # redis-py would block the hub on every read
        log.error("%s: the backplane needs a gevent-patched process (python -m geonode, "
                  "geonode's gunicorn worker); serving local clients only", where)
        return None
    from geonode.cluster.backplane import Backplane

    return Backplane(router, config, worker_path)
