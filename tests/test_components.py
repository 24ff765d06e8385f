"""Router components: a user class joins with a geonode.wamp.Session; bad component configs."""

from __future__ import annotations

import pytest
from support import launch, scaled, wait_for, web_node
from support.certs import self_signed
from support.wamp import SyncClient, wait_subscribed

ALL = {"call": True, "register": True, "publish": True, "subscribe": True}
REALM = {"name": "realm1", "roles": [
    {"name": "anonymous", "permissions": [{"uri": "", "match": "prefix", "allow": ALL}]},
    {"name": "limited", "permissions": [{"uri": "com.limited.", "match": "prefix",
                                         "allow": ALL}]}]}

COMPONENT = '''
class Greeter:
    def __init__(self, config):
        self.config = config

    def on_join(self, session):
        session.register("com.limited.greet", self.greet)
        try:
            session.register("com.other.greet", self.greet)
        except Exception as e:
            self.refused = e.error
        session.register("com.limited.refused", lambda: self.refused)

    def greet(self, name):
        return f"{self.config.extra['greeting']}, {name} ({self.config.realm}/{self.config.role})"


class NoArgs:
    def on_join(self, session):
        session.subscribe("com.limited.ping", lambda *a: session.publish("com.limited.pong", *a))
'''


def test_component_registers_with_its_role(start_node):
    comps = [{"type": "class", "classname": "mycomp.Greeter", "realm": "realm1",
              "role": "limited", "extra": {"greeting": "hi"}},
             {"type": "class", "classname": "mycomp.NoArgs", "realm": "realm1",
              "role": "limited"}]
    node = start_node(web_node({"ws": {"type": "websocket"}}, realms=[REALM],
                               worker_options={"pythonpath": ["."]}, components=comps),
                      files={"mycomp.py": COMPONENT})
    c = SyncClient(node.port)
    try:
        # the components join right after the node listens
        wait_subscribed(c, ("com.limited.ping",), ("com.limited.greet", "com.limited.refused"))
        assert c.call("com.limited.greet", "bob") == "hi, bob (realm1/limited)"
        # the role's permissions apply to components too
        assert c.call("com.limited.refused") == "wamp.error.not_authorized"
        # a handler on the pool publishing from its thread
        q = c.subscribe("com.limited.pong")
        c.publish("com.limited.ping", 5)
        assert q.get(timeout=scaled(5)) == ([5], {})
    finally:
        c.close()


@pytest.mark.parametrize("classname,needle", [
    ("nosuchmodule.Thing", "cannot import 'nosuchmodule'"),
    ("mycomp.Missing", "has no class 'Missing'"),
])
def test_bad_classname_names_the_path(tmp_path, classname, needle):
    comps = [{"type": "class", "classname": classname, "realm": "realm1"}]
    cfg = web_node({"ws": {"type": "websocket"}}, realms=[REALM],
                   worker_options={"pythonpath": ["."]}, components=comps)
    node = launch(cfg, tmp_path, files={"mycomp.py": COMPONENT}, wait=False)
    try:
        node.proc.wait(scaled(15))
    except Exception:
        pass  # still running: node.stop() below ends it, the assertions say what was wrong
    log = node.log()
    node.stop()
    assert "workers[0].components[0].classname" in log, log
    assert needle in log, log


@pytest.mark.parametrize("comp,needle", [
    ({"classname": "crossbar.bridge.rest.RESTCallee", "extra": {"procedure": "com.x"}},
     "workers[0].components[0].extra: RESTCallee needs 'procedure' and 'baseurl'"),
    ({"classname": "crossbar.bridge.rest.MessageForwarder",
      "extra": {"subscriptions": [{"topic": "com.x"}]}},
     "workers[0].components[0].extra.subscriptions[0]: needs 'topic' and 'url'"),
])
def test_bad_component_extra_is_a_config_error(tmp_path, comp, needle):
    cfg = web_node({"ws": {"type": "websocket"}}, realms=[REALM],
                   components=[{"type": "class", "realm": "realm1", **comp}])
    node = launch(cfg, tmp_path, wait=False)
    try:
        node.proc.wait(scaled(15))
    except Exception:
        pass  # still running: node.stop() below ends it, the assertions say what was wrong
    log = node.log()
    node.stop()
    assert node.proc.returncode == 1, log
    assert needle in log, log
    assert "Traceback" not in log, log


