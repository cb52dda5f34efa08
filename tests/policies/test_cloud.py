"""The clouds' rules (policies/rules/cloud.py): each policy with a passing and a violating
case, run through the evaluator the rendered stacks use (the engine's dependency graph:
`dependencies`, `property_dependencies`, providers). The violating cases are the layouts the
cloud core had before: private subnets with no routes, a cluster that does not wait for its
IAM attachments, dev's EKS minimum of one t3.large, a regional pool pinning node_count."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from policies.rules import cloud, traffic
from policies.rules.runtime import Resource, evaluate
from tests.kits.policy import NOT_APPLICABLE, check


@dataclass
class Graph:
    """A stack described by names: resources, their inputs and what they depend on."""

    resources: dict[str, Resource] = field(default_factory=dict)

    def add(self, typ: str, name: str, props: Mapping[str, Any] | None = None, *,
            deps: Mapping[str, list[str]] | None = None, depends_on: list[str] | None = None,
            provider: str = "") -> str:
        urn = f"urn:pulumi:test::edgefabric::{typ}::{name}"
        by_prop = {k: tuple(self.resources[n].urn for n in v) for k, v in (deps or {}).items()}
        every = {u for v in by_prop.values() for u in v} | {self.resources[n].urn for n in depends_on or []}
        self.resources[name] = Resource(typ, name, urn, dict(props or {}), None, tuple(sorted(every)), by_prop,
                                        f"{self.resources[provider].urn}::id" if provider else "")
        return name

    def run(self, policy: Any) -> list[str] | str:
        report = evaluate([policy], list(self.resources.values()), {"all": "mandatory"})
        if report.checked.get(policy.name, 0) == 0:
            return NOT_APPLICABLE
        return [v.message for v in report.violations]


def aws_network(g: Graph, *, nat: bool = True, igw: bool = True) -> tuple[list[str], list[str]]:
    """The EKS reference layout (private subnets via NAT, public via IGW), or parts of it."""
    g.add(cloud.SUBNET.replace("subnet:Subnet", "vpc:Vpc"), "vpc")
    private = [g.add(cloud.SUBNET, f"private-{i}", {"tags": {"kubernetes.io/role/internal-elb": "1"}},
                     deps={"vpcId": ["vpc"]}) for i in range(2)]
    public = [g.add(cloud.SUBNET, f"public-{i}", {"tags": {"kubernetes.io/role/elb": "1"}},
                    deps={"vpcId": ["vpc"]}) for i in range(2)]
    if igw:
        g.add(cloud.IGW, "igw", deps={"vpcId": ["vpc"]})
        g.add(cloud.ROUTE_TABLE, "public-rt", deps={"vpcId": ["vpc"]})
        g.add(cloud.ROUTE, "public-default", {"destinationCidrBlock": "0.0.0.0/0"},
              deps={"routeTableId": ["public-rt"], "gatewayId": ["igw"]})
        for s in public:
            g.add(cloud.ASSOCIATION, f"{s}-assoc", deps={"subnetId": [s], "routeTableId": ["public-rt"]})
    if nat:
        for i, s in enumerate(private):
            g.add(cloud.NAT, f"nat-{i}", deps={"subnetId": [public[i]]})
            g.add(cloud.ROUTE_TABLE, f"private-rt-{i}", deps={"vpcId": ["vpc"]})
            g.add(cloud.ROUTE, f"private-default-{i}", {"destinationCidrBlock": "0.0.0.0/0"},
                  deps={"routeTableId": [f"private-rt-{i}"], "natGatewayId": [f"nat-{i}"]})
            g.add(cloud.ASSOCIATION, f"{s}-assoc", deps={"subnetId": [s], "routeTableId": [f"private-rt-{i}"]})
    return private, public


def eks(g: Graph, *, ordered: bool = True, min_size: int = 3, machine: str = "t3.large",
        nat: bool = True, igw: bool = True, metrics_server: bool = True) -> None:
    private, _ = aws_network(g, nat=nat, igw=igw)
    g.add("aws:iam/role:Role", "cluster-role")
    g.add(cloud.ATTACHMENT, "cluster-policy", deps={"role": ["cluster-role"]})
    g.add("aws:iam/role:Role", "node-role")
    nodes_policies = [g.add(cloud.ATTACHMENT, f"node-{p}", deps={"role": ["node-role"]}) for p in ("worker", "cni")]
    g.add(cloud.EKS, "cluster", {"version": "1.34"}, deps={"roleArn": ["cluster-role"], "vpcConfig": private},
          depends_on=["cluster-policy"] if ordered else [])
    g.add(cloud.EKS_NODES, "nodes", {"instanceTypes": [machine], "scalingConfig": {"minSize": min_size}},
          deps={"clusterName": ["cluster"], "nodeRoleArn": ["node-role"], "subnetIds": private},
          depends_on=nodes_policies if ordered else [])
    if metrics_server:
        g.add(cloud.EKS_ADDON, "metrics-server", {"addonName": "metrics-server"}, deps={"clusterName": ["cluster"]})
    g.add(cloud.K8S_PROVIDER, "aws-k8s", deps={"kubeconfig": ["cluster"]})


def deployment(g: Graph, name: str, cpu: str, replicas: int | None, provider: str = "aws-k8s") -> None:
    spec: dict[str, Any] = {"template": {"spec": {"containers": [
        {"name": name, "resources": {"requests": {"cpu": cpu, "memory": "256Mi"}}}]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    g.add("kubernetes:apps/v1:Deployment", name, {"metadata": {"name": name, "namespace": "core"}, "spec": spec},
          provider=provider)


# ------------------------------------------------------------------ node egress


def test_nodes_with_nat_routes_have_egress() -> None:
    g = Graph()
    eks(g)
    assert g.run(cloud.nodes_have_egress) == []


def test_private_subnets_without_routes_leave_nodes_offline() -> None:
    g = Graph()
    eks(g, nat=False)
    assert g.run(cloud.nodes_have_egress) == [
        f"node group 'nodes': subnet 'private-{i}' has no default route to a NAT or internet gateway, so its "
        "nodes cannot pull images or join the cluster" for i in range(2)]


def _gke(g: Graph, *, nat: bool) -> None:
    g.add("gcp:compute/network:Network", "net")
    g.add(cloud.GKE, "gke", {"privateClusterConfig": {"enablePrivateNodes": True}}, deps={"network": ["net"]})
    g.add(cloud.GKE_POOL, "pool", deps={"cluster": ["gke"]})
    if nat:
        g.add(cloud.GCP_ROUTER, "router", deps={"network": ["net"]})
        g.add(cloud.GCP_NAT, "nat", deps={"router": ["router"]})


def test_private_gke_nodes_need_cloud_nat() -> None:
    g = Graph()
    _gke(g, nat=True)
    assert g.run(cloud.nodes_have_egress) == []
    g = Graph()
    _gke(g, nat=False)
    assert g.run(cloud.nodes_have_egress) == [
        "node pool 'pool': private nodes of 'gke' have no Cloud NAT on the cluster's network (a Router and "
        "RouterNat), so they cannot pull images"]


# ---------------------------------------------------- internet-facing load balancers


def _lb(g: Graph, annotations: dict[str, str] | None = None) -> None:
    g.add(cloud.SERVICE, "gateway", {"metadata": {"annotations": annotations or {}},
                                     "spec": {"type": "LoadBalancer"}}, provider="aws-k8s")


def test_internet_facing_lb_with_public_subnets_passes() -> None:
    g = Graph()
    eks(g)
    _lb(g)
    assert g.run(cloud.public_lb_has_public_subnets) == []


def test_internet_facing_lb_without_an_internet_gateway_is_refused() -> None:
    g = Graph()
    eks(g, igw=False, nat=False)
    _lb(g)
    assert g.run(cloud.public_lb_has_public_subnets) == [
        "cluster 'cluster' has internet-facing load balancers but its VPC has no public subnet (tagged "
        "kubernetes.io/role/elb=1) routed to an internet gateway"]
    g = Graph()
    eks(g, igw=False, nat=False)
    _lb(g, {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"})
    assert g.run(cloud.public_lb_has_public_subnets) == NOT_APPLICABLE


# --------------------------------------------------------------- IAM ordering


def test_cluster_and_nodes_waiting_for_their_attachments_pass() -> None:
    g = Graph()
    eks(g)
    assert g.run(cloud.eks_depends_on_iam) == []


def test_cluster_and_nodes_not_waiting_for_attachments_are_refused() -> None:
    g = Graph()
    eks(g, ordered=False)
    assert g.run(cloud.eks_depends_on_iam) == [
        "'cluster' does not depend on its role's policy attachments (cluster-policy): destroy would detach "
        "them first and hang on what EKS can no longer clean up",
        "'nodes' does not depend on its role's policy attachments (node-cni, node-worker): destroy would "
        "detach them first and hang on what EKS can no longer clean up"]


# ------------------------------------------------------------------- capacity


def test_allocatable_follows_the_clouds_reservations() -> None:
    cores, mib = cloud.allocatable("t3.large", "aws") or (0, 0)
    assert cores == pytest.approx(1.93) and mib == pytest.approx(8192 - (11 * 35 + 255) - 100)
    cores, mib = cloud.allocatable("e2-standard-4", "gcp") or (0, 0)
    assert cores == pytest.approx(3.92) and mib == pytest.approx(16384 - (1024 + 819.2 + 819.2) - 100)
    assert cloud.allocatable("x9.huge", "aws") is None


def test_requests_that_fit_the_minimum_nodes_pass() -> None:
    g = Graph()
    eks(g, min_size=3)
    deployment(g, "api", "500m", 2)
    deployment(g, "logic", "1", None)
    g.add(cloud.HPA, "logic-hpa", {"metadata": {"namespace": "core"},
                                   "spec": {"scaleTargetRef": {"name": "logic"}, "minReplicas": 2}},
          provider="aws-k8s")
    assert g.run(cloud.requests_fit_min_nodes) == []


def test_dev_eks_as_it_was_does_not_fit_one_t3_large() -> None:
    # dev before: ~5.25 vCPU of requests on minSize 1 of t3.large.
    g = Graph()
    eks(g, min_size=1)
    deployment(g, "core", "1750m", 3)
    assert g.run(cloud.requests_fit_min_nodes) == [
        "cluster 'cluster': 1 workloads request 5.25 cores of cpu, more than its minimum nodes' allocatable "
        "1.93 cores"]


def test_a_machine_type_missing_from_the_table_is_named() -> None:
    g = Graph()
    eks(g, machine="x9.huge")
    assert g.run(cloud.requests_fit_min_nodes) == [
        "node pool 'nodes': machine type 'x9.huge' is not in the instance-size table (policies/rules/cloud.py "
        "MACHINES), so its capacity cannot be checked"]


# ------------------------------------------------------------- metrics-server


def _hpa(g: Graph) -> None:
    g.add(cloud.HPA, "api-hpa", {"spec": {"scaleTargetRef": {"name": "api"}}}, provider="aws-k8s")


def test_hpa_on_eks_with_the_metrics_server_addon_passes() -> None:
    g = Graph()
    eks(g)
    _hpa(g)
    assert g.run(cloud.hpa_has_metrics_server) == []


def test_hpa_on_eks_without_metrics_server_is_refused() -> None:
    g = Graph()
    eks(g, metrics_server=False)
    _hpa(g)
    assert g.run(cloud.hpa_has_metrics_server) == [
        "HorizontalPodAutoscaler 'api-hpa' on EKS cluster 'cluster' has no metrics-server (the EKS add-on), "
        "so it never scales"]


# ------------------------------------------------------------- EKS node autoscaler


def _autoscaled_eks(g: Graph, *, autoscaler: bool = True, identity: bool = True) -> None:
    eks(g)
    g.resources["nodes"].props["scalingConfig"] = {"minSize": 3, "maxSize": 6, "desiredSize": 3}
    if autoscaler:
        g.add("kubernetes:apps/v1:Deployment", "autoscaler", {"spec": {"template": {"spec": {"containers": [
            {"name": "cluster-autoscaler", "image": "registry.k8s.io/autoscaling/cluster-autoscaler:v1.34.0"}]}}}},
            provider="aws-k8s")
    if identity:
        g.add(cloud.POD_IDENTITY, "autoscaler-identity", deps={"clusterName": ["cluster"]})


def test_an_eks_node_group_with_an_autoscaler_and_its_identity_passes() -> None:
    g = Graph()
    _autoscaled_eks(g)
    assert g.run(cloud.eks_node_groups_autoscaled) == []


def test_an_eks_node_group_with_a_size_range_and_no_autoscaler_is_refused() -> None:
    g = Graph()
    _autoscaled_eks(g, autoscaler=False)
    assert g.run(cloud.eks_node_groups_autoscaled) == [
        "EKS node group 'nodes' has a size range but no cluster-autoscaler runs on cluster 'cluster': "
        "its desired size never moves"]


def test_an_eks_autoscaler_without_a_pod_identity_is_refused() -> None:
    g = Graph()
    _autoscaled_eks(g, identity=False)
    assert g.run(cloud.eks_node_groups_autoscaled) == [
        "cluster-autoscaler on EKS cluster 'cluster' has no Pod Identity association: it cannot resize the node group"]


# ----------------------------------------------------------- resource policies


def test_autoscaled_gke_pool_must_not_pin_node_count() -> None:
    ok = {"autoscaling": {"totalMinNodeCount": 3, "totalMaxNodeCount": 9}, "initialNodeCount": 1}
    assert check(cloud.autoscaled_pools_unpinned, cloud.GKE_POOL, ok) == []
    assert check(cloud.autoscaled_pools_unpinned, cloud.GKE_POOL, {**ok, "nodeCount": 6}, name="gcp-nodes") == [
        "node pool 'gcp-nodes' autoscales but pins nodeCount = 6: every `up` resets what the autoscaler chose "
        "(and in a regional pool it counts per zone)"]


def test_plain_public_mqtt_is_refused_unless_tls_or_source_ranges() -> None:
    def svc(ports: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
        return {"metadata": {}, "spec": {"type": "LoadBalancer", "ports": ports, **spec}}

    mqtt = [{"name": "mqtt", "port": 1883}]
    assert check(cloud.no_plain_public_l4, cloud.SERVICE, svc(mqtt), name="broker") == [
        "Service 'broker' exposes mqtt (1883) to the internet in plain text: terminate TLS on it or set "
        "loadBalancerSourceRanges"]
    assert check(cloud.no_plain_public_l4, cloud.SERVICE, svc(mqtt, loadBalancerSourceRanges=["198.18.0.0/15"])) == []
    assert check(cloud.no_plain_public_l4, cloud.SERVICE, svc([{"name": "mqtts", "port": 8883},
                                                               {"name": "http", "port": 8080}])) == []
    assert check(cloud.no_plain_public_l4, cloud.SERVICE, {"spec": {"type": "ClusterIP"}}) == NOT_APPLICABLE


def test_gcp_health_check_limits() -> None:
    ok = {"checkIntervalSec": 30, "timeoutSec": 5, "healthyThreshold": 2, "unhealthyThreshold": 3,
          "sourceRegions": ["us-east1", "europe-west1", "asia-southeast1"]}
    assert check(cloud.gcp_health_check_limits, cloud.GCP_HEALTH_CHECK, ok) == []
    bad = {**ok, "checkIntervalSec": 10, "timeoutSec": 15, "unhealthyThreshold": 12}
    assert check(cloud.gcp_health_check_limits, cloud.GCP_HEALTH_CHECK, bad, name="hc") == [
        "health check 'hc': checkIntervalSec = 10 with sourceRegions (GCP requires >= 30)",
        "health check 'hc': timeoutSec = 15 above checkIntervalSec = 10",
        "health check 'hc': unhealthyThreshold = 12 (GCP allows 1..10)"]


# ------------------------------------------------------------------ DNS ownership

FAILOVER = "pulumi-python:dynamic/failover:WeightedFailover"


def _published(g: Graph, *, secondary: bool = True, delegated: bool = True, alias: bool = True) -> None:
    gcp = {"project": "p", "managed_zone": "z", "dns_name": "gcp.dev.example.com."}
    if secondary:
        gcp["secondary_zone"] = "gcp.dev.example.com."
    g.add(FAILOVER, "failover", {"record_name": "api.dev.example.com.", "backends": {
        "route53": {"zone_name": "example.com."}, "gcp_dns": gcp,
        "azure_tm": {"profile_name": "ef-dev", "relative_dns_name": "ef-dev"}}})
    if delegated:
        g.add(traffic.ROUTE53_RECORD, "delegate", {"name": "gcp.dev.example.com", "type": "NS",
                                                   "records": ["ns-cloud-a1.googledomains.com."]})
    if alias:
        g.add(traffic.ROUTE53_RECORD, "alias", {"name": "api.tm.dev.example.com", "type": "CNAME",
                                                "records": ["ef-dev.trafficmanager.net."]})


def test_one_authoritative_zone_with_delegation_and_alias_passes() -> None:
    g = Graph()
    _published(g)
    assert g.run(traffic.one_authoritative_zone) == []


def test_the_same_name_in_route53_and_cloud_dns_is_refused() -> None:
    # The stacks as they were: both zones published api.dev.example.com. itself, and nothing
    # led to the Traffic Manager profile.
    g = Graph()
    _published(g, secondary=False, delegated=False, alias=False)
    assert g.run(traffic.one_authoritative_zone) == [
        "'api.dev.example.com.' is published under the same name by gcp_dns and route53: two authoritative zones "
        "answer it, and a failover written to one is not seen in the other",
        "nothing CNAMEs to the Traffic Manager profile 'ef-dev.trafficmanager.net.' of 'api.dev.example.com.': "
        "no name of the stack reaches it"]


def test_a_secondary_zone_nobody_delegates_is_refused() -> None:
    g = Graph()
    _published(g, delegated=False)
    assert g.run(traffic.one_authoritative_zone) == [
        "gcp_dns publishes 'api.dev.example.com.' in its zone 'gcp.dev.example.com.', but no NS record in the "
        "stack delegates that zone: its standby name resolves nowhere"]


def test_a_stack_without_a_failover_record_is_not_checked() -> None:
    g = Graph()
    g.add(traffic.ROUTE53_RECORD, "www", {"name": "www.example.com", "type": "CNAME", "records": ["x."]})
    assert g.run(traffic.one_authoritative_zone) == NOT_APPLICABLE
