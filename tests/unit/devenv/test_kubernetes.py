"""devenv.kubernetes without a cluster: the PKI (a CA, certificates for loopback, kubeconfigs
only the owner can read), node manifests, and the messages when binaries are missing."""

from __future__ import annotations

import base64
import ipaddress
import json
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devenv import kubernetes as k8s
from devenv.processes import alive


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_pki_signs_loopback_serving_and_client_certs_and_keeps_them(tmp_path: Path) -> None:
    pki = k8s.Pki(tmp_path / "pki", "aws").ensure()
    ca = load(pki.ca_cert)
    serving = load(pki.path("apiserver.crt"))
    serving.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    eku = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    admin = load(pki.path("admin.crt"))
    admin.verify_directly_issued_by(ca)
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    cm = load(pki.path("controller-manager.crt"))
    assert cm.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:kube-controller-manager"
    for key in (*(tmp_path / "pki").glob("*.key"),):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    # A second ensure() (a restarted cluster) keeps the same CA and certificates.
    before = {p.name: p.read_bytes() for p in (tmp_path / "pki").iterdir()}
    k8s.Pki(tmp_path / "pki", "aws").ensure()
    assert {p.name: p.read_bytes() for p in (tmp_path / "pki").iterdir()} == before


def test_kubeconfig_is_private_and_self_contained(tmp_path: Path) -> None:
    pki = k8s.Pki(tmp_path / "pki", "gcp").ensure()
    out = pki.kubeconfig(tmp_path / "admin.kubeconfig", "https://127.0.0.1:16443", "admin", "gcp")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    cfg = yaml.safe_load(out.read_text())
    assert cfg["current-context"] == "gcp"
    assert cfg["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:16443"
    user = cfg["users"][0]["user"]
    assert base64.b64decode(user["client-certificate-data"]) == pki.path("admin.crt").read_bytes()
    api = k8s.KubeApi.from_kubeconfig(out)
    assert api.server == "https://127.0.0.1:16443"
    assert Path(api.session.cert[0]).read_bytes() == pki.path("admin.crt").read_bytes()  # type: ignore[index]


def test_node_manifest_declares_capacity_labels_taints_and_the_kwok_annotation() -> None:
    node = k8s.NodeSpec(
        "edge-1", cpu="2", memory="4Gi", ephemeral_storage="20Gi", pods=30,
        labels={"edgefabric.io/site": "berlin"}, taints=(k8s.Taint("edgefabric.io/edge", "true"),),
    ).manifest()  # fmt: skip
    assert node["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"}
    assert node["metadata"]["labels"]["edgefabric.io/site"] == "berlin"
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "edge-1"
    assert node["spec"]["taints"] == [{"key": "edgefabric.io/edge", "value": "true", "effect": "NoSchedule"}]
    want = {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "20Gi", "pods": "30"}
    assert node["status"]["capacity"] == want == node["status"]["allocatable"]


def test_missing_binaries_say_how_to_build_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFABRIC_CACHE", str(tmp_path))
    with pytest.raises(k8s.KubernetesError, match=r"tools/kubernetes/build\.sh"):
        k8s.find_binaries()
    with pytest.raises(k8s.KubernetesError, match=r"tools/kubernetes/build\.sh"):
        k8s.ensure_binaries(build=False)


def test_free_loopback_ports_are_distinct() -> None:
    ports = k8s.free_loopback_ports(6)
    assert len(set(ports)) == 6


def test_stop_from_dir_stops_recorded_components_and_spares_a_reused_pid(tmp_path: Path) -> None:

    def fake(argv0: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["bash", "-c", f"exec -a {argv0} sleep 60"])

    apiserver, kwok, stranger = fake("/cache/bin/kube-apiserver"), fake("/cache/bin/kwok"), fake("unrelated")
    try:
        pids = {"kube-apiserver": apiserver.pid, "kwok": kwok.pid, "kube-scheduler": stranger.pid}
        (tmp_path / "cluster.json").write_text(json.dumps({"name": "c", "pids": pids}))
        deadline = time.monotonic() + 5  # until both bashes have exec'd (each on its own time)
        while time.monotonic() < deadline and not all(
                (k8s.cluster_status(tmp_path) or {})["running"][c] for c in ("kube-apiserver", "kwok")):
            time.sleep(0.02)
        status = k8s.cluster_status(tmp_path)
        assert status is not None
        assert status["running"] == {"kube-apiserver": True, "kwok": True, "kube-scheduler": False}
        assert k8s.stop_from_dir(tmp_path)
        apiserver.wait(5)
        kwok.wait(5)
        assert alive(stranger.pid), "a pid that runs something else is left alone"
        assert k8s.cluster_status(tmp_path) is None and not k8s.stop_from_dir(tmp_path)
    finally:
        for p in (apiserver, kwok, stranger):
            p.kill()
            p.wait()
