"""A region runs where it says: on its cloud's core cluster when the core runs in its
location, else on a cluster of its own there (`regions[].cluster`). Before, every region was a
namespace on its cloud's core cluster and `regions[].location` was never read: prod's us-west
ran in us-east-1, eu-north in westeurope, ap-south in asia-southeast1."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from edgefabric.config import raw_from_stack_file
from tests.kits.config import config_problems as problems
from tests.unit.tiers.conftest import ROOT, rendered_stack
from tooling.render import Registered, Rendered, provider_name, render

PROD = raw_from_stack_file(ROOT / "Pulumi.prod.yaml")


def one(rendered: Rendered, typ: str, name: str) -> Registered:
    [found] = [r for r in rendered.of_type(typ) if r.name == name]
    return found


def on(rendered: Rendered, provider: str) -> set[str]:
    return {r.name for r in rendered.resources
            if r.type.startswith("kubernetes:") and provider_name(r.provider) == provider}


def test_prods_far_regions_get_clusters_of_their_own_where_they_are() -> None:
    r = rendered_stack("prod")
    regions = {x.name: x for x in r.of_type("pulumi:providers:aws")}
    assert regions["aws"].inputs["region"] == "us-east-1" and regions["us-west"].inputs["region"] == "us-west-2"
    eks = one(r, "aws:eks/cluster:Cluster", "us-west-cluster")
    assert eks.inputs["name"] == "edgefabric-prod-us-west"
    assert eks.provider.startswith(regions["us-west"].urn)
    assert one(r, "aws:ec2/vpc:Vpc", "us-west-vpc").provider.startswith(regions["us-west"].urn)
    # Its node group follows its own control plane and its own autoscaler resizes it.
    nodes = one(r, "aws:eks/nodeGroup:NodeGroup", "us-west-nodes")
    assert nodes.inputs["version"] == eks.inputs["version"]
    assert "us-west-autoscaler" in on(r, "us-west-k8s")
    aks = one(r, "azure-native:containerservice:ManagedCluster", "eu-north-cluster")
    assert aks.inputs["location"] == "swedencentral" and aks.inputs["disableLocalAccounts"] is True
    assert one(r, "azure-native:resources:ResourceGroup", "eu-north-rg").inputs["resourceGroupName"] == \
        "edgefabric-prod-eu-north"
    gke = one(r, "gcp:container/cluster:Cluster", "ap-south-cluster")
    assert gke.inputs["location"] == "asia-south1" and gke.inputs["name"] == "edgefabric-prod-ap-south"
    assert r.outputs["clusters"]["us-west"] == "edgefabric-prod-us-west"


@pytest.mark.parametrize(("region", "own", "core"), [
    ("us-west", "us-west-k8s", "aws-k8s"), ("eu-north", "eu-north-k8s", "azure-k8s"),
    ("ap-south", "ap-south-k8s", "gcp-k8s")])
def test_a_far_regions_services_run_on_its_cluster_and_nothing_of_the_core_does(region: str, own: str,
                                                                                core: str) -> None:
    r = rendered_stack("prod")
    services = {s["name"] for reg in PROD["regions"] if reg["name"] == region for s in reg["services"]}
    mine = on(r, own)
    assert {f"{region}-{s}" for s in services} <= mine
    assert not {n for n in on(r, core) if n.startswith(f"{region}-")}
    # A region cluster runs the region, not the core services (no core namespace, no gateway).
    assert not [n for n in mine if n.split("-", 2)[-1] in {s["name"] for s in PROD["core"]["services"]}
                and not n.startswith(f"{region}-")]


def test_a_region_where_its_core_runs_stays_on_the_core_cluster() -> None:
    r = rendered_stack("prod")
    assert "us-east-regional-gateway" in on(r, "aws-k8s")
    assert not [x for x in r.of_type("aws:eks/cluster:Cluster") if x.name.startswith("us-east")]


def prod(index: int, **changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(PROD)
    for key, value in changes.items():
        if value is None:
            raw["regions"][index].pop(key, None)
        else:
            raw["regions"][index][key] = value
    return raw


def test_a_far_region_without_a_cluster_is_refused() -> None:
    (line,) = problems(prod(1, cluster=None))  # us-west
    assert line.startswith("edgefabric:regions[1].cluster = None: a cluster size (as core.clusters.aws), or "
                           "regions[1].kubeconfigRef for one you run: the region is in 'us-west-2' and its "
                           "cloud's core in 'us-east-1'"), line


def test_a_cluster_for_a_region_where_the_core_runs_is_refused() -> None:
    (line,) = problems(prod(0, cluster=PROD["regions"][1]["cluster"]))  # us-east
    assert line.startswith("edgefabric:regions[0].cluster = {") and "no cluster: the region is in 'us-east-1'" in line


def test_a_location_the_cloud_does_not_have_is_refused() -> None:
    got = problems(prod(1, location="mars-west-1"))
    assert any(p.startswith("edgefabric:regions[1].location = 'mars-west-1': a aws region") for p in got), got


def test_no_cluster_of_its_own_on_a_cloud_this_stack_does_not_create() -> None:
    raw = prod(1)
    raw["clouds"]["aws"]["cluster"] = {"kubeconfigRef": "env:KUBECONFIG_AWS"}
    del raw["core"]["clusters"]["aws"]
    got = problems(raw)
    assert any(p.startswith("edgefabric:regions[1].cluster = {") and "clouds.aws brings its cluster" in p
               for p in got), got


def staging_with_a_far_region() -> tuple[dict[str, Any], str]:
    """staging (data flows on) with eu-west, its one azure region, moved to Sweden on a cluster
    of its own; the azure core stays in westeurope."""
    raw = copy.deepcopy(raw_from_stack_file(ROOT / "Pulumi.staging.yaml"))
    eu_west = next(i for i, reg in enumerate(raw["regions"]) if reg["name"] == "eu-west")
    raw["regions"][eu_west]["location"] = "swedencentral"
    raw["regions"][eu_west]["cluster"] = PROD["regions"][3]["cluster"]
    return raw, "eu-west"


def test_a_far_region_bridges_to_its_core_broker_across_the_network() -> None:
    """Before, a far region's bridge dialled the core broker by its in-cluster name, which no
    other cluster resolves, so the config refused data flows with far regions. Now the core
    broker of a cloud with a far region is behind a load balancer (MQTT over TLS, client
    certificates), the far region bridges to that address and the core's certificate carries it."""
    raw, region = staging_with_a_far_region()
    r = render(raw, stack="staging")  # the config is accepted: render raises ConfigError otherwise
    core_svc = one(r, "kubernetes:core/v1:Service", "azure-mqtt-core")
    assert core_svc.inputs["spec"]["type"] == "LoadBalancer"
    assert provider_name(core_svc.provider) == "azure-k8s"
    address = r.outputs["dataFlows"]["brokers"]["core-azure"]
    host, port = address.rsplit(":", 1)
    assert port == "8883" and not host.endswith(".svc.cluster.local")
    conf = one(r, "kubernetes:core/v1:ConfigMap", f"{region}-mqtt-config")
    assert provider_name(conf.provider) == f"{region}-k8s"
    assert f"address {address}\n" in conf.inputs["data"]["mosquitto.conf"]
    cert = one(r, "pulumi-python:dynamic/pki:Certificate", "core-azure-server")
    assert host in cert.inputs["hosts"]
    # The far region's own broker and its bridge Service run on its cluster.
    assert provider_name(one(r, "kubernetes:core/v1:Service", f"{region}-mqtt-bridge").provider) == f"{region}-k8s"
    # A cloud with no far region keeps its core broker in-cluster, and its regions dial that name.
    assert one(r, "kubernetes:core/v1:Service", "aws-mqtt-core").inputs["spec"].get("type") is None
    assert r.outputs["dataFlows"]["brokers"]["core-aws"] == "mqtt-core.edgefabric-dataflow.svc.cluster.local:8883"
    us_east = one(r, "kubernetes:core/v1:ConfigMap", "us-east-mqtt-config").inputs["data"]["mosquitto.conf"]
    assert "address mqtt-core.edgefabric-dataflow.svc.cluster.local:8883\n" in us_east


