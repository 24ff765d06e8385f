"""geonode: a Crossbar.io-style application node in one gevent process."""

from __future__ import annotations

__version__ = "0.1.0"


def load(path: str):
    """Return the WSGI application of the node described by ``path`` (for gunicorn).

    ``gunicorn -k geonode.gunicorn.GeventWorker "geonode:load('node.json')"``
    """
    from geonode.node import load_app

    return load_app(path)
