"""The garbage collector's "freeze" policy (geonode.gcpolicy, ``controller.options.gc``).

Survivors of each full collection are frozen, so later full collections do not walk the idle
sessions; cyclic garbage among frozen objects waits for the backstop. That is safe only where
long-lived objects do not turn into cyclic garbage: here, that the node's own WAMP paths make
none, that the backstop frees what is frozen, and when "auto" picks the policy.
"""

from __future__ import annotations

import collections
import gc
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import gevent
import pytest
from support import geonode_cmd, scaled
from support.router import green_wait_for, make_router, rawsocket_server, websocket_server

from geonode.config.model import hosted_code

TESTS = str(Path(__file__).resolve().parent)

POLICY = textwrap.dedent("""
    import gc, weakref
    from geonode.gcpolicy import GcPolicy, YOUNG_THRESHOLD

    class Node:
        pass

    policy = GcPolicy(interval=0)
    policy.install()
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    assert not gc.get_objects(generation=2)   # start-up's objects: frozen

    # Long-lived objects (an idle session's): after a full collection they are frozen, so
    # the next full collection does not walk them.
    kept = [Node() for _ in range(5000)]
    gc.collect()
    assert policy.full_collections == 1
    assert len(gc.get_objects(generation=2)) < 100, len(gc.get_objects(generation=2))
    assert gc.get_freeze_count() >= 5000

    # A frozen object without cycles is freed by reference counting.
    plain = weakref.ref(kept[0])
    del kept[0]
    assert plain() is None

    # A frozen cycle that becomes garbage: no ordinary collection frees it, the backstop does.
    a, b = Node(), Node()
    a.other, b.other = b, a
    gc.collect()
    cyc = weakref.ref(a)
    del a, b
    gc.collect()
    assert cyc() is not None, "frozen objects are not collected"
    assert not policy.backstop_due() or cyc() is None   # grew by < half: not due
    policy.backstop()
    assert cyc() is None, "the backstop frees frozen cyclic garbage"
    assert policy.backstops == 1 and gc.get_freeze_count() >= 4999   # refrozen

    # Due once the frozen set doubled since the last backstop.
    more = [Node() for _ in range(5 * gc.get_freeze_count() // 4)]
    gc.collect()
    assert policy.backstop_due() and policy.backstops == 2
    policy.uninstall()
    print("ok")
""")


def test_policy_freezes_survivors_and_the_backstop_frees_frozen_cycles():
    # a child process: the policy changes the interpreter's GC state
    out = subprocess.run([sys.executable, "-c", POLICY], capture_output=True, text=True,
                         timeout=scaled(60))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# -- the node's own WAMP paths leave no cyclic garbage -----------------------------------------

CLIENTS = textwrap.dedent("""
    import json, socket, sys
    sys.path.insert(0, sys.argv[1])
    from support.ws import RawWamp
    ws_port, rs_port, n = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

    def until(c, kind):
        while True:
            msg = c.recv()
            if msg[0] == kind:
                return msg

    cs = []
    for i in range(n):
        c = RawWamp(ws_port, "")
        assert c.hello()[0] == 2
        c.send([32, c.next_request(), {}, "com.gc.topic"]); until(c, 33)
        c.send([32, c.next_request(), {"match": "prefix"}, "com.gc"]); until(c, 33)
        cs.append(c)
    callee = cs[0]
    callee.send([64, callee.next_request(), {}, "com.gc.proc"]); until(callee, 65)
    for c in cs[1:]:
        c.send([16, c.next_request(), {"acknowledge": True}, "com.gc.topic", [1], {"k": [2]}])
        until(c, 17)
        c.send([48, c.next_request(), {}, "com.gc.proc", [1]])
        inv = until(callee, 68)
        callee.send([70, inv[1], {}, [2]]); until(c, 50)
        c.send([48, c.next_request(), {}, "com.gc.proc", [1]])
        inv = until(callee, 68)
        callee.send([8, 68, inv[1], {}, "com.gc.error", ["no"]]); until(c, 8)
        c.send([48, c.next_request(), {}, "com.gc.nobody"]); until(c, 8)
        c.send([34, c.next_request(), 1]); until(c, 8)          # no such subscription
        c.send([1, "realm1", {"roles": {"caller": {}}}])          # HELLO when joined
    for i, c in enumerate(cs):
        if i % 3 == 0:
            c.send([6, {}, "wamp.close.normal"])
            try:
                until(c, 6)
            except Exception:
                pass
        c.close()

    # RawSocket: join, subscribe, a bad message, close
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", rs_port), timeout=30)
        f = s.makefile("rb")
        s.sendall(bytes((0x7F, 0xF1, 0, 0)))
        assert f.read(4)[0] == 0x7F
        def send(msg):
            data = json.dumps(msg).encode()
            s.sendall(bytes((0,)) + len(data).to_bytes(3, "big") + data)
        def recv():
            head = f.read(4)
            return json.loads(f.read(int.from_bytes(head[1:], "big")))
        send([1, "realm1", {"roles": {"subscriber": {}}}]); assert recv()[0] == 2
        send([32, 1, {}, "com.gc.topic"]); assert recv()[0] == 33
        send([99, "nonsense"])
        f.close(); s.close()
    print("done", flush=True)
""")


