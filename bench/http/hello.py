"""The least a WSGI app can be: the floor of a server's own cost per request.

bench/http/run.py serves it under geonode and under ``gunicorn -k gevent`` next to the Flask
sample, so the Flask app's share of a request (sample minus hello) and the server's share
(hello) can be told apart.
"""

BODY = b"hello"


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
