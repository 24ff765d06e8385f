"""What Crossbar's own example configs carry that geonode serves its own way (the corpus of
bench/compat/corpus.py; docs/transports.md "Keys of older Crossbar configs"):

- controller ``fabric`` (the uplink to a Crossbar FX master): ignored, one warning;
- an endpoint's ``tls.dhparam`` that OpenSSL refuses as too small (1024 bits): served without
  the DHE cipher suites, one warning (docs/security.md);
- identical workers on one ``"shared": true`` port (Crossbar's one process per core): served
  by the first, one warning; workers that differ are still refused.

For each, ``geonode check`` passes and prints the warning, and ``geonode start`` logs the same
line and serves (before: check and start both refused these configs).
"""

from __future__ import annotations

import base64
import copy
import json
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import requests
from support import geonode_cmd, launch, scaled, web_node
from support.config import realm
from support.ws import RawWebSocket

# The MODP groups of RFC 2409 §6.2 (1024 bits) and RFC 3526 §3 (2048 bits), generator 2.
_RFC2409_GROUP2 = (
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
    "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
    "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF")
_RFC3526_GROUP14 = (
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
    "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
    "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
    "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
    "F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6"
    "955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF")


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    size = bytes([n]) if n < 128 else (
        bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8,
                                                                   "big"))
    return bytes([tag]) + size + body


