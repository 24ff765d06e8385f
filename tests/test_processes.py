"""``--processes N``: real supervisor and children, real connections (pid per response)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from support import port_open, realm, scaled, wait_for, web_node
from support.nodes import Node

APP = r'''
import os
import time

def pid(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]

def slow(environ, start_response):
    open(f"slow-started-{os.getpid()}", "w").close()  # the test waits for this
    time.sleep(float(environ["QUERY_STRING"]))  # the scenario: a request that takes its time
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"finished"]
'''

BROKEN_APP = "x = 1\nundefined_name\n"


def web_config(**kw) -> dict:
    """Web paths only, a realm but nothing that serves WAMP: needs no backplane."""
    return web_node({"/": {"type": "wsgi", "module": "pidapp", "object": "pid"},
                     "slow": {"type": "wsgi", "module": "pidapp", "object": "slow"}},
                    realms=[realm()], worker_options={"pythonpath": ["."]}, **kw)


def start(start_node, cfg: dict | None = None, n: int = 2, args: tuple = (), **kw) -> Node:
    node = start_node(cfg or web_config(), files={"pidapp.py": APP},
                      args=("--processes", str(n), *args), **kw)
    if kw.get("wait", True):
        node.wait_log(f"ready: {n} processes", 20)
    return node


def child_pids(node: Node) -> list[int]:
    """The pids of the children the supervisor started last, per process number."""
    latest: dict[int, int] = {}
    for m in re.finditer(r"process (\d+) started \(pid (\d+)\)", node.log()):
        latest[int(m.group(1))] = int(m.group(2))
    return [latest[k] for k in sorted(latest)]


def pid_of_fresh_connection(port: int) -> int:
    r = requests.get(f"http://127.0.0.1:{port}/", headers={"Connection": "close"},
                     timeout=scaled(10))
    assert r.status_code == 200
    return int(r.text)


def alive(pid: int) -> bool:
    """Running (a zombie is not: its /proc status says Z)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_connections_spread_over_children(start_node):
    node = start(start_node)
    pids = child_pids(node)
    assert len(pids) == 2
    seen = Counter(pid_of_fresh_connection(node.port) for _ in range(60))
    assert set(seen) == set(pids), (seen, pids)
    # SO_REUSEPORT hashes connections over the children: neither gets a trickle.
    assert min(seen.values()) >= 10, seen
    assert node.stop() == 0


def test_killed_child_is_restarted(start_node):
    node = start(start_node)
    victim, other = child_pids(node)
    os.kill(victim, signal.SIGKILL)
    node.wait_log(re.compile(rf"process 1 \(pid {victim}\) was killed by SIGKILL after "
                             r"[\d.]+ s; restarting it"), 10)
    wait_for(lambda: len(child_pids(node)) == 2 and child_pids(node)[0] != victim, 10,
             "a new process 1")
    new = child_pids(node)[0]
    node.wait_log(re.compile(r"geonode\.node\[1\]: ready in"), 20)
    # The restarted child serves on the same port: both answer again.
    wait_for(lambda: {pid_of_fresh_connection(node.port) for _ in range(20)} == {new, other},
             20, "both children answering")
    assert not alive(victim)
    assert node.proc.poll() is None
    assert node.stop() == 0
    assert not alive(new) and not alive(other)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_every_child(start_node, sig):
    node = start(start_node)
    pids = child_pids(node)
    result: dict = {}

    def slow() -> None:
        r = requests.get(f"{node.url}/slow?{scaled(1.5)}", timeout=scaled(20))
        result.update(status=r.status_code, text=r.text)

    th = threading.Thread(target=slow)
    th.start()
    wait_for(lambda: list(node.dir.glob("slow-started-*")), 10, "the slow view to start")
    node.proc.send_signal(sig)
    wait_for(lambda: not port_open(node.port), 2, "the port to close after the signal")
    th.join()
    assert result == {"status": 200, "text": "finished"}
    assert node.proc.wait(scaled(15)) == 0
    log = node.log()
    assert f"received {sig.name}: stopping 2 processes" in log
    assert log.count("geonode.node[1]: stopped") == 1 and log.count("geonode.node[2]: stopped") == 1
    assert re.search(r"process \d \(pid \d+\) exited with status 0", log)
    assert "Traceback" not in log
    assert not any(alive(p) for p in pids)  # reaped: no zombies either


