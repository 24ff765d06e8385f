"""The benchmark's Flask app: one view that publishes an event per request.

Under geonode the view uses the in-process session (``environ["geonode.wamp"]``); under
Crossbar (no in-process WAMP there) the same view POSTs to Crossbar's HTTP publisher bridge,
which is what a Crossbar user has to do. Keep-alive HTTP session per worker thread.
"""

import os
import threading

import requests
from flask import Flask, request

app = Flask(__name__)
BRIDGE = os.environ.get("BENCH_BRIDGE_URL", "http://127.0.0.1:8080/publish")
_local = threading.local()
EVENT = {"topic": "com.example.bench", "args": [1, "two"], "kwargs": {"three": 3}}


def _http() -> requests.Session:
    s = getattr(_local, "s", None)
    if s is None:
        s = _local.s = requests.Session()
    return s


def _publish(acknowledge: bool) -> str:
    wamp = request.environ.get("geonode.wamp")
    if wamp is not None:
        wamp.publish(EVENT["topic"], *EVENT["args"], acknowledge=acknowledge, **EVENT["kwargs"])
        return "in-process"
    r = _http().post(BRIDGE, json=EVENT, timeout=10)
    r.raise_for_status()
    return "bridge"


@app.route("/pub")
def pub():
    return _publish(False)


@app.route("/puback")
def puback():
    return _publish(True)


@app.route("/noop")
def noop():
    """The same view without publishing: the baseline the publish cost is measured against."""
    return "noop"
