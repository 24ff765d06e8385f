"""Router components: a user class joins with a geonode.wamp.Session; bad component configs."""

from __future__ import annotations

import pytest
from _wampclient import SyncClient
from conftest import launch, web_node

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
        import time

        deadline = time.monotonic() + 5
        while True:
            try:
                assert c.call("com.limited.greet", "bob") == "hi, bob (realm1/limited)"
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        # the role's permissions apply to components too
        assert c.call("com.limited.refused") == "wamp.error.not_authorized"
        # a handler on the pool publishing from its thread
        q = c.subscribe("com.limited.pong")
        c.publish("com.limited.ping", 5)
        assert q.get(timeout=5) == ([5], {})
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
        node.proc.wait(15)
    except Exception:
        pass
    log = node.log()
    node.stop()
    assert "workers[0].components[0].classname" in log, log
    assert needle in log, log