def test_killed_parent_takes_children_along(start_node):
    node = start(start_node)
    pids = child_pids(node)
    node.proc.kill()
    node.proc.wait(scaled(5))
    wait_for(lambda: not any(alive(p) for p in pids), 15, "the children to exit")


def test_wamp_without_backplane_is_refused_before_listening(start_node):
    cfg = web_config()
    cfg["workers"][0]["transports"][0]["paths"]["ws"] = {"type": "websocket"}
    node = start(start_node, cfg, wait=False)
    assert node.proc.wait(scaled(20)) == 1
    log = node.log()
    lines = [ln for ln in log.splitlines() if ln.strip()]
    assert len(lines) == 1, log
    assert "workers[0].options.backplane" in lines[0] and "--processes 2" in lines[0]
    assert "Traceback" not in log and "listening" not in log
    # geonode check agrees with geonode start
    import subprocess

    from support import geonode_cmd

    r = subprocess.run(geonode_cmd("check", "--processes", "2", "node.json"), cwd=node.dir,
                       capture_output=True, text=True, timeout=scaled(30))
    assert r.returncode == 1 and "workers[0].options.backplane" in r.stderr, r.stderr
    r = subprocess.run(geonode_cmd("check", "node.json"), cwd=node.dir,
                       capture_output=True, text=True, timeout=scaled(30))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("extra", [
    {"components": [{"type": "class", "classname": "x.Y", "realm": "realm1"}]},
    {"transport": {"type": "rawsocket", "endpoint": {"type": "tcp", "port": 0}}},
    {"path": {"type": "publisher", "realm": "realm1", "role": "anonymous"}},
    {"path": {"type": "wsgi", "module": "pidapp", "object": "pid", "wamp": True}},
])
def test_every_wamp_kind_needs_a_backplane(start_node, extra):
    from geonode.config.model import build_node
    from geonode.config.model import wamp_without_backplane as refused

    def wamp_without_backplane(data: dict) -> list[str]:
        # what the supervisor asks of a loaded config (ports filled in)
        text = json.dumps(data)
        return refused(build_node(json.loads(re.sub(r'"\$PORT\d*"', "0", text)), []))

    cfg = web_config()
    worker = cfg["workers"][0]
    if "components" in extra:
        worker["components"] = extra["components"]
    if "transport" in extra:
        worker["transports"].append(extra["transport"])
    if "path" in extra:
        worker["transports"][0]["paths"]["x"] = {"type": "path", "paths": {"y": extra["path"]}}
    assert wamp_without_backplane(cfg) == ["workers[0]"]
    worker["options"]["backplane"] = {"type": "redis", "url": "redis://127.0.0.1:1/0"}
    assert wamp_without_backplane(cfg) == []
    assert wamp_without_backplane(web_config()) == []


def test_first_start_failure_exits_1(start_node):
    node = start_node(web_config(), files={"pidapp.py": BROKEN_APP},
                      args=("--processes", "2"), wait=False)
    assert node.proc.wait(scaled(30)) == 1
    log = node.log()
    assert "before it was ready: stopping" in log
    assert "undefined_name" in log
    assert not port_open(node.port)


def test_busy_port_is_one_error_before_any_child(start_node):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        node = start(start_node, web_config(port=busy), wait=False)
        assert node.proc.wait(scaled(20)) == 1
    log = node.log()
    assert f"port {busy}" in log and "--port" in log
    assert "process 1 started" not in log


def test_processes_share_a_unix_endpoint(start_node, tmp_path):
    cfg = web_config()
    cfg["workers"][0]["transports"].append({
        "type": "web", "endpoint": {"type": "unix", "path": "web.sock"},
        "paths": {"/": {"type": "wsgi", "module": "pidapp", "object": "pid"}}})
    node = start(start_node, cfg)
    path = node.dir / "web.sock"
    seen = set()
    deadline = time.monotonic() + scaled(20)
    while len(seen) < 2 and time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(scaled(5))
            s.connect(str(path))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        seen.add(int(data.rsplit(b"\r\n\r\n", 1)[1]))
    assert seen == set(child_pids(node))
    assert node.stop() == 0
    assert not path.exists()


