"""Keys real Crossbar configs carry (issue 12): role ``allow-by-default``, realm ``stats`` and
``trace``, rawsocket ``serializer`` (the transports' tests start nodes with it)."""

from __future__ import annotations

import json

import pytest
from support.router import Client, make_router

from geonode.config import check
from geonode.config.model import parse_worker
from geonode.router.authorization import build_roles

pytestmark = pytest.mark.inprocess


def test_allow_by_default_allows_what_no_permission_names():
    worker = parse_worker({"realms": [{"name": "realm1", "roles": [
        {"name": "open", "allow-by-default": True,
         "permissions": [{"uri": "com.secret.", "match": "prefix",
                          "allow": {"call": False, "publish": True}}]},
        {"name": "closed", "permissions": []},
    ]}]})
    roles = build_roles(worker.realms[0].roles, realm=None)
    for action in ("call", "register", "publish", "subscribe"):
        assert roles["open"].authorize_now(None, "com.any.thing", action, {}).allow
        assert not roles["closed"].authorize_now(None, "com.any.thing", action, {}).allow
    # a matching permission still decides
    assert not roles["open"].authorize_now(None, "com.secret.x", "call", {}).allow
    assert roles["open"].authorize_now(None, "com.secret.x", "publish", {}).allow


def test_allow_by_default_through_the_router():
    import autobahn.wamp.message as m

    router = make_router({"name": "realm1", "roles": [{"name": "anonymous",
                                                       "allow-by-default": True}]})
    c = Client(router).joined()
    c.send(m.Register(c.next(), "com.x.proc"))
    assert isinstance(c.take(), m.Registered)


def test_crossbar_keys_accepted_by_check(tmp_path):
    cfg = {"version": 2, "workers": [{"type": "router", "realms": [{
        "name": "realm1", "trace": True,
        "stats": {"rated_message_size": 256, "trigger_on_join": True},
        "roles": [{"name": "anonymous", "allow-by-default": True, "permissions": []}]}],
        "transports": [{"type": "rawsocket", "serializer": "msgpack",
                        "endpoint": {"type": "tcp", "port": 9000}}]}]}
    path = tmp_path / "node.json"
    path.write_text(json.dumps(cfg))
    assert check(path) == []
    cfg["workers"][0]["realms"][0]["roles"][0]["allow-by-default"] = "yes"
    path.write_text(json.dumps(cfg))
    assert check(path) == ["workers[0].realms[0].roles[0].allow-by-default: must be true/false, "
                           "not a string ('yes')"]


def test_stats_and_trace_are_named_as_ignored(tmp_path):
    from geonode.config import load, warnings

    cfg = {"version": 2, "workers": [{"type": "router", "realms": [
        {"name": "realm1", "trace": True, "stats": {}}], "transports": []}]}
    path = tmp_path / "node.json"
    path.write_text(json.dumps(cfg))
    assert warnings(load(path)) == [
        "workers[0].realms[0].stats: ignored, realm statistics events is not supported by "
        "geonode",
        "workers[0].realms[0].trace: ignored, message tracing is not supported by geonode"]
