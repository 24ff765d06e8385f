"""What tests, benchmarks and conformance runs share: one copy each.

- ``support.timing``: ``SCALE``/``scaled`` (every wall-clock bound and deadline), ``wait_for``
  (poll a condition, say what was waited for on timeout; no fixed sleeps).
- ``support.net``: free loopback ports, ``wait_port``.
- ``support.config``: node config builders (``web_node``, ``router_config``, ``realm``…).
- ``support.nodes``: nodes and gunicorn masters in subprocesses (``launch``, ``Node``).
- ``support.wamp``: autobahn-python clients (async, and the blocking ``SyncClient``).
- ``support.router``: in-process router clients (no sockets).
- ``support.ws``: raw WebSocket frames and raw JSON WAMP; ``support.http``: raw HTTP bytes.
- ``support.certs``: certificates made on the fly (``pki``: a CA, server and client files).
- ``support.redis``: a real ``redis-server`` per test (``GEONODE_TEST_REDIS_SERVER=/path/to/
  valkey-server``: another server of the protocol, e.g. Valkey), cluster node configs.
- ``support.browser``: headless Chromium (Selenium) for the browser tests.

Tests import it as ``support`` (pytest puts tests/ on sys.path); a script elsewhere puts
``<repo>/tests`` on sys.path first (bench/common.py, conformance/*.py). The names below are
the light ones (no autobahn, gevent or cryptography import); the others are imported from
their module.
"""

from .config import realm, role, router_config, web_node, web_transport
from .net import free_port, port_open, wait_port, wait_port_closed
from .nodes import ROOT, SAMPLES, Node, geonode_cmd, launch, launch_gunicorn
from .timing import SCALE, WaitTimeout, async_wait_for, scaled, wait_for

__all__ = ["ROOT", "SAMPLES", "SCALE", "Node", "WaitTimeout", "async_wait_for", "free_port",
           "geonode_cmd", "launch", "launch_gunicorn", "port_open", "realm", "role",
           "router_config", "scaled", "wait_for", "wait_port", "wait_port_closed", "web_node",
           "web_transport"]
