"""The PKI providers' lifecycle, called the way the dynamic-provider host calls them."""

from __future__ import annotations

from typing import Any

import dill
from cryptography import x509

from edgefabric.dataflow.pki import common_name
from edgefabric.dynamic._unknown import UNKNOWN
from edgefabric.dynamic.pki import (
    PROVIDER_VERSION,
    SECRET_OUTPUTS,
    CertificateAuthorityProvider,
    CertificateProvider,
)


def _outs(outs: dict[str, Any] | None) -> dict[str, Any]:
    assert outs is not None
    return outs


def _ca() -> dict[str, Any]:
    result = CertificateAuthorityProvider().create({"common_name": "edgefabric dev", "provider_version": PROVIDER_VERSION})
    return _outs(result.outs)


def _leaf_props(ca: dict[str, Any], **over: object) -> dict[str, Any]:
    return {"common_name": "edge-factory-berlin", "usage": "server", "hosts": ["sensor-ingest.edge-x.svc", "10.0.0.7"],
            "ca_cert_pem": ca["cert_pem"], "ca_key_pem": ca["key_pem"], "provider_version": PROVIDER_VERSION} | over


def test_a_certificate_is_issued_by_the_stack_ca_for_its_names() -> None:
    ca = _ca()
    outs = _outs(CertificateProvider().create(_leaf_props(ca)).outs)
    cert = x509.load_pem_x509_certificate(outs["cert_pem"].encode())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca["cert_pem"].encode()))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["sensor-ingest.edge-x.svc"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    assert common_name(outs["cert_pem"]) == "edge-factory-berlin"
    assert outs["key_pem"].startswith("-----BEGIN PRIVATE KEY-----")
    # The CA key signed it and stays an input: never one of the certificate's outputs.
    assert "ca_key_pem" not in outs
    assert set(SECRET_OUTPUTS) == {"key_pem", "ca_key_pem"}


def test_the_pickled_providers_carry_no_key() -> None:
    ca = _ca()
    provider = CertificateProvider()
    provider.create(_leaf_props(ca))
    for pickled in (dill.dumps(provider, recurse=True), dill.dumps(CertificateAuthorityProvider(), recurse=True)):
        assert b"PRIVATE KEY" not in pickled and ca["key_pem"].encode() not in pickled


def test_any_change_of_what_the_certificate_says_replaces_it() -> None:
    ca = _ca()
    olds = _outs(CertificateProvider().create(_leaf_props(ca)).outs)
    same = CertificateProvider().diff("id", olds, _leaf_props(ca))
    assert not same.changes and not same.replaces
    moved = CertificateProvider().diff("id", olds, _leaf_props(ca, hosts=["203.0.113.9"]))
    assert moved.changes and moved.replaces == ["hosts"] and moved.delete_before_replace is False
    new_ca = _ca()
    reissued = CertificateProvider().diff("id", olds, _leaf_props(new_ca))
    assert reissued.replaces == ["ca_cert_pem"]
    # Preview: the load balancer's address is not known yet, so the hosts may change.
    assert CertificateProvider().diff("id", olds, _leaf_props(ca, hosts=[UNKNOWN])).replaces == ["hosts"]


def test_check_names_the_bad_input() -> None:
    ca = _ca()
    failures = CertificateProvider().check({}, _leaf_props(ca, usage="peer", common_name="")).failures
    assert {f.property for f in failures} == {"usage", "common_name"}
    failures = CertificateProvider().check({}, _leaf_props(ca, hosts=[])).failures
    assert [f.property for f in failures] == ["hosts"]
    assert CertificateProvider().check({}, _leaf_props(ca, hosts=UNKNOWN, ca_cert_pem=UNKNOWN)).failures == []


def test_read_keeps_what_state_holds_and_delete_forgets() -> None:
    outs = _ca()
    assert CertificateAuthorityProvider().read("ca-1", outs).outs == outs
    CertificateAuthorityProvider().delete("ca-1", outs)  # nothing outside state to remove