def test_sigterm_to_every_process_at_once_is_one_graceful_stop(start_node):
    """systemd's default KillMode signals the whole cgroup: each child gets SIGTERM from it and
    again from the parent. That must still let requests in flight finish."""
    node = start(start_node)
    pids = child_pids(node)
    result: dict = {}

    def slow() -> None:
        r = requests.get(f"{node.url}/slow?{scaled(1.5)}", timeout=scaled(20))
        result.update(status=r.status_code, text=r.text)

    th = threading.Thread(target=slow)
    th.start()
    wait_for(lambda: list(node.dir.glob("slow-started-*")), 10, "the slow view to start")
    for pid in [node.proc.pid, *pids]:
        os.kill(pid, signal.SIGTERM)
    th.join()
    assert result == {"status": 200, "text": "finished"}
    assert node.proc.wait(scaled(15)) == 0
    assert "second signal" not in node.log()


def test_geonode_stop_stops_the_supervisor_and_children(start_node):
    import subprocess

    from support import geonode_cmd

    node = start(start_node)
    pids = child_pids(node)
    r = subprocess.run(geonode_cmd("stop"), cwd=node.dir, capture_output=True, text=True,
                       timeout=scaled(30))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"pid {node.proc.pid}" in r.stdout
    assert node.proc.wait(scaled(5)) == 0
    assert not any(alive(p) for p in pids)


def test_second_signal_to_the_parent_stops_the_children_now(start_node):
    node = start(start_node)
    result: dict = {}

    def slow() -> None:
        try:
            r = requests.get(f"{node.url}/slow?60", timeout=scaled(30))
            result.update(status=r.status_code)
        except requests.RequestException as e:
            result.update(error=type(e).__name__)

    th = threading.Thread(target=slow)
    th.start()
    wait_for(lambda: list(node.dir.glob("slow-started-*")), 10, "the slow view to start")
    t0 = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    node.wait_log("received SIGTERM: stopping 2 processes", 5)
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(scaled(10)) == 0
    th.join()
    # Not the 5 s grace of the default shutdown timeout: the children were told "now".
    assert time.monotonic() - t0 < 1.05 + scaled(1.5)
    log = node.log()
    assert "received SIGTERM again (second signal): the processes stop now" in log
    assert "stopping now, requests in flight are cut off" in log


def test_sighup_replaces_every_child_without_refusing_anyone(start_node):
    """SIGHUP: a new process per slot, the old one serving until the new one is ready, then
    draining: new code deployed while clients never see a refused or failed request."""
    node = start(start_node)
    old = child_pids(node)
    result: dict = {}
    th_slow = threading.Thread(target=lambda: result.update(
        slow=requests.get(f"{node.url}/slow?{scaled(1.0)}", timeout=scaled(30)).text))
    th_slow.start()
    wait_for(lambda: list(node.dir.glob("slow-started-*")), 10, "the slow view to start")
    stop = threading.Event()
    answered: list = []
    failures: list = []

    def hammer() -> None:
        while not stop.is_set() and len(answered) < 100_000:
            try:
                answered.append(pid_of_fresh_connection(node.port))
            except (requests.RequestException, AssertionError) as e:
                failures.append(repr(e))

    th = threading.Thread(target=hammer)
    th.start()
    try:
        node.proc.send_signal(signal.SIGHUP)
        node.wait_log("reload done: 2 processes replaced", 40)
        new = child_pids(node)
        assert not set(new) & set(old)
        wait_for(lambda: not any(alive(p) for p in old), 15, "the old processes to exit")
        n = len(answered)
        wait_for(lambda: len(answered) > n + 5, 10, "requests answered after the reload")
    finally:
        stop.set()
        th.join()
        th_slow.join()
    assert failures == [], failures[:3]
    assert result["slow"] == "finished"  # the old process drained its request in flight
    assert set(answered[-5:]) <= set(new)
    log = node.log()
    assert re.search(rf"process 1 replaced: pid {new[0]} serves, pid {old[0]} stops", log)
    assert node.stop() == 0


def test_sighup_with_broken_code_keeps_the_old_processes(start_node):
    node = start(start_node)
    old = child_pids(node)
    (node.dir / "pidapp.py").write_text(BROKEN_APP)
    node.proc.send_signal(signal.SIGHUP)
    node.wait_log(re.compile(r"process 1's replacement \(pid \d+\) exited with status 1 before "
                             rf"it was ready: the reload stops, pid {old[0]} keeps serving"), 30)
    assert {pid_of_fresh_connection(node.port) for _ in range(20)} == set(old)
    assert node.proc.poll() is None
    assert node.stop() == 0
    assert not any(alive(p) for p in old)
