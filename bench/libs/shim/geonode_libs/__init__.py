"""Library adapters behind geonode's own interfaces (see ``../sitecustomize.py``)."""
