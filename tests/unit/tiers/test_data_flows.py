"""`dataFlows` rendered under mocks: the core brokers, the configs and certificates mounted
into the regions' and sites' own brokers, and every private key kept secret."""

from __future__ import annotations

import base64
import copy
import io
import tarfile
from pathlib import Path

import pytest

from tooling.render import Registered, Rendered, provider_name, raw_from_stack_file, render

ROOT = Path(__file__).resolve().parents[3]
STAGING = raw_from_stack_file(ROOT / "Pulumi.staging.yaml")
SITES = {"factory-berlin": "eu-west", "store-austin": "us-east", "wind-farm-north-sea": "eu-west"}
CERT = "pulumi-python:dynamic/pki:Certificate"


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    raw = copy.deepcopy(STAGING)
    raw["dataFlows"] = {"sites": SITES}
    return render(raw, stack="staging")


def _one(rendered: Rendered, typ: str, name: str) -> Registered:
    found = [r for r in rendered.resources if r.type == typ and r.name == name]
    assert len(found) == 1, f"{typ}::{name}: {len(found)} registered"
    return found[0]


def test_without_data_flows_nothing_of_them_is_registered() -> None:
    raw = copy.deepcopy(STAGING)
    raw.pop("dataFlows", None)
    rendered = render(raw, stack="staging")
    assert not [r for r in rendered.resources if "dataflow" in r.type or "pki" in r.type]
    assert "dataFlows" not in rendered.outputs


def test_a_core_broker_runs_on_every_cloud_that_hosts_a_region(rendered: Rendered) -> None:
    for cloud in ("aws", "azure", "gcp"):
        deployment = _one(rendered, "kubernetes:apps/v1:Deployment", f"{cloud}-mqtt-core")
        assert provider_name(deployment.provider) == f"{cloud}-k8s"
        pod = deployment.inputs["spec"]["template"]["spec"]
        assert {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]} == {
            "/mosquitto/config", "/mosquitto/certs", "/mosquitto/data"}
        assert pod["securityContext"]["runAsUser"] == 1883
    assert rendered.outputs["dataFlows"]["brokers"]["core-aws"] == "mqtt-core.edgefabric-dataflow.svc.cluster.local:8883"


def test_the_regions_and_sites_own_brokers_mount_the_generated_config(rendered: Rendered) -> None:
    for name in ("eu-west-device-management", "factory-berlin-sensor-ingest"):
        pod = _one(rendered, "kubernetes:apps/v1:Deployment", name).inputs["spec"]["template"]["spec"]
        mounts = pod["containers"][0]["volumeMounts"]
        # Exactly one volume at each path: the data-flow config replaced the plain one.
        assert sorted((m["mountPath"], m["name"]) for m in mounts) == [
            ("/mosquitto/certs", "mqtt-certs"), ("/mosquitto/config", "mqtt-config"), ("/mosquitto/data", "mqtt-data")]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["mqtt-config"]["configMap"]["name"] == "mqtt-config"
        assert volumes["mqtt-certs"]["secret"] == {"secretName": "mqtt-certs", "defaultMode": 0o440}


def test_configs_name_their_upstream_and_carry_no_key(rendered: Rendered) -> None:
    region = _one(rendered, "kubernetes:core/v1:ConfigMap", "eu-west-mqtt-config")
    conf = region.inputs["data"]["mosquitto.conf"]
    assert "address mqtt-core.edgefabric-dataflow.svc.cluster.local:8883" in conf
    assert "topic telemetry/factory-berlin/# out 1" in conf and "topic telemetry/store-austin/#" not in conf
    site = _one(rendered, "kubernetes:core/v1:ConfigMap", "factory-berlin-mqtt-config")
    bridge = rendered.outputs["dataFlows"]["brokers"]["region-eu-west"]
    assert f"address {bridge}\n" in site.inputs["data"]["mosquitto.conf"]
    assert "user site-factory-berlin\ntopic write telemetry/factory-berlin/#" in site.inputs["data"]["acl"]
    # The site's ConfigMap lives in the namespace its EdgeSite made, through that site's provider.
    assert provider_name(site.provider) == "factory-berlin-k8s"
    assert any(d.endswith("kubernetes:core/v1:Namespace::factory-berlin-ns") for d in site.dependencies)
    for config_map in rendered.of_type("kubernetes:core/v1:ConfigMap"):
        assert "PRIVATE KEY" not in str(config_map.inputs), config_map.name


def test_every_private_key_is_secret(rendered: Rendered) -> None:
    secrets = [r for r in rendered.of_type("kubernetes:core/v1:Secret") if r.name.endswith("mqtt-certs")]
    assert len(secrets) == 3 + 3 + 1  # cores, regions, the kubernetes site
    assert all("stringData" in s.secret_inputs for s in secrets)
    certificates = rendered.of_type(CERT)
    # Per broker a server certificate and a local client one; per bridge one more.
    assert len(certificates) == 2 * (3 + 3 + 3) + (3 + 3)
    assert all("ca_key_pem" in c.secret_inputs for c in certificates)
    docker = _one(rendered, "docker:index/container:Container", "store-austin-sensor-ingest")
    assert "uploads" in docker.secret_inputs
    assert {u["file"] for u in docker.inputs["uploads"]} >= {"/mosquitto/config/mosquitto.conf",
                                                             "/mosquitto/certs/server.key"}
    native = _one(rendered, "command:remote:Command", "wind-farm-north-sea-sensor-ingest")
    assert "stdin" in native.secret_inputs
    assert native.inputs["create"].startswith("base64 -d | sudo tar -xzf - -C /")
    assert "PRIVATE KEY" not in native.inputs["create"]


def test_a_native_brokers_keys_are_its_credentials_and_its_data_its_state(rendered: Rendered) -> None:
    """The unit runs as a DynamicUser (edge_sites.systemd_unit): the keys go root-only into the
    directory it loads credentials from, and the broker reads them where systemd puts them."""
    native = _one(rendered, "command:remote:Command", "wind-farm-north-sea-sensor-ingest")
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(native.inputs["stdin"]))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        # Where the unit's ExecStart reads it (staging: `mosquitto -c /etc/mosquitto/mosquitto.conf`).
        conf = tar.extractfile(members["etc/mosquitto/mosquitto.conf"])
        assert conf is not None
        text = conf.read().decode()
    key = members["etc/edgefabric/credentials/sensor-ingest/server.key"]
    assert key.mode == 0o600
    assert not [name for name in members if name.endswith(".key") and "/credentials/" not in name]
    run = "/run/credentials/edgefabric-sensor-ingest.service"
    assert f"keyfile {run}/server.key\n" in text and f"cafile {run}/ca.crt\n" in text
    assert "persistence_location /var/lib/edgefabric/sensor-ingest/\n" in text
    assert "acl_file /etc/mosquitto/acl\n" in text and "etc/mosquitto/acl" in members
    # The unit the command writes loads that directory and owns that state directory.
    assert "LoadCredential=sensor-ingest:/etc/edgefabric/credentials/sensor-ingest" in native.inputs["create"]
    assert "StateDirectory=edgefabric/sensor-ingest" in native.inputs["create"]
