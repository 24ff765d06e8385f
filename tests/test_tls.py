"""TLS endpoints: certificate chains, HSTS on TLS only, client certificates (ca_certificates)."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl

import pytest
import requests
from conftest import web_node
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

APP = r'''
def app(environ, start_response):
    body = ("%s %s" % (environ["wsgi.url_scheme"], environ.get("PATH_INFO"))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key, issuer_name: str, issuer_key, *, ca: bool, server: bool = False,
          client: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                          crl_sign=True, content_commitment=False,
                                          key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False,
                                          decipher_only=False), critical=True)
    if server:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                            critical=False)
    if client:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(obj) -> str:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM).decode()
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


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
                     timeout=5)
    assert r.status_code == 200
    assert r.text == "https /x"
    assert r.headers["Strict-Transport-Security"] == "max-age=1234"
    assert f"listening on https://127.0.0.1:{node.port}" in node.log()


def test_plain_http_on_tls_port_fails_quietly(node):
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
    assert b"200 OK" not in data
    r = requests.get(f"https://127.0.0.1:{node.port}/", verify=str(node.dir / "root.pem"),
                     timeout=5)
    assert r.status_code == 200
    assert "Traceback" not in node.log()


def test_client_certificate_required(node):
    url = f"https://127.0.0.1:{node.ports[1]}/secure"
    verify = str(node.dir / "root.pem")
    r = requests.get(url, verify=verify, timeout=5,
                     cert=(str(node.dir / "client.crt"), str(node.dir / "client.key")))
    assert r.text == "https /secure"
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(url, verify=verify, timeout=5)
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(url, verify=verify, timeout=5,
                     cert=(str(node.dir / "rogue.crt"), str(node.dir / "rogue.key")))
    # Still serving, no traceback for the refused handshakes.
    r = requests.get(url, verify=verify, timeout=5,
                     cert=(str(node.dir / "client.crt"), str(node.dir / "client.key")))
    assert r.status_code == 200
    assert "Traceback" not in node.log()


def test_keep_alive_over_tls(node):
    ctx = ssl.create_default_context(cafile=str(node.dir / "root.pem"))
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            for path in (b"/one", b"/two"):
                s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                buf = b""
                while not buf.endswith(b"https " + path):
                    chunk = s.recv(4096)
                    assert chunk
                    buf += chunk
