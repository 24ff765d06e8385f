"""The ``geonode`` command line, run as a real subprocess: version, help, check, init, start."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from support import ROOT, Node, free_port, geonode_cmd, launch, scaled, web_node
from support.net import port_closed
from support.nodes import start_process

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                      r"[\w.]+: ")


def run(*args: str, cwd: Path | None = None, timeout: float = 30,
        env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(geonode_cmd(*args), capture_output=True, text=True,
                          timeout=scaled(timeout), cwd=cwd,
                          env=dict(os.environ, **(env or {})))


def test_version():
    r = run("version")
    assert r.returncode == 0
    import autobahn
    import gevent
    import werkzeug  # noqa: F401

    from geonode import __version__

    lines = r.stdout.splitlines()
    assert lines[0].split() == ["geonode", __version__]
    assert lines[1].startswith("Python") and sys.version.split()[0] in lines[1]
    assert f"gevent    {gevent.__version__}" in r.stdout
    assert f"autobahn  {autobahn.__version__}" in r.stdout
    assert re.search(r"^werkzeug  \d+\.\d+", r.stdout, re.M)


def test_console_script():
    exe = Path(sys.executable).with_name("geonode")
    if not exe.exists():
        pytest.skip("geonode console script not installed next to this interpreter")
    r = subprocess.run([str(exe), "version"], capture_output=True, text=True, timeout=scaled(30))
    assert r.returncode == 0 and r.stdout.startswith("geonode")


def test_help():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("start", "dev", "check", "init", "version"):
        assert re.search(rf"^\s+{cmd}\s", r.stdout, re.M), r.stdout
    r = run("start", "--help")
    assert r.returncode == 0
    assert "--loglevel" in r.stdout and "--reload" in r.stdout
    assert "{debug,info,warning,error}" in r.stdout


def test_bad_loglevel():
    r = run("--loglevel", "loud", "node.json")
    assert r.returncode == 2
    assert "invalid choice: 'loud'" in r.stderr


def test_check_ok_root_and_samples():
    for rel in ("node.json", "samples/flask/node.json", "samples/django/node.json",
                "samples/pyramid/node.json"):
        r = run("check", rel, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"ok: {rel} looks good"


def test_check_bad(tmp_path):
    cfg = {"version": 2, "workers": [{"type": "router", "transports": [{
        "type": "web", "endpoint": {"type": "tcp", "port": 8080},
        "paths": {"api": {"type": "wsgi", "object": "app"}, "x": {"type": "cgi"}}}]}]}
    p = tmp_path / "node.json"
    p.write_text(json.dumps(cfg))
    r = run("check", str(p))
    assert r.returncode == 1
    assert r.stdout == ""
    assert "workers[0].transports[0].paths.api.module: 'module' is required" in r.stderr
    assert ("workers[0].transports[0].paths.x.type: service type 'cgi' is not supported "
            "by geonode") in r.stderr
    assert "Traceback" not in r.stderr


def test_init_writes_a_starter_and_refuses_to_overwrite(tmp_path):
    target = tmp_path / "mynode"
    r = run("init", str(target))
    assert r.returncode == 0, r.stderr
    for rel in ("node.json", "myapp.py", "templates/index.html", "static/style.css"):
        assert (target / rel).is_file(), rel
    assert run("check", str(target / "node.json")).returncode == 0
    before = (target / "node.json").read_text()
    (target / "node.json").write_text(before + " ")
    r = run("init", str(target))
    assert r.returncode == 1
    assert "already exists" in r.stderr and "Traceback" not in r.stderr
    assert (target / "node.json").read_text() == before + " "


def test_init_default_dir_is_cwd(tmp_path):
    r = run("init", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "node.json").is_file()


def test_init_then_start(tmp_path):
    """The starter node runs as written (only the port is changed) and serves all its parts."""
    target = tmp_path / "starter"
    assert run("init", str(target)).returncode == 0
    cfg = json.loads((target / "node.json").read_text())
    cfg["workers"][0]["transports"][0]["endpoint"]["port"] = "$PORT"
    node = launch(cfg, target, args=("start",))
    try:
        r = requests.get(node.url + "/", timeout=scaled(5))
        assert r.status_code == 200
        assert "<h1>Hello from geonode</h1>" in r.text
        r = requests.get(node.url + "/static/style.css", timeout=scaled(5))
        assert r.status_code == 200 and "font-family" in r.text
        assert requests.get(node.url + "/api/ping", timeout=scaled(5)).json() == {"pong": True}
    finally:
        assert node.stop() == 0
    # one line per event, timestamped
    lines = [x for x in node.log().splitlines() if x and not x.startswith(" ")]
    assert lines and all(LOG_LINE.match(x) for x in lines), node.log()


def test_pythonpath_and_env_relative_to_config(tmp_path):
    """``pythonpath`` entries resolve against the config's folder, not the working directory,
    and ``options.env.vars`` reach the app through ``os.environ``."""
    app_dir = tmp_path / "conf" / "src"
    app_dir.mkdir(parents=True)
    (app_dir / "envapp.py").write_text(
        "import os\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [os.environ['GEONODE_GREETING'].encode()]\n")
    port = free_port()
    cfg = {"version": 2, "workers": [{
        "type": "router",
        "options": {"pythonpath": ["src"], "env": {"vars": {"GEONODE_GREETING": "hi there"}}},
        "transports": [{"type": "web", "endpoint": {"type": "tcp", "interface": "127.0.0.1",
                                                    "port": port},
                        "paths": {"/": {"type": "wsgi", "module": "envapp",
                                        "object": "app"}}}]}]}
    (tmp_path / "conf" / "node.json").write_text(json.dumps(cfg))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    log_path = tmp_path / "node.log"
    proc = start_process(geonode_cmd("../conf/node.json"), elsewhere, log_path)
    node = Node(proc=proc, port=port, dir=tmp_path, log_path=log_path, ports=[port])
    try:
        node.wait_ports()
        r = requests.get(node.url + "/", timeout=scaled(5))
        assert r.status_code == 200 and r.text == "hi there"
    finally:
        node.stop()


def test_disabled_worker_options_are_not_applied(tmp_path):
    """A worker with ``options.disabled`` sets no ``pythonpath`` and no ``env.vars``."""
    for folder, text in (("decoy", "decoy"), ("src", "real")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "whichapp.py").write_text(
            "import os\n"
            "def app(environ, start_response):\n"
            "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
            f"    return [('{text} ' + os.environ.get('GEONODE_FROM_DISABLED', '-')).encode()]\n")
    cfg = {"version": 2, "workers": [
        {"type": "router",
         "options": {"disabled": True, "pythonpath": ["decoy"],
                     "env": {"vars": {"GEONODE_FROM_DISABLED": "set"}}}},
        {"type": "router", "options": {"pythonpath": ["src"]},
         "transports": [{"type": "web", "endpoint": {"type": "tcp", "interface": "127.0.0.1",
                                                     "port": "$PORT"},
                         "paths": {"/": {"type": "wsgi", "module": "whichapp",
                                         "object": "app"}}}]}]}
    node = launch(cfg, tmp_path)
    try:
        assert requests.get(node.url + "/", timeout=scaled(5)).text == "real -"
    finally:
        node.stop()


def test_start_bad_config_exits_1_and_listens_nowhere(tmp_path):
    port = free_port()
    cfg = {"version": 2, "workers": [{"type": "router", "transports": [{
        "type": "web", "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port},
        "paths": {"/": {"type": "wsgi", "module": "m", "object": "app", "threadz": 3}}}]}]}
    p = tmp_path / "node.json"
    p.write_text(json.dumps(cfg))
    r = run(str(p))
    assert r.returncode == 1
    assert "workers[0].transports[0].paths[\"/\"].threadz: unknown key 'threadz'" in r.stderr
    assert "Traceback" not in r.stderr
    assert port_closed(port)


def test_start_missing_config_file(tmp_path):
    r = run("start", str(tmp_path / "nothere.json"))
    assert r.returncode == 1
    assert "no such config file" in r.stderr and "Traceback" not in r.stderr


def test_start_app_import_failure(tmp_path):
    """A module that cannot be imported: exit 1, the message names the key and the module,
    and nothing is left listening (the other transport's port is closed again too)."""
    port, port2 = free_port(), free_port()
    cfg = {"version": 2, "workers": [{"type": "router", "transports": [
        {"type": "web", "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port2},
         "paths": {"/": {"type": "json", "value": 1}}},
        {"type": "web", "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port},
         "paths": {"app": {"type": "wsgi", "module": "no_such_module_xyz",
                           "object": "app"}}}]}]}
    p = tmp_path / "node.json"
    p.write_text(json.dumps(cfg))
    r = run(str(p))
    assert r.returncode == 1
    assert "workers[0].transports[1].paths.app" in r.stderr
    assert "no_such_module_xyz" in r.stderr
    assert "sys.path" in r.stderr
    assert port_closed(port) and port_closed(port2)


def test_loglevel_debug_and_warning(tmp_path):
    cfg = {"version": 2, "workers": [{"type": "router", "transports": [{
        "type": "web", "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": "$PORT"},
        "paths": {"/": {"type": "json", "value": {"ok": True}}}}]}]}
    quiet = launch(cfg, tmp_path / "quiet", args=("--loglevel", "warning"))
    loud = launch(cfg, tmp_path / "loud", args=("start", "--loglevel", "debug"))
    try:
        for node in (quiet, loud):
            assert requests.get(node.url + "/", timeout=scaled(5)).json() == {"ok": True}
    finally:
        quiet.stop()
        loud.stop()
    assert " INFO " not in quiet.log() and " DEBUG " not in quiet.log()
    assert " INFO " in loud.log() or " DEBUG " in loud.log()


