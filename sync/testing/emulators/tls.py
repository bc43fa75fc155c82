"""Throwaway TLS material for local emulators that real clients must reach over https.

MSAL refuses an authority that is not ``https://host/tenant`` (``msal.authority.canonicalize``),
so the Microsoft emulator serves TLS. :func:`make_certificate` creates, in memory, a private CA
and a server certificate it signed for 127.0.0.1 and localhost (IP and DNS subjectAltNames,
serverAuth). Clients trust the CA file only — ``requests.Session().verify = ca_file`` — never
the system store, so nothing outside the test process trusts these keys.

A CA plus a leaf (rather than one self-signed leaf used as its own trust anchor) keeps strict
verifiers happy too (Python 3.13's ``VERIFY_X509_STRICT`` rejects a trust anchor without
CA:TRUE and key identifiers). Keys are EC P-256: generating them takes milliseconds.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import os
import shutil
import ssl
import tempfile
import weakref
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TestCertificate", "TlsFiles", "make_certificate", "server_context", "write_files"]


@dataclass(frozen=True)
class TestCertificate:
    __test__ = False  # not a pytest test class despite the name

    ca_pem: bytes  # what clients trust
    cert_pem: bytes  # server certificate followed by the CA (the chain the server sends)
    key_pem: bytes  # server private key (unencrypted PKCS#8)
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class TlsFiles:
    directory: str
    ca_file: str
    cert_file: str
    key_file: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "calsync emulator"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@functools.lru_cache(maxsize=8)
def make_certificate(hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), days: int = 30) -> TestCertificate:
    """A CA and a server certificate for ``hosts`` (IP literals become IP SANs). Cached per process."""
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(days=1), now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("calsync emulator test CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0])).issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_pem = ca_cert.public_bytes(pem)
    return TestCertificate(
        ca_pem=ca_pem,
        cert_pem=cert.public_bytes(pem) + ca_pem,
        key_pem=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        hosts=tuple(hosts),
    )


def write_files(cert: TestCertificate, owner: object | None = None) -> TlsFiles:
    """Write the CA, chain and key to a fresh private temp directory.

    With ``owner``, the directory is removed when ``owner`` is garbage-collected (or at exit).
    """
    directory = tempfile.mkdtemp(prefix="calsync-tls-")
    paths = {}
    for name, data in (("ca.pem", cert.ca_pem), ("cert.pem", cert.cert_pem), ("key.pem", cert.key_pem)):
        path = os.path.join(directory, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        paths[name] = path
    if owner is not None:
        weakref.finalize(owner, shutil.rmtree, directory, True)
    return TlsFiles(directory, paths["ca.pem"], paths["cert.pem"], paths["key.pem"])


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A server-side context presenting the emulator certificate (TLS 1.2+)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(files.cert_file, files.key_file)
    return ctx
