"""Container and guest workers, autobahn router components (geonode/workers/, docs/workers.md):
real node processes, real worker children, real autobahn clients."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import geonode_cmd, scaled, wait_for, web_node
from support.wamp import SyncClient

pytest.importorskip("twisted.internet")

ALL = {"call": True, "register": True, "publish": True, "subscribe": True}
REALM = {"name": "realm1", "roles": [
    {"name": "anonymous", "permissions": [{"uri": "", "match": "prefix", "allow": ALL}]},
    {"name": "backend", "permissions": [{"uri": "com.", "match": "prefix", "allow": ALL}]}]}
TRANSPORT = {"type": "websocket", "url": "ws://127.0.0.1/ws",
             "endpoint": {"type": "tcp", "host": "127.0.0.1", "port": "$PORT"}}

FILES = {
    "tcomp.py": '''
import os
from autobahn.twisted.wamp import ApplicationSession
from twisted.internet.defer import inlineCallbacks


class Hello(ApplicationSession):
    @inlineCallbacks
    def onJoin(self, details):
        from twisted.internet import reactor

        def info():
            return {"pid": os.getpid(), "extra": self.config.extra,
                    "reactor": type(reactor).__module__}
        yield self.register(info, "com.t.info")
        print("twisted component ready")
''',
    "acomp.py": '''
import asyncio, os
from autobahn.asyncio.wamp import ApplicationSession


class Hello(ApplicationSession):
    async def onJoin(self, details):
        def info():
            return {"pid": os.getpid(), "loop": type(asyncio.get_running_loop()).__module__}
        await self.register(info, "com.a.info")
''',
    "funcs.py": '''
def on_join(session, details):
    return session.register(lambda: "from a function", "com.f.hello")
''',
    "rcomp.py": '''
import os
from autobahn.twisted.wamp import ApplicationSession


class Who(ApplicationSession):
    async def onJoin(self, details):
        await self.register(lambda: {"authid": details.authid, "authrole": details.authrole,
                                     "pid": os.getpid()}, "com.r.whoami")
''',
    "guest.py": '''
import json, os, signal, sys, time
data = json.load(sys.stdin)
print("guest", os.environ["GREETING"], data["n"], os.path.basename(os.getcwd()), flush=True)
print("to stderr", file=sys.stderr, flush=True)
if data.get("ignore_term"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ignoring SIGTERM", flush=True)
time.sleep(600)
''',
}

STARTED = re.compile(r"worker '([^']+)' started \(pid (\d+)\)")


def _pids(log: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for name, pid in STARTED.findall(log):
        out.setdefault(name, []).append(int(pid))
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie counts as not running, but is reported by _zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def _call(port: int, procedure: str, timeout: float = 20.0):
    """Call ``procedure`` once something has registered it (components join after start)."""
    c = SyncClient(port)
    try:
        def attempt():
            try:
                return [c.call(procedure)]
            except Exception as e:
                if "no_such_procedure" in str(getattr(e, "error", e)):
                    return None
                raise
        return wait_for(attempt, timeout, f"{procedure} registered", interval=0.05)[0]
    finally:
        c.close()


def _node(**kw) -> dict:
    cfg = web_node({"ws": {"type": "websocket"}}, realms=[REALM], **kw)
    return cfg


@pytest.fixture(scope="module")
def full_node(start_module_node):
    cfg = _node(worker_options={"pythonpath": ["."]},
                components=[{"type": "class", "classname": "rcomp.Who", "realm": "realm1",
                             "role": "backend", "id": "svc_who"}])
    cfg["workers"] += [
        {"type": "container", "id": "twisty", "options": {"pythonpath": ["."]},
         "components": [{"type": "class", "classname": "tcomp.Hello", "realm": "realm1",
                         "extra": {"k": 1}, "transport": TRANSPORT}]},
        {"type": "container", "id": "asyncy", "options": {"pythonpath": ["."]},
         "components": [{"type": "class", "classname": "acomp.Hello", "realm": "realm1",
                         "transport": {"type": "rawsocket", "serializer": "msgpack",
                                       "endpoint": {"type": "tcp", "host": "127.0.0.1",
                                                    "port": "$PORT2"}}}]},
        {"type": "container", "id": "funcy",
         "options": {"pythonpath": ["."], "framework": "asyncio"},
         "components": [{"type": "function", "realm": "realm1", "auth": {},
                         "callbacks": {"join": "funcs.on_join"}, "transport": TRANSPORT}]},
        {"type": "guest", "id": "guesty", "executable": sys.executable,
         "arguments": ["../guest.py"],
         "options": {"workdir": "sub", "env": {"vars": {"GREETING": "hola"}},
                     "stdin": {"type": "json", "value": {"n": 42}}}},
    ]
    # the asyncio container's rawsocket needs a rawsocket transport on the router
    cfg["workers"][0]["transports"].append(
        {"type": "rawsocket", "endpoint": {"type": "tcp", "port": "$PORT2"}})
    files = dict(FILES, **{"sub/.keep": ""})
    return start_module_node(cfg, files=files, nports=2)


def test_twisted_container_component_runs_on_twisted(full_node):
    info = _call(full_node.port, "com.t.info")
    assert info["reactor"].startswith("twisted.internet")
    assert info["extra"]["k"] == 1 and info["extra"]["cbdir"] == str(full_node.dir)
    log = full_node.wait_log("on Twisted (detected: tcomp.Hello is a Twisted ApplicationSession)")
    # the child's own output, prefixed with its worker id
    assert re.search(r"INFO worker\.twisty: twisted component ready", log), log
    assert info["pid"] in _pids(log)["twisty"]


def test_asyncio_container_component_runs_on_asyncio(full_node):
    info = _call(full_node.port, "com.a.info")
    assert info["loop"].startswith("asyncio")
    full_node.wait_log("asyncy: 1 component(s) on asyncio (detected: acomp.Hello is an "
                       "asyncio ApplicationSession)")


def test_function_component_with_explicit_framework(full_node):
    assert _call(full_node.port, "com.f.hello") == "from a function"
    full_node.wait_log("funcy: 1 component(s) on asyncio (options.framework)")


def test_router_component_joins_with_its_role_and_authid_over_a_private_channel(full_node):
    who = _call(full_node.port, "com.r.whoami")
    assert (who["authid"], who["authrole"]) == ("svc_who", "backend")
    log = full_node.log()
    pid = who["pid"]
    assert pid in _pids(log)["worker000-components"] and pid != full_node.proc.pid
    # no credentials or component details on the child's command line
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    assert "svc_who" not in cmdline and "backend" not in cmdline and "rcomp" not in cmdline
    # the child reaches the router over an inherited socketpair: it has no TCP socket
    fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    inodes = {f[8:-1] for f in fds if f.startswith("socket:[")}
    tcp = Path("/proc/net/tcp").read_text() + Path("/proc/net/tcp6").read_text()
    tcp_inodes = {line.split()[9] for line in tcp.splitlines()[1:] if len(line.split()) > 9}
    assert inodes and not inodes & tcp_inodes


def test_guest_gets_stdin_env_workdir_and_its_output_is_logged(full_node):
    log = full_node.wait_log("worker.guesty: guest hola 42 sub")
    assert "worker.guesty: to stderr" in log


def test_stop_ends_every_worker_and_leaves_no_process(tmp_path):
    from support import launch

    cfg = _node()
    cfg["workers"] += [
        {"type": "container", "id": "twisty", "options": {"pythonpath": ["."]},
         "components": [{"type": "class", "classname": "tcomp.Hello", "realm": "realm1",
                         "transport": TRANSPORT}]},
        {"type": "guest", "id": "stubborn", "executable": sys.executable,
         "arguments": ["guest.py"], "options": {"env": {"vars": {"GREETING": "x"}},
                                                "stdin": {"type": "json", "value": {
                                                    "n": 1, "ignore_term": True}}}},
    ]
    node = launch(cfg, tmp_path, files=FILES)
    try:
        _call(node.port, "com.t.info")
        node.wait_log("worker.stubborn: ignoring SIGTERM")
        pids = [p for ps in _pids(node.log()).values() for p in ps]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
    finally:
        code = node.stop(timeout=30)
    log = node.log()
    assert code == 0, log
    assert not [p for p in pids if _alive(p) or _zombie(p)], log
    assert "guest worker 'stubborn'" in log and "after SIGTERM: SIGKILL" in log, log
    assert "container worker 'twisty'" in log and "exited with status 0" in log, log


BAD = {
    "broken.py": "import nosuchmodule_xyz\n",
    "failing.py": '''
from autobahn.twisted.wamp import ApplicationSession


class Failing(ApplicationSession):
    def onJoin(self, details):
        raise ValueError("onJoin says no")
''',
    "plain.py": "class NotASession:\n    def on_join(self, session):\n        pass\n",
    "needs_twisted.py": ('raise ModuleNotFoundError("No module named \'twisted\'", '
                         'name="twisted")\n'),
}


def test_bad_input_one_line_each_router_keeps_serving_nothing_left(start_node):
    cfg = _node(worker_options={"pythonpath": ["."]})
    cfg["workers"] += [
        {"type": "container", "id": "broken", "options": {"pythonpath": ["."]},
         "components": [{"type": "class", "classname": "broken.Thing", "realm": "realm1",
                         "transport": TRANSPORT}]},
        {"type": "container", "id": "failing",
         "options": {"pythonpath": ["."], "restart": "restart-on-failed"},
         "components": [{"type": "class", "classname": "failing.Failing", "realm": "realm1",
                         "transport": TRANSPORT}]},
        {"type": "guest", "id": "missing", "executable": "no-such-program-xyz"},
        {"type": "guest", "id": "flappy", "executable": "true",
         "options": {"restart": "restart-always"}},
        {"type": "container", "id": "victim",
         "options": {"pythonpath": ["."], "restart": "restart-on-failed"},
         "components": [{"type": "class", "classname": "tcomp.Hello", "realm": "realm1",
                         "transport": TRANSPORT}]},
    ]
    t0 = time.monotonic()
    node = start_node(cfg, files={**FILES, **BAD})
    first = _call(node.port, "com.t.info")["pid"]
    os.kill(first, signal.SIGKILL)
    log = node.wait_log(f"container worker 'victim' (pid {first}) killed by SIGKILL")
    # restarted (restart-on-failed), its component joins again
    second = wait_for(lambda: (p := _call(node.port, "com.t.info")["pid"]) != first and p,
                      30, "the container restarted")
    assert second != first
    log = node.wait_log("workers[2].components[0] failed: restarting in 1.0 s", timeout=30)
    # each fault: one clear line
    assert log.count("workers[1].components[0].classname: cannot import 'broken': "
                     "ModuleNotFoundError: No module named 'nosuchmodule_xyz'") == 1, log
    assert log.count("workers[3].executable: 'no-such-program-xyz' not found") == 1, log
    assert re.search(r"ERROR worker\.failing: workers\[2\]\.components\[0\]: While firing "
                     r"onJoin: ValueError: onJoin says no \(failing\.py:\d+\)", log), log
    # the failing component restarts with a backoff, not in a tight loop
    waited = [float(x) for x in re.findall(r"workers\[2\]\.components\[0\] failed: restarting "
                                           r"in ([\d.]+) s", log)]
    assert waited[:2] == [0.5, 1.0], log
    # a guest exiting at once with restart-always: restarted with a growing backoff
    # backoff 0.5, 1, 2, 4 ... s: k restarts need 0.5 * (2**k - 1) s
    elapsed = time.monotonic() - t0
    starts = len(_pids(node.log()).get("flappy", []))
    assert 2 <= starts <= 2 + math.log2(2 * elapsed + 1), node.log()
    delays = [float(x) for x in re.findall(r"guest worker 'flappy': restarting in ([\d.]+) s",
                                           node.log())]
    assert delays == sorted(delays) and delays[0] == 0.5 and delays[-1] >= 1.0, node.log()
    # the router kept serving all along
    c = SyncClient(node.port)
    c.close()
    pids = [p for ps in _pids(node.log()).values() for p in ps]
    assert not [p for p in pids if _zombie(p)]
    code = node.stop(timeout=30)
    assert code == 0
    assert not [p for p in pids if _alive(p) or _zombie(p)], node.log()


def test_check_finds_what_start_logs(tmp_path):
    from support import launch

    cfg = _node(worker_options={"pythonpath": ["."]},
                components=[{"type": "class", "classname": "plain.NotASession",
                             "realm": "realm1"},
                            {"type": "class", "classname": "failing.Nope", "realm": "realm1"}])
    cfg["workers"] += [
        {"type": "container", "options": {"pythonpath": ["."]},
         "components": [{"type": "class", "classname": c, "realm": "realm1",
                         "transport": TRANSPORT}
                        for c in ("broken.Thing", "plain.NotASession", "needs_twisted.X",
                                  "failing.Failing")]},
        {"type": "guest", "executable": "no-such-program-xyz"},
    ]
    node = launch(cfg, tmp_path, files={**FILES, **BAD})
    try:
        node.wait_log("workers[2].executable")
        log = node.wait_log("workers[1].components[2].classname")
    finally:
        node.stop()
    done = subprocess.run(geonode_cmd("check", str(tmp_path / "node.json")), capture_output=True,
                          text=True, cwd=tmp_path, timeout=scaled(60))
    assert done.returncode == 1
    errors = [line.strip() for line in done.stderr.splitlines()[1:]]
    assert errors == [
        "workers[0].components[1].classname: module 'failing' has no class 'Nope'",
        "workers[1].components[0].classname: cannot import 'broken': "
        "ModuleNotFoundError: No module named 'nosuchmodule_xyz'",
        "workers[1].components[1].classname: plain.NotASession is not an autobahn "
        "ApplicationSession (a container runs subclasses of "
        "autobahn.twisted.wamp.ApplicationSession or autobahn.asyncio.wamp.ApplicationSession)",
        "workers[1].components[2].classname: needs_twisted.X needs Twisted, which is not "
        "installed (pip install 'geonode[twisted]')",
        "workers[2].executable: 'no-such-program-xyz' not found or not executable (looked for "
        f"{tmp_path / 'no-such-program-xyz'} and on PATH)",
    ], done.stderr
    # start logged the container's and the guest's with the same words
    for line in errors[1:]:
        assert line in log, (line, log)


def test_controller_shutdown_on_worker_exit_stops_the_node(start_node):
    cfg = _node()
    cfg["controller"] = {"options": {"shutdown": ["shutdown_on_worker_exit"]}}
    cfg["workers"].append({"type": "guest", "id": "oneshot", "executable": "sh",
                           "arguments": ["-c", "echo done; exit 3"]})
    node = start_node(cfg, wait=False)
    node.proc.wait(scaled(30))
    log = node.log()
    assert "guest worker 'oneshot'" in log and "exited with status 3" in log, log
    assert "controller.options.shutdown has 'shutdown_on_worker_exit'" in log, log
    assert node.proc.returncode == 0, log


def test_without_shutdown_option_the_node_keeps_serving_when_a_worker_exits(start_node):
    cfg = _node()
    cfg["workers"].append({"type": "guest", "id": "oneshot", "executable": "sh",
                           "arguments": ["-c", "exit 3"]})
    node = start_node(cfg)
    node.wait_log("worker 'oneshot' is gone; the node keeps running")
    SyncClient(node.port).close()
    assert node.proc.poll() is None


def test_guest_watch_restarts_it_on_a_file_change(start_node):
    cfg = _node()
    cfg["workers"].append({"type": "guest", "id": "watched", "executable": "sh",
                           "arguments": ["-c", "echo up; exec sleep 600"],
                           "options": {"watch": {"directories": ["src"], "action": "restart",
                                                 "timeout": 0.1}}})
    node = start_node(cfg, files={"src/app.js": "1"})
    node.wait_log("worker.watched: up")
    (node.dir / "src" / "app.js").write_text("2")
    log = node.wait_log(re.compile(r"(worker\.watched: up(.|\n)*){2}"), timeout=20)
    assert "src/app.js changed: restarting" in log
    assert len(_pids(log)["watched"]) == 2


def test_container_component_startup_time_is_logged_and_bounded(start_node):
    """Node start to Twisted component joined (issue 12 target: 1.5 s on a quiet machine)."""
    cfg = _node()
    cfg["workers"].append(
        {"type": "container", "id": "twisty", "options": {"pythonpath": ["."]},
         "components": [{"type": "class", "classname": "tcomp.Hello", "realm": "realm1",
                         "transport": TRANSPORT}]})
    t0 = time.monotonic()
    node = start_node(cfg, files=FILES, wait=False)
    node.wait_log("tcomp.Hello joined realm 'realm1'", timeout=30)
    assert time.monotonic() - t0 < scaled(8)


@pytest.mark.inprocess
def test_schema_accepts_crossbar_container_and_guest_keys(tmp_path):
    from geonode.config import check

    cfg = _node()
    cfg["workers"][0]["transports"][0]["endpoint"]["port"] = 8080
    cfg["workers"] += [
        {"type": "container", "id": "test_cont1",
         "options": {"pythonpath": [".."], "shutdown": "shutdown-on-last-component-stopped",
                     "restart": "restart-on-failed", "expose_controller": True,
                     "expose_shared": True, "reactor": {"win32": "select"}},
         "components": [{"type": "class", "classname": "m.C", "realm": "realm1",
                         "transport": {"type": "rawsocket", "serializer": "msgpack",
                                       "endpoint": {"type": "unix", "path": "x.sock"}}}]},
        {"type": "guest", "executable": "node", "arguments": ["a.js"],
         "options": {"workdir": "..", "env": {"inherit": False, "vars": {"A": "1"}},
                     "stdin": "close", "stdout": "log", "stderr": "drop",
                     "watch": {"directories": [".."], "action": "restart"}}},
    ]
    (tmp_path / "node.json").write_text(json.dumps(cfg))
    assert check(tmp_path / "node.json") == []
    cfg["workers"][1]["options"]["restart"] = "restart-sometimes"
    cfg["workers"][2]["options"]["stdout"] = "print"
    (tmp_path / "node.json").write_text(json.dumps(cfg))
    errs = check(tmp_path / "node.json")
    assert errs[0].startswith("workers[1].options.restart: 'restart-sometimes' is not one of")
    assert errs[1].startswith("workers[2].options.stdout: 'print' is not one of"), errs
    cfg["workers"][1]["options"]["restart"] = "restart-always"
    del cfg["workers"][2]["options"]["stdout"]
    (tmp_path / "node.json").write_text(json.dumps(cfg))
    assert check(tmp_path / "node.json") == [
        "workers[1].options.restart: 'restart-always' won't work with shutdown "
        "'shutdown-on-last-component-stopped'"]
    cfg["workers"][1]["options"]["restart"] = "restart-never"
    cfg["controller"] = {"options": {"shutdown": ["shutdown_on_worker_exit", "nope"]}}
    (tmp_path / "node.json").write_text(json.dumps(cfg))
    errs = check(tmp_path / "node.json")
    assert errs == ["controller.options.shutdown[1]: 'nope' is not one of "
                    "'shutdown_on_shutdown_requested', 'shutdown_on_worker_exit', "
                    "'shutdown_on_worker_exit_with_error', 'shutdown_on_last_worker_exit'"], errs


def test_missing_twisted_is_named_with_the_extra_by_check_and_start(tmp_path):
    """Twisted hidden from the container (a stand-in package that fails to import)."""
    from support import launch

    hide = {"twisted/__init__.py": 'raise ModuleNotFoundError("No module named \'twisted\'", '
                                   'name="twisted")\n'}
    cfg = _node()
    cfg["workers"].append(
        {"type": "container", "options": {"pythonpath": ["."], "framework": "twisted"},
         "components": [{"type": "function", "realm": "realm1", "auth": {},
                         "callbacks": {"join": "funcs.on_join"}, "transport": TRANSPORT}]})
    want = ("workers[1].options.framework: 'twisted' needs Twisted, which is not installed "
            "(pip install 'geonode[twisted]')")
    node = launch(cfg, tmp_path, files={**FILES, **hide})
    try:
        node.wait_log(want)
    finally:
        node.stop()
    done = subprocess.run(geonode_cmd("check", str(tmp_path / "node.json")), capture_output=True,
                          text=True, cwd=tmp_path, timeout=scaled(60))
    assert done.returncode == 1 and want in done.stderr, done.stderr
