"""Minimal Pyramid app for the geonode sample: node.json mounts ``hello:app``."""

from pyramid.config import Configurator
from pyramid.response import Response


def home(request):
    return Response(
        "<!DOCTYPE html>\n<html><body><h1>Hello from Pyramid</h1></body></html>\n",
        content_type="text/html",
    )


def greet(request):
    return {"greeting": f"Hello, {request.matchdict['name']}!"}


with Configurator() as config:
    config.add_route("home", "/")
    config.add_view(home, route_name="home")
    config.add_route("greet", "/greet/{name}")
    config.add_view(greet, route_name="greet", renderer="json")
    app = config.make_wsgi_app()
