"""TLS endpoints: certificate chains, HSTS on TLS only, client certificates (ca_certificates)."""

from __future__ import annotations

import socket
import ssl

import pytest
import requests
from support import scaled, web_node
from support.certs import certificate as _cert
from support.certs import new_key as _key
from support.certs import pem as _pem

APP = r'''
def app(environ, start_response):
    body = ("%s %s" % (environ["wsgi.url_scheme"], environ.get("PATH_INFO"))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.fixture(scope="module")
def pki() -> dict[str, str]:
    root_k, inter_k, leaf_k = _key(), _key(), _key()
    root = _cert("geonode test root", root_k, "geonode test root", root_k, ca=True)
    inter = _cert("geonode test intermediate", inter_k, "geonode test root", root_k, ca=True)
    leaf = _cert("127.0.0.1", leaf_k, "geonode test intermediate", inter_k, ca=False,
                 server=True)
    cca_k, cli_k, rogue_k = _key(), _key(), _key()
    client_ca = _cert("geonode client ca", cca_k, "geonode client ca", cca_k, ca=True)
    client = _cert("alice", cli_k, "geonode client ca", cca_k, ca=False, client=True)
    rogue = _cert("mallory", rogue_k, "mallory", rogue_k, ca=False, client=True)
    return {"root.pem": _pem(root), "inter.pem": _pem(inter), "server.crt": _pem(leaf),
            "server.key": _pem(leaf_k), "client_ca.pem": _pem(client_ca),
            "client.crt": _pem(client), "client.key": _pem(cli_k),
            "rogue.crt": _pem(rogue), "rogue.key": _pem(rogue_k)}


@pytest.fixture(scope="module")
def node(start_module_node, pki):
    tls = {"key": "server.key", "certificate": "server.crt", "chain_certificates": ["inter.pem"]}
    paths = {"/": {"type": "wsgi", "module": "tlsapp", "object": "app"}}
    cfg = web_node(paths, options={"hsts": True, "hsts_max_age": 1234},
                   worker_options={"pythonpath": ["."]})
    transports = cfg["workers"][0]["transports"]
    transports[0]["endpoint"]["tls"] = tls
    transports.append({
        "type": "web",
        "endpoint": {"type": "tcp", "port": "$PORT2", "interface": "127.0.0.1",
                     "tls": {**tls, "ca_certificates": ["client_ca.pem"]}},
        "paths": paths,
    })
    return start_module_node(cfg, files={"tlsapp.py": APP, **pki}, nports=2)


def test_https_with_chain_and_hsts(node):
    # The client trusts only the root: this works only if the intermediate is sent.
    r = requests.get(f"https://127.0.0.1:{node.port}/x", verify=str(node.dir / "root.pem"),
                     timeout=scaled(5))
    assert r.status_code == 200
    assert r.text == "https /x"
    assert r.headers["Strict-Transport-Security"] == "max-age=1234"
    assert f"listening on https://127.0.0.1:{node.port}" in node.log()


def test_plain_http_on_tls_port_fails_quietly(node):
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
    assert b"200 OK" not in data
    r = requests.get(f"https://127.0.0.1:{node.port}/", verify=str(node.dir / "root.pem"),
                     timeout=scaled(5))
    assert r.status_code == 200
    assert "Traceback" not in node.log()


def test_client_certificate_required(node):
    url = f"https://127.0.0.1:{node.ports[1]}/secure"
    verify = str(node.dir / "root.pem")
    r = requests.get(url, verify=verify, timeout=scaled(5),
                     cert=(str(node.dir / "client.crt"), str(node.dir / "client.key")))
    assert r.text == "https /secure"
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(url, verify=verify, timeout=scaled(5))
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(url, verify=verify, timeout=scaled(5),
                     cert=(str(node.dir / "rogue.crt"), str(node.dir / "rogue.key")))
    # Still serving, no traceback for the refused handshakes.
    r = requests.get(url, verify=verify, timeout=scaled(5),
                     cert=(str(node.dir / "client.crt"), str(node.dir / "client.key")))
    assert r.status_code == 200
    assert "Traceback" not in node.log()


def test_keep_alive_over_tls(node):
    ctx = ssl.create_default_context(cafile=str(node.dir / "root.pem"))
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5)) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            for path in (b"/one", b"/two"):
                s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                buf = b""
                while not buf.endswith(b"https " + path):
                    chunk = s.recv(4096)
                    assert chunk
                    buf += chunk
