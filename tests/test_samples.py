"""The samples (Flask = the seed example, Django, Pyramid) and the repo's root ``node.json``,
each served by a real node from its own config with only the port changed."""

from __future__ import annotations

import json
import shutil

import pytest
import requests
from support import ROOT, SAMPLES, launch, scaled
from support.ws import RawWamp


def sample_node(name: str, tmp_path):
    """Copy ``samples/<name>`` and start it from its own node.json on a free loopback port."""
    work = tmp_path / name
    shutil.copytree(SAMPLES / name, work, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = json.loads((work / "node.json").read_text())
    endpoint = cfg["workers"][0]["transports"][0]["endpoint"]
    endpoint.update(port="$PORT", interface="127.0.0.1")
    return launch(cfg, work)


def wamp_hello(node, realm: str = "realm1") -> list:
    """Join ``realm`` on the node's ``ws`` path as a raw WAMP client; return the reply."""
    c = RawWamp(node.port, "ws", timeout=5)
    try:
        assert c.ws.subprotocol == "wamp.2.json"
        return c.hello(realm, roles={"subscriber": {}, "publisher": {}})
    finally:
        c.close()


@pytest.fixture
def stopper():
    nodes = []
    yield nodes.append
    for n in nodes:
        n.stop()


@pytest.mark.inprocess
def test_flask_sample_is_the_seed_example():
    src = (SAMPLES / "flask" / "myapp.py").read_text()
    assert "app = Flask(__name__)" in src
    assert "@app.route('/')\ndef page_home():" in src
    assert "render_template('index.html', message = \"Hello from\")" in src
    assert "{{ message }}" in (SAMPLES / "flask" / "templates" / "index.html").read_text()
    cfg = json.loads((SAMPLES / "flask" / "node.json").read_text())
    paths = cfg["workers"][0]["transports"][0]["paths"]
    assert paths["/"] == {"type": "wsgi", "module": "myapp", "object": "app"}
    assert paths["ws"] == {"type": "websocket"}


def test_flask_sample(tmp_path, stopper):
    node = sample_node("flask", tmp_path)
    stopper(node)
    r = requests.get(node.url + "/", timeout=scaled(5))
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    assert "<h1>Hello from</h1>" in r.text
    assert requests.get(node.url + "/nothing-here", timeout=scaled(5)).status_code == 404
    welcome = wamp_hello(node)
    assert welcome[0] == 2, welcome  # WELCOME
    assert welcome[2]["authrole"] == "anonymous"


def test_django_sample(tmp_path, stopper):
    node = sample_node("django", tmp_path)
    stopper(node)
    r = requests.get(node.url + "/", timeout=scaled(5))
    assert r.status_code == 200, r.text
    assert "<h1>Hello from Django</h1>" in r.text
    assert requests.get(node.url + "/missing/", timeout=scaled(5)).status_code == 404
    assert wamp_hello(node)[0] == 2


def test_pyramid_sample(tmp_path, stopper):
    node = sample_node("pyramid", tmp_path)
    stopper(node)
    r = requests.get(node.url + "/", timeout=scaled(5))
    assert r.status_code == 200
    assert "<h1>Hello from Pyramid</h1>" in r.text
    r = requests.get(node.url + "/greet/ada", timeout=scaled(5))
    assert r.json() == {"greeting": "Hello, ada!"}
    assert wamp_hello(node)[0] == 2


def test_root_node_json_serves_the_flask_sample(tmp_path, stopper):
    """The repo's node.json (what the README's first command starts), on a free port."""
    cfg = json.loads((ROOT / "node.json").read_text())
    worker = cfg["workers"][0]
    assert worker["options"]["pythonpath"] == ["samples/flask"]
    endpoint = worker["transports"][0]["endpoint"]
    assert endpoint == {"type": "tcp", "port": 8080, "interface": "127.0.0.1"}
    endpoint["port"] = "$PORT"
    work = tmp_path / "root"
    (work / "samples").mkdir(parents=True)
    shutil.copytree(SAMPLES / "flask", work / "samples" / "flask",
                    ignore=shutil.ignore_patterns("__pycache__"))
    node = launch(cfg, work)
    stopper(node)
    assert "<h1>Hello from</h1>" in requests.get(node.url + "/", timeout=scaled(5)).text
    welcome = wamp_hello(node, "realm1")
    assert welcome[0] == 2


def test_crossbar_layout_runs_unchanged(tmp_path, stopper):
    """The seed's layout: the app beside ``.crossbar/config.json`` whose pythonpath is ".."."""
    shutil.copytree(SAMPLES / "flask", tmp_path, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "node.json"))
    cfg = json.loads((SAMPLES / "flask" / "node.json").read_text())
    cfg["workers"][0]["options"]["pythonpath"] = [".."]
    cfg["workers"][0]["transports"][0]["endpoint"].update(port="$PORT", interface="127.0.0.1")
    node = launch(cfg, tmp_path / ".crossbar")
    stopper(node)
    assert "<h1>Hello from</h1>" in requests.get(node.url + "/", timeout=scaled(5)).text
