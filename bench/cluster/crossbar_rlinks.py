"""Two Crossbar nodes whose realm1 is joined by router-to-router links (rlinks), for
bench/cluster/run.py's Crossbar comparison.

Each node has a router worker with a WebSocket path ``ws`` (anonymous may do everything) and a
path ``rlink`` where the other node's rlink session authenticates with WAMP-cryptosign by its
node key (``.crossbar/key.pub``, made by a first start of the node). Each realm has an rlink
to the other node with ``forward_remote_events`` and without ``forward_local_events``: the
only setting of Crossbar 26.10.1 under which events crossed here. A link on node B alone (either
flag) delivered nothing to B's subscribers within 60 s; links both ways with
``forward_remote_events`` deliver, but an event published on A also comes back to A's
subscribers a second time through B (a loop): bench/cluster/run.py counts at most one event
per publication per subscriber and reports the duplicates.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import common


def _pubkey(cbdir: Path) -> str:
    text = (cbdir / "key.pub").read_text()
    m = re.search(r"public-key-ed25519:\s*([0-9a-f]{64})", text)
    if not m:
        raise RuntimeError(f"no public key in {cbdir / 'key.pub'}")
    return m.group(1)


def _config(port: int, peer_port: int, peer_key: str, rlink: bool) -> dict:
    allow = {"call": True, "register": True, "publish": True, "subscribe": True}
    perm = {"uri": "", "match": "prefix", "allow": allow,
            "disclose": {"caller": False, "publisher": False}, "cache": True}
    realm: dict = {"name": "realm1", "roles": [{"name": "anonymous", "permissions": [perm]},
                                               {"name": "rlink", "permissions": [perm]}]}
    if rlink:
        realm["rlinks"] = [{
            "id": "peer", "realm": "realm1",
            "transport": {"type": "websocket",
                          "endpoint": {"type": "tcp", "host": "127.0.0.1", "port": peer_port},
                          "url": f"ws://127.0.0.1:{peer_port}/rlink",
                          "serializers": ["cbor"]},
            "forward_local_events": False, "forward_remote_events": True,
            "forward_local_invocations": False, "forward_remote_invocations": False}]
    return {"version": 2, "controller": {}, "workers": [{
        "type": "router", "realms": [realm],
        "transports": [{"type": "web",
                        "endpoint": {"type": "tcp", "port": port, "interface": "127.0.0.1",
                                     "backlog": 1024},
                        "paths": {"ws": {"type": "websocket",
                                         "serializers": ["json", "msgpack"]},
                                  "rlink": {"type": "websocket", "auth": {"cryptosign": {
                                      "type": "static", "principals": {"peer": {
                                          "realm": "realm1", "role": "rlink",
                                          "authorized_keys": [peer_key]}}}}}}}]}]}


def start_pair(exe: str, work: Path) -> list[common.Server]:
    """Two linked Crossbar nodes (started, their rlinks connected), A then B."""
    dirs = [work / "crossbar-a", work / "crossbar-b"]
    ports = [common.free_port(), common.free_port()]
    # a first start makes each node's key pair
    for d, port in zip(dirs, ports, strict=True):
        cbdir = d / ".crossbar"
        common.write_config(cbdir, "config.json", _config(port, 0, "0" * 64, False))
        s = common.Server(d.name, common.crossbar_cmd(exe, cbdir), d, port,
                          work / f"{d.name}-keys.log")
        s.start()
        s.stop()
    keys = [_pubkey(d / ".crossbar") for d in dirs]
    servers = []
    for i, (d, port) in enumerate(zip(dirs, ports, strict=True)):
        cbdir = d / ".crossbar"
        cfg = _config(port, ports[1 - i], keys[1 - i], rlink=True)
        (cbdir / "config.json").write_text(json.dumps(cfg, indent=2))
        cmd = [exe, "start", "--cbdir", str(cbdir), "--loglevel", "info"]
        s = common.Server(d.name, cmd, d, port, work / f"{d.name}.log")
        s.start()
        servers.append(s)
    # both links up: each log says its rlink's remote session is ready
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:
        if all("rlink remote session ready" in s.log.read_text(errors="replace")
               for s in servers):
            return servers
        time.sleep(0.2)
    for s in servers:
        s.stop()
    raise RuntimeError(f"the Crossbar rlinks did not connect, see {work}/crossbar-*.log")