def _self_signed(tmp_path):
    """A key and a self-signed certificate for 127.0.0.1 (PEM files)."""
    cert, key = self_signed()
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_text(cert)
    key_path.write_text(key)
    return cert_path, key_path


def test_rest_callee_over_https(start_node, tmp_path):
    """Outgoing HTTPS (gevent's SSL): verified against ``tls_ca``; refused without it."""
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    cert, key = _self_signed(tmp_path)

    class Hello(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            body = f"secure {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"https://127.0.0.1:{srv.server_address[1]}/"
    comps = [{"type": "class", "classname": "crossbar.bridge.rest.RESTCallee", "realm": "realm1",
              "role": "limited", "id": "trusting",
              "extra": {"procedure": "com.limited.tls", "baseurl": base, "tls_ca": "ca.pem"}},
             {"type": "class", "classname": "crossbar.bridge.rest.RESTCallee", "realm": "realm1",
              "role": "limited", "id": "default",
              "extra": {"procedure": "com.limited.notrust", "baseurl": base, "timeout": 5}}]
    node = start_node(web_node({"ws": {"type": "websocket"}}, realms=[REALM], components=comps),
                      files={"ca.pem": cert.read_text()})
    c = SyncClient(node.port)
    try:
        from autobahn.wamp.exception import ApplicationError

        wait_subscribed(c, procedures=("com.limited.tls", "com.limited.notrust"))
        res = c.call("com.limited.tls", "GET", "hello")
        assert res["code"] == 200 and res["content"] == "secure /hello"
        with pytest.raises(ApplicationError) as ei:
            c.call("com.limited.notrust", "GET", "hello")
        assert ei.value.error == "wamp.error.runtime_error"
        assert "CERTIFICATE_VERIFY_FAILED" in str(ei.value.args[0])
    finally:
        c.close()
        srv.shutdown()


PROGRESS_COMPONENT = '''
import time


class Collector:
    def on_join(self, session):
        self.session = session
        session.register("com.limited.collect", self.collect)                 # a pool thread
        session.register("com.limited.collect_hub", self.collect, on_hub=True)  # a greenlet
        # two handlers on one subscription, only the first asks for details
        self.got = []
        session.subscribe("com.limited.mixed",
                          lambda v, details: self.got.append(["details", v, details.topic]),
                          details=True)
        session.subscribe("com.limited.mixed", lambda v: self.got.append(["plain", v]))
        session.register("com.limited.got", lambda: sorted(self.got))

    def collect(self, n):
        seen = []

        def on_progress(i):
            time.sleep(0.001)   # the scenario: monkey-patched, on the hub it switches greenlets
            seen.append(i)

        result = self.session.call("com.limited.count", n, on_progress=on_progress, timeout=10)
        return {"seen": seen, "result": result, "n": len(seen)}
'''


def test_call_with_on_progress(start_node):
    """A session's call(on_progress=) gets every progressive result, in order, before the
    final one, whether it waits in a pool thread or in a greenlet. (And: handlers sharing a
    subscription get details only when they asked.)"""
    from autobahn.wamp.types import RegisterOptions

    comps = [{"type": "class", "classname": "progcomp.Collector", "realm": "realm1",
              "role": "limited"}]
    node = start_node(web_node({"ws": {"type": "websocket"}}, realms=[REALM],
                               worker_options={"pythonpath": ["."]}, components=comps),
                      files={"progcomp.py": PROGRESS_COMPONENT})
    c = SyncClient(node.port)

    def count(n, details=None):
        assert details.progress is not None   # the in-process caller asked for progress
        for i in range(n):
            details.progress(i)
        return "done"

    try:
        wait_subscribed(c, ("com.limited.mixed",),
                        ("com.limited.collect", "com.limited.collect_hub", "com.limited.got"))
        c._run(lambda: c.session.register(count, "com.limited.count",
                                          options=RegisterOptions(details_arg="details")))
        for proc in ("com.limited.collect", "com.limited.collect_hub"):
            res = c.call(proc, 50)
            assert res == {"seen": list(range(50)), "result": "done", "n": 50}, proc
        c.publish("com.limited.mixed", 7)

        def both() -> list | None:
            got = c.call("com.limited.got")
            return got if len(got) >= 2 else None

        got = wait_for(both, 5, "both handlers of com.limited.mixed", interval=0.05)
        assert got == [["details", 7, "com.limited.mixed"], ["plain", 7]]
    finally:
        c.close()