def test_check_accepts_a_crossbar_folder(tmp_path):
    cbdir = tmp_path / ".crossbar"
    cbdir.mkdir()
    (cbdir / "config.json").write_text((ROOT / "samples" / "flask" / "node.json").read_text())
    # check imports the app, as start would: it goes beside the config
    (cbdir / "myapp.py").write_text((ROOT / "samples" / "flask" / "myapp.py").read_text())
    r = run("check", str(cbdir))
    assert r.returncode == 0, r.stderr
    r = run("check", str(tmp_path))
    assert r.returncode == 1 and "a folder without a config file" in r.stderr


def test_check_warns_but_passes(tmp_path):
    """Allowed but probably wrong: exit 0, with a warning naming the key."""
    cfg = {"version": 2, "workers": [{"type": "router", "options": {"pythonpath": ["src", "."]},
                                      "transports": [{
        "type": "web", "endpoint": {"type": "tcp", "port": 8080}, "options": {"hsts": True},
        "paths": {"/": {"type": "wsgi", "module": "warn_app_mod", "object": "app"}}}]}]}
    p = tmp_path / "node.json"
    p.write_text(json.dumps(cfg))
    (tmp_path / "warn_app_mod.py").write_text("def app(environ, start_response):\n    pass\n")
    r = run("check", str(p))
    assert r.returncode == 0, r.stderr
    assert "ok:" in r.stdout
    assert "warning: workers[0].options.pythonpath[0]: 'src' is not a folder" in r.stderr
    assert "warning: workers[0].transports[0].options.hsts: ignored, the endpoint has no TLS" \
        in r.stderr
    (tmp_path / "src").mkdir()
    r = run("check", str(p))
    assert "pythonpath" not in r.stderr


