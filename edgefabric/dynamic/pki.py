"""Dynamic resources for the MQTT data flows' PKI: the stack CA and the certificates it issues.

Python `cryptography` does the work (`edgefabric.dataflow.pki`); these providers only keep
the result in the stack's state. Rules they follow (see edgefabric/dynamic/registry.py):
- Providers hold no state: dill pickles the class and nothing else, so no key is ever in
  the pickled provider.
- Every private key (`key_pem`, and the CA key a certificate is signed with, `ca_key_pem`)
  is a secret: the resources list them in `additional_secret_outputs`, so the engine encrypts
  them in state and masks them in output, whatever the program does with them.
- A certificate is never edited in place: any change of what it says (name, hosts, usage,
  issuing CA) replaces it, create-before-delete, so a broker always has a valid one.
- read keeps what is in state (a certificate exists nowhere else); delete forgets it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pulumi
from cryptography import x509
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
)

from edgefabric.dataflow.pki import Issued, issue, new_ca
from edgefabric.dynamic._unknown import is_unknown

# Bump when the issued certificates change shape, so that existing ones are replaced.
PROVIDER_VERSION = "1"
SECRET_OUTPUTS = ["key_pem", "ca_key_pem"]
USAGES = ("server", "client")


def _facts(cert_pem: str) -> dict[str, Any]:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return {"serial": format(cert.serial_number, "x"),
            "not_after": cert.not_valid_after_utc.astimezone(dt.UTC).isoformat()}


def _changed(olds: dict[str, Any], news: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [k for k in keys if is_unknown(news.get(k)) or news.get(k) != olds.get(k)]


class CertificateAuthorityProvider(ResourceProvider):
    """The per-stack CA: a self-signed certificate and its key."""

    KEYS = ("common_name", "provider_version")

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        name = news.get("common_name")
        failures = [] if is_unknown(name) or (isinstance(name, str) and 0 < len(name) <= 64) else [
            CheckFailure("common_name", f"common_name must be 1..64 characters, got {name!r}")]
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = _changed(olds, news, self.KEYS)
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        ca = new_ca(str(props["common_name"]))
        outs = {k: props[k] for k in self.KEYS} | {"cert_pem": ca.cert_pem, "key_pem": ca.key_pem}
        facts = _facts(ca.cert_pem)
        return CreateResult(id_=f"ca-{facts['serial']}", outs=outs | facts)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


class CertificateProvider(ResourceProvider):
    """A leaf certificate signed by the stack CA: a broker's server certificate, or a site's
    or a bridge's client certificate (its common name is the identity the ACLs name)."""

    KEYS = ("common_name", "usage", "hosts", "ca_cert_pem", "provider_version")

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures: list[CheckFailure] = []
        usage, hosts, name = news.get("usage"), news.get("hosts"), news.get("common_name")
        if not is_unknown(usage) and usage not in USAGES:
            failures.append(CheckFailure("usage", f"usage must be one of {', '.join(USAGES)}, got {usage!r}"))
        if not is_unknown(name) and not (isinstance(name, str) and 0 < len(name) <= 64):
            failures.append(CheckFailure("common_name", f"common_name must be 1..64 characters, got {name!r}"))
        if usage == "server" and not is_unknown(hosts) and not hosts:
            failures.append(CheckFailure("hosts", "a server certificate names at least one host or address"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = _changed(olds, news, self.KEYS)
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        ca = Issued(str(props["ca_cert_pem"]), str(props["ca_key_pem"]))
        leaf = issue(ca, str(props["common_name"]), props["usage"], hosts=tuple(props.get("hosts") or ()))
        # The CA key is an input only: it is not copied into this resource's outputs.
        outs = {k: props.get(k) for k in self.KEYS} | {"cert_pem": leaf.cert_pem, "key_pem": leaf.key_pem}
        facts = _facts(leaf.cert_pem)
        return CreateResult(id_=f"{props['common_name']}-{facts['serial']}", outs=outs | facts)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


class CertificateAuthority(Resource, module="pki", name="CertificateAuthority"):
    """The stack's MQTT CA. Outputs: cert_pem, key_pem (secret), serial, not_after."""

    cert_pem: pulumi.Output[str]
    key_pem: pulumi.Output[str]
    serial: pulumi.Output[str]
    not_after: pulumi.Output[str]

    def __init__(self, resource_name: str, *, common_name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {"common_name": common_name, "provider_version": PROVIDER_VERSION,
                 "cert_pem": None, "key_pem": None, "serial": None, "not_after": None}
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=SECRET_OUTPUTS))
        super().__init__(CertificateAuthorityProvider(), resource_name, props, opts)


class Certificate(Resource, module="pki", name="Certificate"):
    """A certificate from `ca`. Outputs: cert_pem, key_pem (secret), serial, not_after."""

    cert_pem: pulumi.Output[str]
    key_pem: pulumi.Output[str]
    serial: pulumi.Output[str]
    not_after: pulumi.Output[str]

    def __init__(self, resource_name: str, *, ca: CertificateAuthority, common_name: str, usage: str,
                 hosts: pulumi.Input[list[str]] | None = None, opts: pulumi.ResourceOptions | None = None) -> None:
        # Secret already (additional_secret_outputs of the CA); wrapped again so that this
        # input is encrypted in state even if the CA's output marking ever changes.
        ca_key: pulumi.Output[str] = pulumi.Output.secret(ca.key_pem)
        props = {
            "common_name": common_name, "usage": usage, "hosts": hosts or [],
            "ca_cert_pem": ca.cert_pem,
            "ca_key_pem": ca_key,
            "provider_version": PROVIDER_VERSION,
            "cert_pem": None, "key_pem": None, "serial": None, "not_after": None,
        }
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=SECRET_OUTPUTS))
        super().__init__(CertificateProvider(), resource_name, props, opts)
