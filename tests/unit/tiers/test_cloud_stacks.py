"""The cloud cores as they would really run, rendered under mocks that answer like the clouds:
networks with a way out (and in, for load balancers), identities, ordering that lets destroy
finish, node pools that follow the control plane and leave counts to the autoscaler, and the
kubeconfigs the clusters hand back."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from typing import Any

import pytest

from edgefabric.config import load_stack_file
from tests.unit.tiers.conftest import ROOT, rendered_stack
from tooling.render import Registered, Rendered

CLOUD_STACKS = ("dev", "staging", "prod")


def one(rendered: Rendered, typ: str, name: str) -> Registered:
    found = [r for r in rendered.of_type(typ) if r.name == name]
    assert len(found) == 1, f"{typ} {name}: {len(found)}"
    return found[0]


def names(rendered: Rendered, urns: list[str]) -> set[str]:
    by = rendered.by_urn()
    return {by[u].name for u in urns}


def kubeconfig(rendered: Rendered, cloud: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(one(rendered, "pulumi:providers:kubernetes", f"{cloud}-k8s").inputs["kubeconfig"])
    return config


@pytest.mark.parametrize("stack", CLOUD_STACKS)
def test_aws_vpc_has_public_and_private_subnets_gateways_and_routes(stack: str) -> None:
    r = rendered_stack(stack)
    subnets = {s.name: s.inputs["tags"] for s in r.of_type("aws:ec2/subnet:Subnet") if s.name.startswith("aws-")}
    assert {n for n, t in subnets.items() if t.get("kubernetes.io/role/elb") == "1"} == {"aws-public-0", "aws-public-1"}
    assert {n for n, t in subnets.items() if t.get("kubernetes.io/role/internal-elb") == "1"} == \
        {"aws-subnet-0", "aws-subnet-1"}
    own = sum(1 for reg in load_stack_file(ROOT / f"Pulumi.{stack}.yaml").regions if reg.cluster and reg.cloud == "aws")
    assert len(r.of_type("aws:ec2/internetGateway:InternetGateway")) == 1 + own  # a VPC per cluster
    assert len([n for n in r.of_type("aws:ec2/natGateway:NatGateway") if n.name.startswith("aws-")]) == 2  # one per zone
    defaults = {x.name: names(r, x.dependencies) for x in r.of_type("aws:ec2/route:Route")
                if x.inputs.get("destinationCidrBlock") == "0.0.0.0/0"}
    assert "aws-igw" in defaults["aws-public-default"]
    assert {"aws-nat-0"} <= defaults["aws-private-default-0"] and {"aws-nat-1"} <= defaults["aws-private-default-1"]
    nodes = one(r, "aws:eks/nodeGroup:NodeGroup", "aws-nodes")
    assert names(r, nodes.property_dependencies["subnetIds"]) == {"aws-subnet-0", "aws-subnet-1"}


@pytest.mark.parametrize("stack", CLOUD_STACKS)
def test_eks_cluster_and_nodes_wait_for_iam_and_nodes_follow_the_control_plane(stack: str) -> None:
    r = rendered_stack(stack)
    cluster = one(r, "aws:eks/cluster:Cluster", "aws-cluster")
    assert {"aws-cluster-policy", "aws-cluster-AmazonEKSVPCResourceController"} <= names(r, cluster.dependencies)
    nodes = one(r, "aws:eks/nodeGroup:NodeGroup", "aws-nodes")
    assert {"aws-node-AmazonEKSWorkerNodePolicy", "aws-node-AmazonEKS_CNI_Policy",
            "aws-node-AmazonEC2ContainerRegistryReadOnly", "aws-private-default-0"} <= names(r, nodes.dependencies)
    assert names(r, nodes.property_dependencies["version"]) == {"aws-cluster"}
    assert nodes.inputs["version"] == cluster.inputs["version"] == "1.34"
    addons = {a.inputs["addonName"] for a in r.of_type("aws:eks/addon:Addon")}
    assert addons == {"vpc-cni", "kube-proxy", "coredns", "metrics-server", "eks-pod-identity-agent"}


@pytest.mark.parametrize("stack", CLOUD_STACKS)
def test_eks_node_group_is_scaled_by_cluster_autoscaler_with_a_role_for_this_cluster_only(stack: str) -> None:
    """minNodes/maxNodes did nothing on EKS: nothing moved the group's desired size. Now a
    cluster-autoscaler of the cluster's minor finds the group by the tags EKS gives it, and its
    Pod Identity role may resize only groups tagged for this cluster."""
    r = rendered_stack(stack)
    cluster = one(r, "aws:eks/cluster:Cluster", "aws-cluster")
    name = cluster.inputs["name"]
    deployment = one(r, "kubernetes:apps/v1:Deployment", "aws-autoscaler")
    assert deployment.inputs["metadata"]["namespace"] == "kube-system"
    pod = deployment.inputs["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"registry.k8s.io/autoscaling/cluster-autoscaler:v{cluster.inputs['version']}.0"
    assert ("--node-group-auto-discovery=asg:tag=k8s.io/cluster-autoscaler/enabled,"
            f"k8s.io/cluster-autoscaler/{name}") in container["command"]
    assert pod["serviceAccountName"] == "cluster-autoscaler"
    # The Kubernetes side goes through this cluster's provider, not another cloud's.
    assert deployment.provider.startswith(one(r, "pulumi:providers:kubernetes", "aws-k8s").urn)

    association = one(r, "aws:eks/podIdentityAssociation:PodIdentityAssociation", "aws-autoscaler")
    assert (association.inputs["namespace"], association.inputs["serviceAccount"]) == ("kube-system",
                                                                                       "cluster-autoscaler")
    trust = json.loads(one(r, "aws:iam/role:Role", "aws-autoscaler-role").inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    statements = json.loads(one(r, "aws:iam/rolePolicy:RolePolicy", "aws-autoscaler").inputs["policy"])["Statement"]
    writes = [s for s in statements if "autoscaling:SetDesiredCapacity" in s["Action"]]
    assert writes and all(s["Condition"]["StringEquals"] == {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{name}": "owned"}
                          for s in writes)
    # Every RBAC rule of ours names verbs and resources; nothing is `*`.
    role = one(r, "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole", "aws-autoscaler")
    assert all("*" not in rule["verbs"] and "*" not in rule["resources"] for rule in role.inputs["rules"])


@pytest.mark.parametrize("stack", CLOUD_STACKS)
def test_eks_load_balancers_are_internet_facing_nlbs(stack: str) -> None:
    r = rendered_stack(stack)
    gateway = one(r, "kubernetes:core/v1:Service", "aws-api-gateway")
    notes = gateway.inputs["metadata"]["annotations"]
    assert notes["service.beta.kubernetes.io/aws-load-balancer-type"] == "nlb"
    assert notes["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internet-facing"
    assert "annotations" not in one(r, "kubernetes:core/v1:Service", "gcp-api-gateway").inputs["metadata"]


@pytest.mark.parametrize("stack", CLOUD_STACKS)
def test_gke_has_its_own_network_nat_workload_identity_and_node_account(stack: str) -> None:
    r = rendered_stack(stack)
    cluster = one(r, "gcp:container/cluster:Cluster", "gcp-cluster")
    assert names(r, cluster.property_dependencies["network"]) == {"gcp-network"}
    assert names(r, cluster.property_dependencies["subnetwork"]) == {"gcp-subnet"}
    assert cluster.inputs["workloadIdentityConfig"]["workloadPool"].endswith(".svc.id.goog")
    assert cluster.inputs["ipAllocationPolicy"] == {"clusterSecondaryRangeName": "pods",
                                                    "servicesSecondaryRangeName": "services"}
    nat = one(r, "gcp:compute/routerNat:RouterNat", "gcp-nat")
    assert names(r, nat.dependencies) == {"gcp-router"}
    pool = one(r, "gcp:container/nodePool:NodePool", "gcp-nodes")
    assert pool.inputs["nodeConfig"]["serviceAccount"].startswith("edgefabric-")
    assert pool.inputs["nodeConfig"]["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
    # Regional pool: location-wide totals, no node_count beside the autoscaler.
    assert "nodeCount" not in pool.inputs
    assert set(pool.inputs["autoscaling"]) >= {"totalMinNodeCount", "totalMaxNodeCount"}
    assert names(r, pool.property_dependencies["version"]) == {"gcp-cluster"}


@pytest.mark.parametrize("stack", CLOUD_STACKS)
def test_aks_has_no_local_accounts_and_signs_in_through_entra_id(stack: str) -> None:
    r = rendered_stack(stack)
    cluster = one(r, "azure-native:containerservice:ManagedCluster", "azure-cluster")
    assert cluster.inputs["disableLocalAccounts"] is True
    assert cluster.inputs["aadProfile"] == {"managed": True, "enableAzureRBAC": True}
    assert cluster.inputs["agentPoolProfiles"][0]["orchestratorVersion"] == cluster.inputs["kubernetesVersion"]
    user = kubeconfig(r, "azure")["users"][0]["user"]
    assert user["exec"]["command"] == "kubelogin" and "token" not in user


def test_mocks_answer_like_eks_a_private_gke_endpoint_and_aks() -> None:
    r = rendered_stack("prod")
    aws = kubeconfig(r, "aws")["clusters"][0]["cluster"]
    assert re.fullmatch(r"https://[0-9A-F]{32}\.gr7\.us-east-1\.eks\.amazonaws\.com", aws["server"])
    assert base64.b64decode(aws["certificate-authority-data"]).startswith(b"-----BEGIN CERTIFICATE-----\n")
    # prod's GKE endpoint is private: the kubeconfig points at a private IP in the master range.
    gcp = kubeconfig(r, "gcp")["clusters"][0]["cluster"]
    address = ipaddress.ip_address(gcp["server"].removeprefix("https://"))
    assert address.is_private and address in ipaddress.ip_network("172.16.0.32/28")
    gke = one(r, "gcp:container/cluster:Cluster", "gcp-cluster")
    assert gke.inputs["privateClusterConfig"]["enablePrivateEndpoint"] is True
    azure = kubeconfig(r, "azure")["clusters"][0]["cluster"]
    assert azure["server"].endswith(".azmk8s.io:443")
