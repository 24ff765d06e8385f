"""Certificates made in the test (no files shipped): a self-signed one for 127.0.0.1, and the
pieces for a small PKI (keys, CA/server/client certificates, PEM text)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Pki", "new_key", "certificate", "pem", "pki", "self_signed", "tls_files"]


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def certificate(subject: str, key: Any, issuer_name: str, issuer_key: Any, *, ca: bool,
                server: bool = False, client: bool = False,
                expired: bool = False) -> x509.Certificate:
    """A certificate for ``key`` signed by ``issuer_key``, valid from 5 minutes ago for a day
    (``expired``: it ended a day ago); ``server``: for 127.0.0.1 and localhost; ``client``: for
    client authentication."""
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2 if expired else 0)
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


def pem(obj: Any) -> str:
    """PEM text of a certificate or a private key (PKCS8, unencrypted)."""
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM).decode()
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def self_signed(key: Any = None) -> tuple[str, str]:
    """(certificate PEM, private key PEM) for 127.0.0.1; usable as its own CA (``tls_ca``).
    ``key``: the private key to certify (default: a new EC key; DHE-RSA suites need RSA)."""
    key = new_key() if key is None else key
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return pem(cert), pem(key)


def tls_files(cert: str = "server.crt", key: str = "server.key") -> dict[str, str]:
    """A fresh self-signed pair as ``launch(files=...)`` takes it: {file name: PEM text}."""
    cert_pem, key_pem = self_signed()
    return {cert: cert_pem, key: key_pem}


@dataclass(frozen=True)
class Pki:
    """The PEM files of ``pki``: a CA, a server and a client certificate it signed, and a
    CA that signed neither (a wrong ``ca_certificates``)."""
    folder: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path

    def texts(self) -> dict[str, str]:
        """{file name: PEM text} of the client's side (``launch(files=...)``)."""
        return {p.name: p.read_text() for p in (self.ca, self.client_cert, self.client_key,
                                               self.other_ca)}


def pki(folder: Path) -> Pki:
    """A small PKI written to ``folder``: ca.crt, server.crt/.key (127.0.0.1, localhost),
    client.crt/.key, other-ca.crt."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, other_key = new_key(), new_key()
    server_key, client_key = new_key(), new_key()
    texts = {
        "ca.crt": pem(certificate("test CA", ca_key, "test CA", ca_key, ca=True)),
        "other-ca.crt": pem(certificate("other CA", other_key, "other CA", other_key, ca=True)),
        "server.crt": pem(certificate("127.0.0.1", server_key, "test CA", ca_key, ca=False,
                                      server=True)),
        "server.key": pem(server_key),
        "client.crt": pem(certificate("client", client_key, "test CA", ca_key, ca=False,
                                      client=True)),
        "client.key": pem(client_key),
    }
    for name, text in texts.items():
        (folder / name).write_text(text)
    return Pki(folder, folder / "ca.crt", folder / "server.crt", folder / "server.key",
               folder / "client.crt", folder / "client.key", folder / "other-ca.crt")
