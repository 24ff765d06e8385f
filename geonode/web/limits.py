"""The limits a web (or rawsocket) transport puts on its clients, with the defaults and why.

Everything here is configurable (docs/web.md "Limits"; docs/security.md "HTTP"); the defaults
are meant to hold against one hostile client without ever cutting an honest one:

``client_timeout`` (Crossbar's key, default 60 s here, off in Crossbar)
    how long the node waits on a silent client in the middle of an exchange: a read of the
    request head or body, a write of a response the client does not take. 60 s outlasts any
    network stall an honest client survives; a client that stops reading or sending for longer
    costs a connection for a minute at most. ``null`` turns it off (Crossbar's default).
``request_head_timeout`` (geonode, default 10 s, or ``client_timeout`` when that is smaller)
    a request head (request line and headers) must be complete this long after its first byte,
    however its bytes trickle in: the slowloris bound (408). Browsers and HTTP libraries send
    a head in one write; 10 s is a 64 KiB head at 6.5 KiB/s.
``keepalive_timeout`` (geonode, default 15 s, or ``client_timeout`` when that is smaller)
    how long a connection may wait for a request, its first or its next keep-alive one, before
    it is closed quietly. Idle connections cost a file descriptor each and count against
    ``max_connections``; HTTP clients reopen a closed keep-alive connection by themselves, and
    15 s still keeps a page's connections warm for its follow-up requests.
``max_body_size`` (geonode; transport default, overridden per ``wsgi``/``reverseproxy`` path;
    default 64 MiB)
    the largest request body a path accepts (413). The WSGI host reads a body whole before the
    app runs (memory up to 1 MiB, then a temporary file), so without a bound one upload could
    fill the disk; 64 MiB takes ordinary photo and document uploads.
``max_connections`` (Crossbar's name for the cap it never enforced; per endpoint)
    connections one endpoint holds at once. Past it the endpoint stops accepting until one
    closes (new clients wait in the listen backlog; nothing is read or refused), with one log
    line. Default: 80 % of the process's open-file limit (``ulimit -n``) shared among the
    node's endpoints, so connections alone never make ``accept()``, a static file, a spooled
    body or an upstream connection fail with "too many open files".

WebSockets are not HTTP connections once upgraded: none of the timeouts apply to them
(``auto_ping_interval`` is their liveness check).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# max_connections is an endpoint's (web and rawsocket alike): its cap lives with the listeners.
from geonode.endpoints import ConnectionCap, default_max_connections, open_file_limit

__all__ = ["ConnectionCap", "Timeouts", "default_max_connections", "max_body_size",
           "open_file_limit", "timeouts"]

DEFAULT_CLIENT_TIMEOUT = 60.0
DEFAULT_REQUEST_HEAD_TIMEOUT = 10.0
DEFAULT_KEEPALIVE_TIMEOUT = 15.0
DEFAULT_MAX_BODY_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Timeouts:
    """A web transport's timeouts in seconds (None: unbounded)."""

    client: float | None = DEFAULT_CLIENT_TIMEOUT
    request_head: float | None = DEFAULT_REQUEST_HEAD_TIMEOUT
    keepalive: float | None = DEFAULT_KEEPALIVE_TIMEOUT


def _smaller(default: float, client: float | None) -> float:
    return default if client is None else min(default, float(client))


def timeouts(options: dict) -> Timeouts:
    """The timeouts of a web transport's ``options`` (absent keys: the defaults above).

    An explicit ``client_timeout`` lowers the head and keep-alive defaults to itself, so a
    config written for Crossbar with ``client_timeout: 5`` keeps every bound at 5 s; ``null``
    turns off only the client timeout itself."""
    client = options.get("client_timeout", DEFAULT_CLIENT_TIMEOUT)
    client = None if client is None else float(client)
    head = options.get("request_head_timeout",
                       _smaller(DEFAULT_REQUEST_HEAD_TIMEOUT, client))
    keepalive = options.get("keepalive_timeout", _smaller(DEFAULT_KEEPALIVE_TIMEOUT, client))
    return Timeouts(client=client,
                    request_head=None if head is None else float(head),
                    keepalive=None if keepalive is None else float(keepalive))


def max_body_size(cfg: dict, ctx: Any) -> int | None:
    """A path's ``max_body_size``, else its transport's, else the default; None: unbounded."""
    if "max_body_size" in cfg:
        return cfg["max_body_size"]
    options = getattr(ctx, "transport_options", None) or {}
    return options.get("max_body_size", DEFAULT_MAX_BODY_SIZE)
