"""The stack's MQTT PKI: one CA per stack, and leaf certificates issued from it.

Pure functions over PEM text (Python `cryptography`), so that the dynamic provider
(`edgefabric.dynamic.pki`), the tests and the benchmark issue exactly the same certificates.
Keys are ECDSA P-256: as strong as RSA-3072 for TLS, and fast enough to issue one per site
and per bridge at every `pulumi up` that adds one.

The common name of a client certificate is the MQTT identity the brokers check their topic
ACLs against (`use_identity_as_username`): a certificate is a site's or a bridge's credential.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 825  # the CA/Browser Forum's old ceiling; brokers do not care, auditors do
# Issue certificates valid from a little in the past: a broker whose clock runs behind the
# issuer's would otherwise refuse a certificate fresh from `pulumi up`.
BACKDATE = dt.timedelta(minutes=5)

Usage = Literal["server", "client"]


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM. `key_pem` is secret wherever it goes."""

    cert_pem: str
    key_pem: str


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def new_ca(common_name: str, *, organization: str = "edgefabric", now: dt.datetime | None = None) -> Issued:
    """A self-signed CA that may issue leaves only (path length 0)."""
    now = now or dt.datetime.now(dt.UTC)
    key = _key()
    name = _name(common_name, organization)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def issue(ca: Issued, common_name: str, usage: Usage, *, hosts: tuple[str, ...] = (),
          organization: str = "edgefabric", now: dt.datetime | None = None) -> Issued:
    """A leaf signed by `ca`. A server certificate names `hosts` (DNS names or IP literals)
    as its subject alternative names, which bridges and clients verify; a client certificate
    carries only its common name, the identity the broker's ACL knows it by."""
    if usage == "server" and not hosts:
        raise ValueError(f"server certificate {common_name!r} needs at least one host name or address")
    now = now or dt.datetime.now(dt.UTC)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key issued by new_ca")
    key = _key()
    eku = ExtendedKeyUsageOID.SERVER_AUTH if usage == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organization)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_agreement=True, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, encipher_only=False, decipher_only=False),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def common_name(cert_pem: str) -> str:
    """The subject common name of a PEM certificate."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)
