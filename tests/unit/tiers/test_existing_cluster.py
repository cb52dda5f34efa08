"""A cloud that brings its cluster (`clouds.<cloud>.cluster.kubeconfigRef`), rendered under mocks:
the core deploys onto that cluster through a `kubernetes.Provider` made from the secret
kubeconfig, and creates no cloud provider and no cloud resource for it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from edgefabric.config import AwsCloud, ClusterSize, ExistingCluster
from edgefabric.tiers.cloud_core import CloudCoreArgs
from tests.unit.tiers.conftest import rendered_stack
from tooling.render import Rendered, provider_name, raw_from_stack_file, render, resolve

ROOT = Path(__file__).resolve().parents[3]
DEV = raw_from_stack_file(ROOT / "Pulumi.dev.yaml")
KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: [{name: team, cluster: {server: https://10.0.0.1}}]\n"
VAR = "TEAM_AWS_KUBECONFIG"


@pytest.fixture(scope="module")
def dev_with_aws_cluster() -> Rendered:
    raw = copy.deepcopy(DEV)
    raw["clouds"]["aws"]["cluster"] = {"kubeconfigRef": f"env:{VAR}"}
    del raw["core"]["clusters"]["aws"]
    return render(raw, stack="dev", env={VAR: KUBECONFIG})


def test_no_cloud_provider_and_no_cloud_resource_for_the_cloud(dev_with_aws_cluster: Rendered) -> None:
    core = [r for r in dev_with_aws_cluster.resources if "edgefabric:core:CloudCore" in r.urn]
    assert not [r.type for r in core if r.type.startswith(("aws:", "pulumi:providers:aws"))]
    # Route53 is still the stack's DNS: the traffic tier reaches it through a provider of its own.
    on_aws = {r.type for r in dev_with_aws_cluster.resources if r.type.startswith(("aws:", "pulumi:providers:aws"))}
    assert on_aws == {"pulumi:providers:aws", "aws:route53/record:Record", "aws:route53/healthCheck:HealthCheck"}
    assert all("edgefabric:traffic:GlobalTraffic$" in r.urn for r in dev_with_aws_cluster.resources
               if r.type in on_aws)
    types = {r.type for r in dev_with_aws_cluster.resources}
    # The other clouds still get their managed clusters and providers.
    assert {"azure-native:containerservice:ManagedCluster", "gcp:container/cluster:Cluster",
            "pulumi:providers:azure-native", "pulumi:providers:gcp"} <= types


def test_the_core_deploys_through_a_provider_made_from_the_secret_kubeconfig(dev_with_aws_cluster: Rendered) -> None:
    rendered = dev_with_aws_cluster
    [provider] = [r for r in rendered.of_type("pulumi:providers:kubernetes") if r.name == "aws-k8s"]
    assert provider.inputs["kubeconfig"] == KUBECONFIG
    assert "kubeconfig" in provider.secret_inputs, "the kubeconfig went in plain"
    assert provider.parent.endswith("edgefabric:core:CloudCore::aws")
    core = rendered.namespace["cores"]["aws"]
    assert core.provider is None
    assert resolve(core.kubeconfig) == (KUBECONFIG, True)
    assert rendered.outputs["clusters"]["aws"] == f"env:{VAR}"  # where it comes from, no secret
    # The core services and the region of aws run on that cluster, through that provider.
    on_aws = {r.name for r in rendered.resources
              if r.type.startswith("kubernetes:") and provider_name(r.provider) == "aws-k8s"}
    services = [s["name"] for s in DEV["core"]["services"]]
    assert {f"aws-{s}" for s in services} <= on_aws
    assert {f"us-east-{s['name']}" for s in DEV["regions"][0]["services"]} <= on_aws
    assert "registry-aws-agent" in on_aws


def test_the_global_record_follows_the_clusters_load_balancer(dev_with_aws_cluster: Rendered) -> None:
    rendered = dev_with_aws_cluster
    # As on EKS: the api-gateway Service's load balancer, which on AWS reports a hostname.
    assert rendered.outputs["ingress"]["aws"].endswith(".elb.us-east-1.amazonaws.com")
    [failover] = rendered.of_type("pulumi-python:dynamic/failover:WeightedFailover")
    assert failover.inputs["endpoints"]["aws"]["address"] == rendered.outputs["ingress"]["aws"]
    # Route53 checks the cluster's load balancer by its name, as it reports one.
    [check] = [c for c in rendered.of_type("aws:route53/healthCheck:HealthCheck") if c.name.endswith("-aws")]
    assert check.inputs["fqdn"] == rendered.outputs["ingress"]["aws"] and not check.inputs.get("ipAddress")


def test_the_local_stack_deploys_every_tier_onto_clusters_it_brings() -> None:
    rendered = rendered_stack("local")
    types = {r.type for r in rendered.resources}
    # No cloud plugin is needed: nothing of aws, azure-native or gcp.
    assert not [t for t in types if t.split(":")[0] in ("aws", "azure-native", "gcp")
                or t in ("pulumi:providers:aws", "pulumi:providers:azure-native", "pulumi:providers:gcp")]
    providers = {r.name: r for r in rendered.of_type("pulumi:providers:kubernetes")}
    assert set(providers) == {"aws-k8s", "azure-k8s", "gcp-k8s", "us-west-k8s", "factory-berlin-k8s", "store-austin-k8s"}
    assert all("kubeconfig" in p.secret_inputs for p in providers.values())
    assert {"edgefabric:core:CloudCore", "edgefabric:edge:RegionalEdge", "edgefabric:edge:EdgeSite",
            "edgefabric:registry:BlockchainRegistry", "edgefabric:traffic:GlobalTraffic"} <= types
    assert rendered.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    assert rendered.of_type("kubernetes:policy/v1:PodDisruptionBudget")


def test_args_take_a_size_or_an_existing_cluster() -> None:
    settings = AwsCloud(enabled=True, cluster=ExistingCluster(kubeconfig_ref="env:K"))
    args = CloudCoreArgs(cloud="aws", size=None, services=[], settings=settings, environment="t")
    assert args.existing == ExistingCluster(kubeconfig_ref="env:K")
    with pytest.raises(ValueError, match="deploys onto an existing cluster: it has no size"):
        _ = args.cluster
    size = ClusterSize(machine_type="t3.large")
    with pytest.raises(ValueError, match="exactly one of a cluster size"):
        CloudCoreArgs(cloud="aws", size=size, services=[], settings=settings, environment="t")
    with pytest.raises(ValueError, match="exactly one of a cluster size"):
        CloudCoreArgs(cloud="aws", size=None, services=[], settings=AwsCloud(enabled=True), environment="t")
    assert CloudCoreArgs(cloud="aws", size=size, services=[], settings=AwsCloud(), environment="t").cluster == size