def dhparam_pem(prime_hex: str) -> str:
    """PKCS#3 DHParameter {prime, generator 2} as ``openssl dhparam`` writes it."""
    p = int(prime_hex, 16)
    body = (_der(0x02, p.to_bytes(p.bit_length() // 8 + 1, "big")) + _der(0x02, b"\x02"))
    b64 = base64.b64encode(_der(0x30, body)).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN DH PARAMETERS-----\n" + "\n".join(lines) + "\n-----END DH PARAMETERS-----\n"


@pytest.fixture(scope="module")
def rsa_pair() -> dict[str, str]:
    """A self-signed RSA certificate for 127.0.0.1 (DHE-RSA suites need an RSA key)."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from support.certs import self_signed

    cert, key = self_signed(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return {"server.crt": cert, "server.key": key}


def check_warnings(folder: Path) -> list[str]:
    """``geonode check`` on the folder's node.json: it must pass; its warning lines."""
    r = subprocess.run(geonode_cmd("check", str(folder / "node.json")), cwd=folder,
                       capture_output=True, text=True, timeout=scaled(60))
    assert r.returncode == 0 and "ok:" in r.stdout, r.stdout + r.stderr
    return [ln.removeprefix("warning: ") for ln in r.stderr.splitlines()
            if ln.startswith("warning: ")]


JSON_ROOT = {"/": {"type": "json", "value": {"served": True}}}


# ---------------------------------------------------------------------- controller.fabric
def test_fabric_is_ignored_with_one_warning(tmp_path):
    cfg = web_node(JSON_ROOT)
    cfg["controller"] = {"fabric": {"transport": {
        "type": "websocket", "url": "ws://localhost:9000/ws",
        "endpoint": {"type": "tcp", "host": "cfx_master", "port": 9000, "timeout": 5}}}}
    node = launch(cfg, tmp_path / "node")
    try:
        line = ("controller.fabric: ignored, the uplink to a Crossbar FX management master is "
                "not supported by geonode (the node runs on its own)")
        assert check_warnings(node.dir) == [line]
        node.wait_log(line)
        assert requests.get(node.url + "/", timeout=scaled(5)).json() == {"served": True}
    finally:
        node.stop()


# ---------------------------------------------------------------------- tls.dhparam too small
def _handshake(port: int, ca: Path, cipher: str | None) -> str:
    """A TLS 1.2 handshake offering only ``cipher`` (all when None); the cipher chosen."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca))
    if cipher:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(cipher)
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        return s.cipher()[0]


@pytest.mark.parametrize("bits", [1024, 2048])
def test_a_too_small_dhparam_serves_without_dhe(bits, rsa_pair, tmp_path):
    cfg = web_node(JSON_ROOT)
    cfg["workers"][0]["transports"][0]["endpoint"]["tls"] = {
        "certificate": "server.crt", "key": "server.key", "dhparam": "dh.pem"}
    group = _RFC2409_GROUP2 if bits == 1024 else _RFC3526_GROUP14
    node = launch(cfg, tmp_path / "node", files={**rsa_pair, "dh.pem": dhparam_pem(group)})
    try:
        warned = check_warnings(node.dir)
        ca = node.dir / "server.crt"
        r = requests.get(f"https://127.0.0.1:{node.port}/", verify=str(ca), timeout=scaled(5))
        assert r.json() == {"served": True}
        ecdhe = "ECDHE-RSA-AES128-GCM-SHA256"
        assert _handshake(node.port, ca, ecdhe) == ecdhe
        dhe = "DHE-RSA-AES128-GCM-SHA256"
        if bits == 2048:  # a file OpenSSL takes: DHE as configured
            assert warned == []
            assert _handshake(node.port, ca, dhe) == dhe
            return
        line = (f"workers[0].transports[0].endpoint.tls.dhparam: ignored, OpenSSL refuses the "
                f"DH parameters in {(node.dir / 'dh.pem').resolve()} as too small ([SSL: "
                "DH_KEY_TOO_SMALL] dh key too small")
        assert len(warned) == 1 and warned[0].startswith(line), warned
        assert "DHE cipher suites are off, ECDHE and TLS 1.3 work" in warned[0]
        node.wait_log(line)
        with pytest.raises(ssl.SSLError):
            _handshake(node.port, ca, dhe)
        assert node.proc.poll() is None
    finally:
        node.stop()


@pytest.mark.inprocess
def test_a_dhparam_file_that_is_no_dh_is_still_refused(rsa_pair, tmp_path):
    from geonode.config import ConfigError
    from geonode.config.tls import server_context, weak_dhparam

    for name, text in rsa_pair.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "dh.pem").write_text(rsa_pair["server.crt"])  # a PEM, but no DH parameters
    tls = {"certificate": "server.crt", "key": "server.key", "dhparam": "dh.pem"}
    assert weak_dhparam(tls, tmp_path) is None  # not "too small": refused, not warned about
    with pytest.raises(ConfigError) as e:
        server_context(tls, tmp_path, "ep")
    assert e.value.errors[0].startswith("ep.tls.dhparam: ")


# ---------------------------------------------------------------------- shared port copies
def _testee(cpu: int) -> dict:
    return {"type": "websocket-testee", "options": {"cpu_affinity": [cpu]},
            "transport": {"type": "websocket", "url": "ws://localhost:8080",
                          "endpoint": {"type": "tcp", "port": "$PORT", "interface": "127.0.0.1",
                                       "backlog": 2048, "shared": True}}}


def test_identical_workers_on_a_shared_port_are_served_by_one(tmp_path):
    # benchmark/websocket of crossbar-examples: one testee worker per core
    cfg = {"version": 2, "controller": {"fabric": {}},
           "workers": [_testee(cpu) for cpu in range(3)]}
    node = launch(cfg, tmp_path / "node", args=("--loglevel", "info"))
    port = node.port
    try:
        line = (f"workers[0].transport.endpoint.shared: 3 workers share port {port}: served "
                "by one process (workers[1], workers[2] identical to workers[0] but for "
                "process options, not started); use --processes 3 for 3 cores")
        assert line in check_warnings(node.dir)
        node.wait_log(line)
        node.wait_log("workers[2]: served by workers[0]")
        for _ in range(3):
            c = RawWebSocket(port)
            assert c.status == 101
            c.send_frame(1, b"echo")
            assert c.recv_message() == (1, b"echo")
            c.close()
    finally:
        node.stop()


@pytest.mark.inprocess
def test_router_copies_are_one_router_and_differing_ones_are_refused(tmp_path):
    from geonode.config import ConfigError, load, warnings

    base = web_node({"ws": {"type": "websocket"}}, realms=[realm()], port=8080)
    base["workers"][0]["transports"][0]["endpoint"]["shared"] = True
    same = copy.deepcopy(base)
    second = copy.deepcopy(base["workers"][0])
    second["id"] = "router2"
    second.setdefault("options", {})["title"] = "the second"
    same["workers"].append(second)
    path = tmp_path / "node.json"
    path.write_text(json.dumps(same))
    cfg = load(path)
    assert [(w.disabled, w.served_by) for w in cfg.model.workers] == [
        (False, None), (True, "workers[0]")]
    [line] = warnings(cfg)
    assert line.startswith("workers[0].transports[0].endpoint.shared: 2 workers share port "
                           "8080: served by one process (workers[1] identical")
    assert line.endswith("use --processes 2 for 2 cores (a router serving WAMP needs "
                         "options.backplane for it: docs/scaling.md)")

    other = copy.deepcopy(same)
    other["workers"][1]["realms"][0]["name"] = "realm2"
    path.write_text(json.dumps(other))
    with pytest.raises(ConfigError) as e:
        load(path)
    assert e.value.errors == [
        "workers[1].transports[0].endpoint.shared: port 8080 is shared with "
        "workers[0].transports[0].endpoint, which differs: router workers sharing a port is not "
        "supported by geonode unless identical (one process serves the port: give each its own "
        "port, or make them identical but for process options)"]


# ---------------------------------------------------------------------- import errors
@pytest.mark.inprocess
def test_a_component_module_that_is_missing_names_no_importlib_line(tmp_path, monkeypatch):
    # containers/failures/router/failure1 said "... No module named 'myapp'
    # (/usr/lib/python3.11/importlib/__init__.py, line 126)": a line of importlib, not the user's
    from geonode.config import ConfigError
    from geonode.config.imports import component_class
    from geonode.config.model import Component

    def refusal(classname: str) -> str:
        with pytest.raises(ConfigError) as e:
            component_class(Component(classname=classname, realm="realm1",
                                      json_path="workers[0].components[0]"))
        return e.value.errors[0]

    assert refusal("no_such_module_here.Session") == (
        "workers[0].components[0].classname: cannot import 'no_such_module_here': "
        "ModuleNotFoundError: No module named 'no_such_module_here'")
    # a module that is there but imports a missing one: its own line is named
    (tmp_path / "halfthere.py").write_text("import os\nimport no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert refusal("halfthere.Session").endswith(
        f"No module named 'no_such_dependency' ({tmp_path / 'halfthere.py'}, line 2)")


@pytest.mark.inprocess
def test_a_worker_without_a_type_is_named_once(tmp_path):
    # xbr/teststack1/master (a Crossbar FX master's template: "COPY" markers, no worker type)
    # was "transport type 'None' is not supported by geonode" three times: the model had read
    # the untyped worker as a router
    from geonode.config import check

    path = tmp_path / "node.json"
    path.write_text(json.dumps({"version": 2, "workers": [
        {"transports": ["COPY", {"endpoint": {"port": 9000}, "paths": {}}]}, "COPY"]}))
    assert check(path) == ["workers[0].type: 'type' is required",
                           "workers[1]: must be an object, not a string ('COPY')"]