def test_check_imports_the_wsgi_module_as_start_does(tmp_path):
    """A wsgi module that start could not import is an error of check too (it used to be a
    warning, and "ok"), found on the config's pythonpath as start finds it."""
    cfg = {"version": 2, "workers": [{"type": "router", "options": {"pythonpath": ["src"]},
                                      "transports": [{
        "type": "web", "endpoint": {"type": "tcp", "port": 8080},
        "paths": {"/": {"type": "wsgi", "module": "no_such_app_mod.sub", "object": "app"}}}]}]}
    p = tmp_path / "node.json"
    p.write_text(json.dumps(cfg))
    r = run("check", str(p))
    assert r.returncode == 1 and "ok:" not in r.stdout
    assert ("workers[0].transports[0].paths[\"/\"].module: cannot import WSGI module "
            "'no_such_app_mod.sub': ModuleNotFoundError") in r.stderr
    (tmp_path / "src" / "no_such_app_mod").mkdir(parents=True)
    (tmp_path / "src" / "no_such_app_mod" / "__init__.py").write_text("")
    (tmp_path / "src" / "no_such_app_mod" / "sub.py").write_text("app = 1\n")
    r = run("check", str(p))
    assert r.returncode == 1
    assert "paths[\"/\"].object: no_such_app_mod.sub.app is not callable" in r.stderr
    (tmp_path / "src" / "no_such_app_mod" / "sub.py").write_text(
        "def app(environ, start_response):\n    pass\n")
    r = run("check", str(p))
    assert r.returncode == 0, r.stderr


