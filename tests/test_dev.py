"""The reloading dev server (``geonode dev`` / ``--reload``): real processes, real edits."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import requests
from support import Node, free_port, geonode_cmd, scaled, wait_for, wait_port_closed
from support.nodes import start_process

APP = '''
from flask import Flask, render_template

app = Flask(__name__)


@app.route("/")
def home():
    return "version 1"


@app.route("/page")
def page():
    return render_template("page.html")


@app.route("/boom")
def boom():
    raise RuntimeError("kaboom in a view")
'''


def config(port: int) -> dict:
    return {"version": 2, "controller": {}, "workers": [{
        "type": "router",
        "options": {"pythonpath": ["."]},
        "transports": [{"type": "web",
                        "endpoint": {"type": "tcp", "port": port, "interface": "127.0.0.1"},
                        "paths": {"/": {"type": "wsgi", "module": "devapp", "object": "app"}}}],
    }]}


def write(path: Path, text: str) -> None:
    # Like an editor: the new content, then the mtime moves on.
    path.write_text(text)


def wait_body(url: str, want: str, timeout: float = 15.0) -> str:
    """Poll ``url`` until its body contains ``want``; return the body."""
    last = [""]

    def answered() -> str | None:
        try:
            last[0] = requests.get(url, timeout=scaled(2)).text
        except requests.RequestException as e:
            last[0] = repr(e)
            return None
        return last[0] if want in last[0] else None

    try:
        return wait_for(answered, timeout, f"{url} to answer {want!r}", interval=0.05)
    except AssertionError as e:
        raise AssertionError(f"{e}; last: {last[0][:300]}") from None


@pytest.fixture
def dev_node(tmp_path, request):
    # Both spellings: ``geonode dev node.json`` (default) and ``python -m geonode --reload``.
    args = getattr(request, "param", ("dev", "node.json"))
    env = {}
    if args[0] == "stat":  # werkzeug's stat reloader, as without watchdog installed
        env["GEONODE_RELOADER"] = "stat"
        args = ("dev", "node.json")
    port = free_port()
    (tmp_path / "devapp.py").write_text(APP)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "page.html").write_text("<p>template one</p>")
    (tmp_path / "node.json").write_text(json.dumps(config(port)))
    log_path = tmp_path / "dev.log"
    proc = start_process(geonode_cmd(*args), tmp_path, log_path, env)
    node = Node(proc, port, tmp_path, log_path, [port])
    try:
        node.wait_ports()
        yield proc, node.url, tmp_path, log_path
    finally:
        node.stop()


def test_dev_server_reloads_survives_a_broken_edit_and_recovers(dev_node):
    proc, url, d, log_path = dev_node
    port = int(url.rsplit(":", 1)[1])
    app = d / "devapp.py"
    assert requests.get(url, timeout=scaled(5)).text == "version 1"

    # An edit of the app's code: the node restarts on the same port with the new code.
    write(app, APP.replace("version 1", "version 2"))
    wait_body(url, "version 2")

    # A template edit restarts it too.
    assert "template one" in requests.get(url + "/page", timeout=scaled(5)).text
    write(d / "templates" / "page.html", "<p>template two</p>")
    wait_body(url + "/page", "template two")

    # Dev mode shows a view's traceback in the browser.
    r = requests.get(url + "/boom", timeout=scaled(5))
    assert r.status_code == 500
    assert "kaboom in a view" in r.text

    # A syntax error: the node cannot start, the dev server (the watcher) stays up …
    write(app, APP.replace("version 1", "version 3") + "\ndef broken(:\n")
    wait_for(lambda: "the node exited" in log_path.read_text(), 15,
             "the dev server to report the node's exit", interval=0.05)
    log = log_path.read_text()
    assert "SyntaxError" in log and "devapp" in log, log
    assert proc.poll() is None, log
    # … and until the fix, the browser gets the error instead of "connection refused".
    body = wait_body(url + "/", "The node is not running")
    assert "SyntaxError" in body and "devapp" in body
    assert requests.get(url + "/page", timeout=scaled(5)).status_code == 500

    # … and the node is back once the file is fixed.
    write(app, APP.replace("version 1", "version 4"))
    wait_body(url, "version 4")
    assert proc.poll() is None

    # `touch` (a metadata change only) restarts it as well.
    restarts = log_path.read_text().count("restarting the node")
    os.utime(app)
    wait_for(lambda: log_path.read_text().count("restarting the node") > restarts, 10,
             "a restart after touch", interval=0.05)
    wait_body(url, "version 4")

    # Ctrl-C/SIGTERM on the dev server stops it and its node, nothing left listening.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(scaled(10)) == 0
    wait_port_closed(port, timeout=5)
    assert_no_process_left(d)


def processes_of(d: Path) -> list[str]:
    """Command lines of the geonode processes running from folder ``d``."""
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"geonode" in cmd and str(d).encode() in cmd:
            left.append(cmd.decode(errors="replace"))
    return left


def assert_no_process_left(d: Path, timeout: float = 5.0) -> None:
    """No node (nor warm standby) of this dev server survives it."""
    try:
        wait_for(lambda: not processes_of(d), timeout, "the dev server's processes to end",
                 interval=0.05)
    except AssertionError as e:
        raise AssertionError(f"{e}: {processes_of(d)}") from None


@pytest.mark.parametrize("dev_node", [("--reload", "node.json")], indirect=True)
def test_config_edit_restarts_with_the_new_config(dev_node):
    proc, url, d, log_path = dev_node
    cfg = json.loads((d / "node.json").read_text())
    paths = cfg["workers"][0]["transports"][0]["paths"]
    paths["info"] = {"type": "json", "value": {"edited": True}}
    (d / "node.json").write_text(json.dumps(cfg))
    body = wait_body(url + "/info", "edited")
    assert json.loads(body) == {"edited": True}
    assert proc.poll() is None


@pytest.mark.parametrize("dev_node", [("stat",)], indirect=True)
def test_stat_reloader_without_watchdog(dev_node):
    proc, url, d, log_path = dev_node
    assert "(stat)" in log_path.read_text()
    write(d / "devapp.py", APP.replace("version 1", "version stat"))
    wait_body(url, "version stat")
    assert proc.poll() is None


@pytest.mark.inprocess
def test_watch_spec_of_the_samples():
    """What a change restarts, read from the config alone (no app imported)."""
    from support import ROOT, SAMPLES

    from geonode.dev import watch_spec

    spec = watch_spec(ROOT / "node.json")
    flask = SAMPLES / "flask"
    assert spec.matches(str(flask / "myapp.py"))
    assert spec.matches(str(flask / "templates" / "index.html"))
    assert spec.matches(str(ROOT / "node.json"))
    assert not spec.matches(str(flask / "__pycache__" / "myapp.cpython-311.py"))
    assert not spec.matches(str(flask / ".myapp.py.swp"))
    assert not spec.matches(str(ROOT / "README.md"))
    # The config's folder is watched flat, never the whole repository.
    assert (ROOT, True) not in spec.directories()
    assert spec.endpoints == [("127.0.0.1", 8080)]  # where the error page would answer
    django = watch_spec(SAMPLES / "django" / "node.json")
    assert django.matches(str(SAMPLES / "django" / "templates" / "index.html"))
    assert django.matches(str(SAMPLES / "django" / "app" / "templates" / "app" / "x.html"))
    assert not django.matches(str(SAMPLES / "django" / "notes.txt"))
