"""The Flask side: publishes and calls through the in-process WAMP session, and receives the
events the HTTP subscriber (MessageForwarder) forwards to /hooks/event."""

from collections import deque

from flask import Flask, jsonify, redirect, render_template_string, request, url_for

import geonode.wamp
from geonode.wamp import ApplicationError

app = Flask(__name__)
forwarded = deque(maxlen=10)     # events POSTed back to us by the MessageForwarder
clicks = {"n": 0}

# Outside a request (import time): the same shared session; the subscription is made when the
# router starts. The handler runs on the session's thread pool.
geonode.wamp.session("realm1", "backend").subscribe(
    "com.example.clicks", lambda n: clicks.update(n=n))

PAGE = """<!doctype html><title>geonode bridge sample</title>
<h1>Flask + WAMP in one process</h1>
<form method="post" action="{{ url_for('click') }}"><button>Publish a click</button></form>
<p>clicks seen by this app's subscription: {{ clicks }}</p>
<form method="post" action="{{ url_for('add') }}">
  <input name="a" value="2" size="3"> + <input name="b" value="3" size="3">
  <button>call com.example.add</button> {{ result }}</form>
<p>Live events in the browser: <a href="/live/">/live/</a></p>
<h2>Events forwarded to this app over HTTP (MessageForwarder)</h2>
<ul>{% for e in forwarded %}<li><code>{{ e }}</code></li>{% endfor %}</ul>
"""


@app.route("/")
def index():
    return render_template_string(PAGE, clicks=clicks["n"], forwarded=list(forwarded),
                                  result=request.args.get("result", ""))


@app.post("/click")
def click():
    wamp = request.environ["geonode.wamp"]
    wamp.publish("com.example.clicks", clicks["n"] + 1)
    return redirect(url_for("index"))


@app.post("/add")
def add():
    wamp = request.environ["geonode.wamp"]
    try:
        result = wamp.call("com.example.add", int(request.form["a"]), int(request.form["b"]),
                           timeout=5)
    except ValueError:
        result = "a and b must be integers"
    except ApplicationError as e:
        result = f"error {e.error}"
    return redirect(url_for("index", result=result))


@app.post("/hooks/event")
def hook():
    forwarded.append(request.get_json())
    return "ok"


@app.get("/api/<path:name>")
def api(name):
    """What the RESTCallee (com.example.flaskapi) calls."""
    return jsonify(name=name, query=request.args.to_dict(), clicks=clicks["n"])