def _workload(ws_port: int, rs_port: int, n: int) -> None:
    """The clients run in a process of their own: their garbage is not counted here."""
    proc = subprocess.Popen([sys.executable, "-c", CLIENTS, TESTS, str(ws_port), str(rs_port),
                             str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    green_wait_for(lambda: proc.poll() is not None, scaled(60), "the clients' process ends",
                   interval=0.01)
    out, err = proc.communicate()
    assert proc.returncode == 0 and out.strip() == "done", err


def test_the_wamp_paths_leave_no_cyclic_garbage():
    """Sessions over WebSocket and RawSocket: join, subscribe, publish, call (result and
    error), errors of the client's, protocol violations, GOODBYE and abrupt ends. With the
    cyclic GC off, a collection afterwards finds nothing unreachable of the node's: the freeze
    policy strands no garbage of ours (fails when a cycle is made per session or message)."""
    router = make_router()
    ws = websocket_server(router, max_connections=100)
    rs = rawsocket_server(router)
    try:
        _workload(ws.server_port, rs.server_port, 4)   # warm: module-level caches fill
        green_wait_for(lambda: not router.sessions, scaled(10), "every session ended")
        gevent.sleep(0.2)
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            _workload(ws.server_port, rs.server_port, 20)
            green_wait_for(lambda: not router.sessions, scaled(10), "every session ended")
            gevent.sleep(0.2)   # the ended sessions' greenlets run their last lines
            gc.collect()
            garbage = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}"
                                          for o in gc.garbage)
            gc.garbage.clear()
        finally:
            gc.set_debug(0)
            gc.enable()
    finally:
        rs.stop(timeout=1)
        ws.stop(timeout=1)
    # (the Popen object of the clients' process is this test's own)
    ours = {k: v for k, v in garbage.items() if not k.startswith("subprocess.")}
    assert not ours, f"cyclic garbage left by 20+20 sessions: {ours}"


# -- which policy a node gets ------------------------------------------------------------------

def _router(paths: dict, **extra) -> dict:
    return {"workers": [{"type": "router", "realms": [{"name": "realm1"}],
                         "transports": [{"type": "web", "endpoint": {"type": "tcp", "port": 1},
                                         "paths": paths}], **extra}]}


def test_auto_freezes_only_nodes_that_run_none_of_the_users_code():
    ws = {"type": "websocket"}
    assert hosted_code(_router({"ws": ws})) == []
    assert hosted_code(_router({"ws": ws, "/": {"type": "wsgi", "module": "m", "object": "a"}})
                       ) == ["workers[0].transports[0].paths./"]
    assert hosted_code(_router({"ws": ws}, components=[{"type": "class", "classname": "a.B",
                                                        "realm": "realm1"}])
                       ) == ["workers[0].components"]
    fn = {"type": "websocket", "auth": {"ticket": {"type": "function", "create": "m.f"}}}
    assert hosted_code(_router({"ws": fn})) == ["workers[0].transports[0].paths.ws.auth.ticket"]
    nested = {"type": "path", "paths": {"app": {"type": "wsgi", "module": "m", "object": "a"}}}
    assert hosted_code(_router({"api": nested})) == ["workers[0].transports[0].paths.api.paths.app"]
    # a guest or container worker runs in a process of its own
    assert hosted_code({"workers": [{"type": "container", "components": [{}]}]}) == []


INSTALLED = textwrap.dedent("""
    import gc, sys
    from geonode.config import load
    from geonode.node import install_gc
    print(install_gc(load(sys.argv[1])), gc.get_threshold()[2], flush=True)
""")


@pytest.mark.parametrize("gc_options, app, expected", [
    (None, False, "freeze 1"),
    (None, True, "default 10"),
    ({"policy": "default"}, False, "default 10"),
    ({"policy": "freeze", "backstop_interval": 600}, True, "freeze 1"),
])
def test_install_gc_follows_the_option(tmp_path, gc_options, app, expected):
    paths = {"ws": {"type": "websocket"}}
    if app:
        paths["/"] = {"type": "wsgi", "module": "gcapp", "object": "app"}
        (tmp_path / "gcapp.py").write_text("def app(environ, start_response):\n    return []\n")
    cfg = {"version": 2, **_router(paths)}
    cfg["workers"][0]["options"] = {"pythonpath": ["."]}
    if gc_options is not None:
        cfg["controller"] = {"options": {"gc": gc_options}}
    (tmp_path / "node.json").write_text(json.dumps(cfg))
    out = subprocess.run([sys.executable, "-c", INSTALLED, str(tmp_path / "node.json")],
                         capture_output=True, text=True, timeout=scaled(60), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


@pytest.mark.parametrize("gc_options, key", [
    ({"policy": "sometimes"}, "controller.options.gc.policy"),
    ({"backstop_interval": 0}, "controller.options.gc.backstop_interval"),
    ({"backstop_growth": 0}, "controller.options.gc.backstop_growth"),
    ({"freeze": True}, "controller.options.gc"),
])
def test_check_and_start_refuse_a_bad_gc_option_alike(tmp_path, gc_options, key):
    cfg = {"version": 2, **_router({"ws": {"type": "websocket"}}),
           "controller": {"options": {"gc": gc_options}}}
    (tmp_path / "node.json").write_text(json.dumps(cfg))
    for cmd in ("check", "start"):
        r = subprocess.run(geonode_cmd(cmd, "node.json"), capture_output=True, text=True,
                           cwd=tmp_path, timeout=scaled(30))
        assert r.returncode == 1, (cmd, r.stdout, r.stderr)
        assert key in r.stdout + r.stderr, (cmd, r.stdout + r.stderr)
        assert "Traceback" not in r.stderr