def test_start_logs_the_check_warnings(tmp_path):
    """What ``geonode check`` warns about is logged by ``geonode start`` too."""
    cfg = {"version": 2, "workers": [{"type": "router", "options": {"pythonpath": ["src"]},
                                      "transports": [{
        "type": "web", "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": "$PORT"},
        "options": {"hsts": True}, "paths": {"/": {"type": "json", "value": 1}}}]}]}
    node = launch(cfg, tmp_path)
    try:
        assert requests.get(node.url + "/", timeout=scaled(5)).json() == 1
    finally:
        node.stop()
    log = node.log()
    assert "WARNING geonode.config: workers[0].options.pythonpath[0]: 'src' is not a folder" in log
    assert log.count("is not a folder") == 1  # once, not also by the pythonpath set-up
    assert "WARNING geonode.config: workers[0].transports[0].options.hsts: ignored" in log


def test_app_is_imported_after_monkey_patching(start_node):
    """The CLI patches the stdlib before anything imports it, so the app's module-level
    ``import socket``/``threading`` already see gevent's versions."""
    app = ("import socket, threading\n"
           "from gevent import monkey\n"
           "STATE = {m: monkey.is_module_patched(m) for m in ('socket', 'threading', 'ssl')}\n"
           "SAME = socket.socket is __import__('gevent.socket').socket.socket\n"
           "def app(environ, start_response):\n"
           "    start_response('200 OK', [('Content-Type', 'application/json')])\n"
           "    import json\n"
           "    return [json.dumps(dict(STATE, same=SAME)).encode()]\n")
    cfg = web_node({"/": {"type": "wsgi", "module": "patchapp", "object": "app"}},
                   worker_options={"pythonpath": ["."]})
    node = start_node(cfg, files={"patchapp.py": app})
    assert requests.get(node.url + "/", timeout=scaled(5)).json() == {
        "socket": True, "threading": True, "ssl": True, "same": True}


def test_log_lines():
    """``geonode.logs.setup``: one line per event on stderr, UTC with milliseconds; a traceback
    follows its event indented, so every line that starts with a timestamp is one event."""
    code = ("import logging, warnings\n"
            "from geonode import logs\n"
            "logs.setup('info')\n"
            "log = logging.getLogger('geonode.web')\n"
            "log.debug('hidden')\n"
            "log.info('hello %s', 'world')\n"
            "try:\n"
            "    1 / 0\n"
            "except ZeroDivisionError:\n"
            "    log.exception('boom')\n"
            "warnings.warn('old thing', DeprecationWarning)\n")
    r = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True,
                       text=True, timeout=scaled(30))
    assert r.returncode == 0 and r.stdout == ""
    lines = r.stderr.splitlines()
    events = [x for x in lines if not x.startswith("    ")]
    assert all(LOG_LINE.match(x) for x in events), r.stderr
    assert events[0].endswith(" INFO geonode.web: hello world")
    assert events[1].endswith(" ERROR geonode.web: boom")
    assert " WARNING py.warnings: " in events[2] and "old thing" in events[2]
    assert "hidden" not in r.stderr
    assert any(x.startswith("    ZeroDivisionError") for x in lines)


def test_check_warns_thread_keys_ignored_in_greenlet_mode(tmp_path):
    """minthreads/maxthreads mean nothing with "threads": false: said, not silently dropped."""
    cfg = {"version": 2, "workers": [{"type": "router", "transports": [{
        "type": "web", "endpoint": {"type": "tcp", "port": 8080},
        "paths": {"api": {"type": "wsgi", "module": "json", "object": "dumps",
                          "threads": False, "maxthreads": 4}}}]}]}
    p = tmp_path / "node.json"
    p.write_text(json.dumps(cfg))
    r = run("check", str(p))
    assert r.returncode == 0, r.stderr
    assert ("warning: workers[0].transports[0].paths.api.maxthreads: ignored, "
            "\"threads\": false runs the app on the hub") in r.stderr
    assert "minthreads" not in r.stderr
