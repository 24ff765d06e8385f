"""geonode: a Crossbar.io-style application node in one gevent process."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from os import PathLike

    from geonode.node import NodeApp

__version__ = "0.1.0"


def load(path: str | PathLike[str]) -> NodeApp:
    """Return the WSGI application of the node described by ``path`` (for gunicorn).

    ``gunicorn -k geonode.gunicorn.GeventWorker "geonode:load('node.json')"``

    The node's routers are built and its components started; ``close()`` on the returned app
    stops them (geonode's gunicorn worker calls it when the worker exits).
    """
    from geonode.node import load_app

    return load_app(str(path))