def test_more_far_regions_of_one_cloud_than_the_address_plan_holds_are_refused() -> None:
    raw = copy.deepcopy(PROD)
    far = next(r for r in raw["regions"] if r["name"] == "us-west")
    for k in range(10):  # us-west and ten copies: eleven aws far regions
        raw["regions"].append({**copy.deepcopy(far), "name": f"us-west-{k}"})
    got = [p for p in problems(raw) if "at most 9 regions of one cloud" in p]
    assert len(got) == 2 and got[0].startswith(f"edgefabric:regions[{len(PROD['regions']) + 8}].cluster = {{"), got


def test_a_far_region_may_bring_its_cluster_and_then_nothing_is_created_for_it() -> None:
    """`regions[].kubeconfigRef`, as `clouds.<cloud>.cluster.kubeconfigRef`: the region deploys
    onto that cluster through a provider of its own; no VPC, cluster or cloud provider is made."""
    raw = prod(1, cluster=None, kubeconfigRef="env:KUBECONFIG_US_WEST")  # us-west
    r = render(raw, stack="prod")
    assert not [x for x in r.resources if x.name.startswith("us-west-") and x.type.startswith(("aws:", "pulumi:providers:aws"))]
    provider = one(r, "pulumi:providers:kubernetes", "us-west-k8s")
    assert "kubeconfig" in provider.secret_inputs
    assert "us-west-regional-gateway" in on(r, "us-west-k8s")
    assert r.outputs["clusters"]["us-west"] == "env:KUBECONFIG_US_WEST"


def test_a_region_brings_a_cluster_or_is_sized_not_both() -> None:
    got = problems(prod(1, kubeconfigRef="env:KUBECONFIG_US_WEST"))
    assert any(p.startswith("edgefabric:regions[1].cluster = {") and "one or the other" in p for p in got), got


def test_a_region_where_its_core_runs_brings_no_cluster() -> None:
    got = problems(prod(0, kubeconfigRef="env:KUBECONFIG_US_EAST"))
    assert any(p.startswith("edgefabric:regions[0].kubeconfigRef = 'env:KUBECONFIG_US_EAST': none: the region is in "
                            "'us-east-1'") for p in got), got


def test_the_local_stacks_far_region_runs_on_another_local_cluster() -> None:
    """The local stack models a far region: us-west (aws, us-west-2) on the `edge` control
    plane, not on the aws one; the aws core broker is then behind a load balancer for its bridge."""
    r = rendered_stack("local")
    assert "us-west-regional-gateway" in on(r, "us-west-k8s")
    assert not {n for n in on(r, "aws-k8s") if n.startswith("us-west-")}
    assert one(r, "kubernetes:core/v1:Service", "aws-mqtt-core").inputs["spec"]["type"] == "LoadBalancer"
    assert r.outputs["clusters"]["us-west"] == "env:EDGEFABRIC_KUBECONFIG_EDGE"
