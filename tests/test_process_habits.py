"""Logs and process habits (issue 13 items 3 and 5), each with a real node process: log formats,
the access log, import errors with file and line, --shutdown-timeout, sd_notify over a real
Unix datagram socket, pid file with stop/status, --version, .crossbar lookup, --port."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from support import free_port, geonode_cmd, launch, port_open, realm, scaled, wait_for, web_node
from support.nodes import Node, start_process

APP = r'''
import time

def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]

def slow(environ, start_response):
    open("slow-started", "w").close()  # the test waits for this
    time.sleep(float(environ["QUERY_STRING"]))  # the scenario: a request that takes its time
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"finished"]
'''


def config(port: int | str = "$PORT", **options) -> dict:
    return web_node({"/": {"type": "wsgi", "module": "habitapp", "object": "hello"},
                     "slow": {"type": "wsgi", "module": "habitapp", "object": "slow"}},
                    options=options or None, worker_options={"pythonpath": ["."]}, port=port)


def run(*args: str, cwd: Path, env: dict | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(geonode_cmd(*args), capture_output=True, text=True, cwd=cwd,
                          timeout=scaled(timeout), env=dict(os.environ, **(env or {})))


# ---- logs ----------------------------------------------------------------------------------

def test_json_logformat_one_object_per_line_with_access_fields(start_node):
    node = start_node(config(access_log=True), files={"habitapp.py": APP},
                      args=("--logformat", "json", "--loglevel", "DEBUG"))
    r = requests.get(f"{node.url}/?q=1", headers={"User-Agent": 'agent "x"',
                                                  "Referer": "http://ref/"}, timeout=scaled(10))
    assert r.text == "hello"
    node.wait_log('"logger": "geonode.access"', 5)
    assert node.stop() == 0
    records = [json.loads(line) for line in node.log().splitlines()]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["level"] == "DEBUG" for r in records)  # --loglevel DEBUG, any case
    access = [r for r in records if r["logger"] == "geonode.access"]
    assert len(access) == 1
    a = access[0]
    assert a["method"] == "GET" and a["path"] == "/?q=1" and a["status"] == 200
    assert a["size"] == 5 and a["user_agent"] == 'agent "x"' and a["referer"] == "http://ref/"
    assert a["remote_addr"] == "127.0.0.1" and 0 <= a["duration"] < scaled(5)
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", a["time"])


def test_standard_access_log_is_combined_plus_duration(start_node):
    node = start_node(config(access_log=True), files={"habitapp.py": APP},
                      args=("--logformat", "standard"))
    requests.get(f"{node.url}/x", headers={"User-Agent": "curl/8"}, timeout=scaled(10))
    node.wait_log(re.compile(
        r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /x HTTP/1\.1" '
        r'200 5 "-" "curl/8" \d+\.\d{6}$', re.M), 5)


def test_import_error_names_file_and_line(start_node):
    node = start_node(config(), files={"habitapp.py": "import os\n\nundefined_name\n"},
                      wait=False)
    assert node.proc.wait(scaled(20)) == 1
    log = node.log()
    app = str(node.dir / "habitapp.py")
    # The error line itself says where; the traceback follows it.
    assert re.search(rf"NameError: name 'undefined_name' is not defined \({re.escape(app)}, "
                     r"line 3\)", log), log
    assert "Traceback (most recent call last)" in log
    assert f'File "{app}", line 3, in <module>' in log


@pytest.mark.parametrize("level", ["WARNING", "Debug", "warn", "trace"])
def test_loglevel_any_case_and_crossbar_names(level):
    r = subprocess.run(geonode_cmd("check", "--loglevel", level, "missing.json"),
                       capture_output=True, text=True, timeout=scaled(30))
    assert r.returncode == 1 and "invalid choice" not in r.stderr, r.stderr
    r = subprocess.run(geonode_cmd("check", "--loglevel", "loud", "missing.json"),
                       capture_output=True, text=True, timeout=scaled(30))
    assert r.returncode == 2 and "invalid choice" in r.stderr


# ---- shutdown timeout ----------------------------------------------------------------------

def slow_request(node: Node, seconds: float, result: dict) -> threading.Thread:
    def go() -> None:
        try:
            r = requests.get(f"{node.url}/slow?{seconds}", timeout=scaled(30))
            result.update(status=r.status_code)
        except requests.RequestException as e:
            result.update(error=type(e).__name__)

    th = threading.Thread(target=go)
    th.start()
    wait_for(lambda: (node.dir / "slow-started").exists(), 10, "the slow view to start")
    return th


@pytest.mark.parametrize("where", ["cli", "controller"])
def test_shutdown_timeout_bounds_the_stop(start_node, where):
    cfg = config()
    args: tuple = ()
    if where == "cli":
        args = ("--shutdown-timeout", "2")
    else:
        cfg["controller"] = {"options": {"shutdown_timeout": 2}}
    node = start_node(cfg, files={"habitapp.py": APP}, args=args)
    result: dict = {}
    th = slow_request(node, 60, result)
    t0 = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(scaled(10)) == 0
    took = time.monotonic() - t0
    th.join()
    assert took >= 1.0  # the request got its grace (2 s minus the closing phases)...
    assert took < 2 + scaled(1.5)  # ...and the stop kept to the timeout, not the view's 60 s
    assert "error" in result or result.get("status") == 500
    assert "waiting up to 1.2 s for requests in flight" in node.log()


def test_default_shutdown_fits_docker(start_node):
    from geonode.node import DEFAULT_SHUTDOWN_TIMEOUT, stop_budget

    assert DEFAULT_SHUTDOWN_TIMEOUT <= 8
    assert abs(sum(stop_budget(DEFAULT_SHUTDOWN_TIMEOUT)) - DEFAULT_SHUTDOWN_TIMEOUT) < 1e-9
    node = start_node(config(), files={"habitapp.py": APP})
    node.proc.send_signal(signal.SIGTERM)
    node.wait_log("waiting up to 5.0 s for requests in flight", 5)
    assert node.proc.wait(scaled(10)) == 0


SLOW_IMPORT = r'''
import os, time
open("importing", "w").close()  # the test signals the node now, while it is still building
deadline = time.monotonic() + 60
while not os.path.exists("go") and time.monotonic() < deadline:
    time.sleep(0.01)
''' + APP


def test_sigterm_while_starting_is_a_graceful_stop(start_node):
    # The signal handlers are in place before anything is built or bound: a SIGTERM that comes
    # while the node starts (docker stop, a supervisor giving up) stops it once it is up, with
    # exit 0 and the usual drain, instead of killing it with SIGTERM's default action.
    node = start_node(config(), files={"habitapp.py": SLOW_IMPORT}, wait=False)
    wait_for(lambda: (node.dir / "importing").exists(), 20, "the app's import to begin",
             proc=node.proc)
    node.proc.send_signal(signal.SIGTERM)
    (node.dir / "go").touch()
    assert node.proc.wait(scaled(20)) == 0
    log = node.log()
    assert "received SIGTERM: stopping" in log and "stopped" in log


def test_a_connection_accepted_just_before_a_stop_gets_its_first_request_served(start_node):
    # A client cannot retry a request that failed on a fresh connection: one accepted just
    # before SIGTERM (its request still on the way) is served, then closed.
    node = start_node(config(), files={"habitapp.py": APP})
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(10)) as sock:
        warm = socket.create_connection(("127.0.0.1", node.port), timeout=scaled(10))
        warm.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # the node accepted both by now
        assert warm.recv(4096).startswith(b"HTTP/1.1 200")
        node.proc.send_signal(signal.SIGTERM)
        node.wait_log("received SIGTERM: stopping", 10)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        warm.close()
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"hello"), reply
    assert b"Connection: close" in reply
    assert node.proc.wait(scaled(10)) == 0


# ---- systemd readiness ---------------------------------------------------------------------

@pytest.fixture
def notify_socket(tmp_path):
    # Unix socket paths are short (108 bytes): not under pytest's deep tmp_path.
    path = f"/tmp/geonode-notify-{os.getpid()}-{free_port()}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(scaled(20))
    yield path, sock
    sock.close()
    os.unlink(path)


def receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


@pytest.mark.parametrize("processes", [1, 2])
def test_sd_notify_ready_and_stopping(start_node, notify_socket, processes):
    path, sock = notify_socket
    node = start_node(config(), files={"habitapp.py": APP}, env={"NOTIFY_SOCKET": path},
                      args=("--processes", str(processes)), wait=False)
    assert "READY=1" in receive(sock)
    # READY means serving: with N processes, once every child is.
    assert requests.get(node.url, timeout=scaled(5)).text == "hello"
    if processes > 1:
        assert "ready: 2 processes" in node.log()
    node.proc.send_signal(signal.SIGTERM)
    assert "STOPPING=1" in receive(sock)
    assert node.proc.wait(scaled(10)) == 0
    sock.settimeout(0.2)
    with pytest.raises(socket.timeout):  # the children told the parent, not systemd
        receive(sock)


def test_sd_notify_abstract_socket():
    from geonode import sdnotify

    name = f"geonode-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(b"\0" + name.encode())
        s.settimeout(scaled(5))
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert s.recv(100) == b"READY=1"
    assert not sdnotify.notify("READY=1", {})


# ---- pid file, stop, status ------------------------------------------------------------------

def test_stop_and_status_with_pid_file(start_node):
    node = start_node(config(), files={"habitapp.py": APP})
    pidfile = node.dir / "node.pid"
    assert json.loads(pidfile.read_text())["pid"] == node.proc.pid
    r = run("status", cwd=node.dir)
    assert r.returncode == 0 and r.stdout.startswith("running") and str(node.proc.pid) in r.stdout
    assert run("status", "--assert", "stopped", cwd=node.dir).returncode == 1
    # A second node from the same directory is refused, naming the running one.
    again = run("start", "node.json", "--port", str(free_port()), cwd=node.dir)
    assert again.returncode == 1 and f"pid {node.proc.pid}" in again.stderr
    r = run("stop", "--cbdir", str(node.dir), cwd=node.dir.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    assert node.proc.wait(scaled(5)) == 0
    assert not pidfile.exists()
    r = run("status", "--assert", "stopped", cwd=node.dir)
    assert r.returncode == 0 and r.stdout.startswith("stopped")
    assert run("stop", cwd=node.dir).returncode == 1


def test_stale_pid_file_is_replaced(start_node, tmp_path):
    folder = tmp_path / "node0"
    folder.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (folder / "node.pid").write_text(json.dumps({"pid": dead.pid}))
    node = start_node(config(), files={"habitapp.py": APP})
    assert json.loads((node.dir / "node.pid").read_text())["pid"] == node.proc.pid


# ---- CLI habits ----------------------------------------------------------------------------

def test_version_flag():
    from geonode import __version__

    r = subprocess.run(geonode_cmd("--version"), capture_output=True, text=True,
                       timeout=scaled(30))
    assert r.returncode == 0 and r.stdout.strip() == f"geonode {__version__}"


@pytest.mark.parametrize("name", ["config.json", "config.yaml"])
def test_start_and_check_find_crossbar_dir(tmp_path, name):
    port = free_port()
    cfg = json.dumps(config(port=port))  # JSON is YAML too
    cb = tmp_path / ".crossbar"
    cb.mkdir()
    (cb / name).write_text(cfg)
    (cb / "habitapp.py").write_text(APP)
    r = run("check", cwd=tmp_path)
    assert r.returncode == 0 and f".crossbar/{name}" in r.stdout
    proc = start_process(geonode_cmd("start"), tmp_path, tmp_path / "node.log")
    node = Node(proc=proc, port=port, dir=tmp_path, log_path=tmp_path / "node.log", ports=[port])
    try:
        node.wait_ports()
        assert requests.get(node.url, timeout=scaled(5)).text == "hello"
        assert (cb / "node.pid").exists()  # the node directory is .crossbar, as Crossbar's
        assert run("status", "--assert", "running", cwd=tmp_path).returncode == 0
    finally:
        assert node.stop() == 0


@pytest.mark.parametrize("how", ["flag", "env", "processes"])
def test_port_override(tmp_path, how):
    port = free_port()
    args = ("--port", str(port)) if how != "env" else ()
    if how == "processes":
        args += ("--processes", "2")
    env = {"GEONODE_PORT": str(port)} if how == "env" else None
    node = launch(config(port=1), tmp_path, {"habitapp.py": APP}, args=args, env=env,
                  wait=False)
    try:
        node.port = port
        node.ports = [port]
        node.endpoints = []
        node.wait_ports()
        assert requests.get(node.url, timeout=scaled(5)).text == "hello"
        assert "workers[0].transports[0].endpoint.port = " in node.log()
    finally:
        assert node.stop() == 0


def test_busy_port_error_says_how_to_choose_another(start_node):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        node = start_node(config(port=busy), files={"habitapp.py": APP}, wait=False)
        assert node.proc.wait(scaled(20)) == 1
    log = node.log()
    assert f"port {busy}" in log and "in use" in log
    assert "--port N" in log and "GEONODE_PORT=N" in log
    assert "workers[0].transports[0].endpoint.port" in log
    assert "Traceback" not in log


def test_processes_flag_with_realm_but_web_only_serves(start_node):
    cfg = config()
    cfg["workers"][0]["realms"] = [realm()]
    node = start_node(cfg, files={"habitapp.py": APP}, args=("--processes", "2"))
    node.wait_log("ready: 2 processes", 20)
    assert requests.get(node.url, timeout=scaled(5)).text == "hello"
    assert port_open(node.port)


def test_check_knows_the_new_keys(tmp_path):
    cfg = config(port=8080)
    cfg["controller"] = {"options": {"shutdown_timeout": 3.5}}
    cfg["workers"][0]["options"]["backplane"] = {"type": "redis", "url": "redis://h:6379/0",
                                                 "prefix": "geonode", "heartbeat": 2}
    (tmp_path / "habitapp.py").write_text(APP)
    (tmp_path / "node.json").write_text(json.dumps(cfg))
    r = run("check", "node.json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    cfg["controller"]["options"]["shutdown_timeout"] = "soon"
    del cfg["workers"][0]["options"]["backplane"]["url"]
    (tmp_path / "node.json").write_text(json.dumps(cfg))
    r = run("check", "node.json", cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 1
    assert "controller.options.shutdown_timeout" in out
    assert "workers[0].options.backplane" in out and "url" in out


def test_pid_file_of_another_process_with_a_reused_pid_is_stale(start_node, tmp_path):
    """After a crash the pid may belong to another geonode: only the same command line counts."""
    other = start_node(config(), files={"habitapp.py": APP})
    folder = tmp_path / "node1"
    folder.mkdir()
    (folder / "node.pid").write_text(json.dumps({"pid": other.proc.pid,
                                                 "cmdline": ["python3", "-m", "geonode", "x"]}))
    node = start_node(config(), files={"habitapp.py": APP})
    assert node.dir == folder
    assert json.loads((folder / "node.pid").read_text())["pid"] == node.proc.pid


@pytest.mark.parametrize("where", ["cli", "controller"])
def test_stop_waits_as_long_as_the_node_may_take(start_node, where):
    """A node started with a long shutdown timeout is not SIGKILLed by `geonode stop` after the
    default's 10 s: stop reads the node's own timeout."""
    from geonode.cli import _stop_timeout

    cfg = config()
    args: tuple = ()
    if where == "cli":
        args = ("--shutdown-timeout", "30")
    else:
        cfg["controller"] = {"options": {"shutdown_timeout": 30}}
    node = start_node(cfg, files={"habitapp.py": APP}, args=args)
    from geonode.pidfile import read_running

    running = read_running(node.dir)
    assert running is not None

    class Args:
        shutdown_timeout = None

    assert _stop_timeout(Args(), running) == 30
    Args.shutdown_timeout = 3
    assert _stop_timeout(Args(), running) == 3
