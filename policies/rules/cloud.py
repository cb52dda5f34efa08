"""The clouds' own rules, as AWSGuard encodes them: what a cluster needs around it to work.

Stack policies follow the engine's dependency graph (`dependencies`, `property_dependencies`
and each Kubernetes object's provider), not names, so they hold for any layout that wires the
same resources together:
- nodes have egress (a default route to a NAT or internet gateway; Cloud NAT on the network);
- an internet-facing load balancer has public subnets routed to an internet gateway;
- the EKS cluster and node group depend on their IAM policy attachments (or destroy removes
  the permissions first and hangs on the load balancers and ENIs EKS can no longer delete);
- the requests of what runs on a cluster fit its minimum nodes' allocatable capacity;
- a HorizontalPodAutoscaler has a metrics-server to read;
resource policies:
- an autoscaled GKE pool does not pin `node_count`;
- no non-HTTP public load balancer without TLS or source ranges;
- GCP health checks within the limits GCP enforces.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pulumi_policy import PolicyResource, ReportViolation, ResourceValidationArgs, StackValidationArgs

from .common import get, is_unknown, plain, resource_policy, show, stack_policy
from .images import split_image
from .placement import cpu_cores, mebibytes

EKS = "aws:eks/cluster:Cluster"
EKS_NODES = "aws:eks/nodeGroup:NodeGroup"
EKS_ADDON = "aws:eks/addon:Addon"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
SUBNET = "aws:ec2/subnet:Subnet"
ROUTE = "aws:ec2/route:Route"
ROUTE_TABLE = "aws:ec2/routeTable:RouteTable"
ASSOCIATION = "aws:ec2/routeTableAssociation:RouteTableAssociation"
IGW = "aws:ec2/internetGateway:InternetGateway"
NAT = "aws:ec2/natGateway:NatGateway"
AKS = "azure-native:containerservice:ManagedCluster"
GKE = "gcp:container/cluster:Cluster"
GKE_POOL = "gcp:container/nodePool:NodePool"
GCP_ROUTER = "gcp:compute/router:Router"
GCP_NAT = "gcp:compute/routerNat:RouterNat"
GCP_HEALTH_CHECK = "gcp:compute/healthCheck:HealthCheck"
K8S_PROVIDER = "pulumi:providers:kubernetes"
SERVICE = "kubernetes:core/v1:Service"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
WORKLOADS = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet")
DEFAULT_ROUTE = "0.0.0.0/0"

# Machine types the stacks use: (vCPU, memory GiB). Allocatable is derived with the clouds'
# published reservations (see `allocatable`); add a row when a stack uses a new type.
MACHINES: dict[str, tuple[int, int]] = {
    "t3.large": (2, 8), "t3.xlarge": (4, 16), "m6i.large": (2, 8), "m6i.xlarge": (4, 16),
    "m6i.2xlarge": (8, 32), "m6i.4xlarge": (16, 64),
    "Standard_D2s_v5": (2, 8), "Standard_D4s_v5": (4, 16), "Standard_D8s_v5": (8, 32),
    "Standard_D16s_v5": (16, 64),
    "e2-standard-2": (2, 8), "e2-standard-4": (4, 16), "e2-standard-8": (8, 32),
    "n2-standard-2": (2, 8), "n2-standard-4": (4, 16), "n2-standard-8": (8, 32), "n2-standard-16": (16, 64),
}
# EKS reserves memory per pod slot (11 MiB x max pods + 255 MiB); max pods per instance type
# come from the VPC CNI's ENI limits (eni-max-pods.txt).
EKS_MAX_PODS = {"t3.large": 35, "t3.xlarge": 58, "m6i.large": 29, "m6i.xlarge": 58, "m6i.2xlarge": 58,
                "m6i.4xlarge": 234}
EVICTION_MIB = 100


def allocatable(machine: str, cloud: str) -> tuple[float, float] | None:
    """(cores, MiB) a node of `machine` offers pods, or None for a type not in the table.

    CPU: the reservation all three clouds publish (6% of the first core, 1% of the second,
    0.5% of the next two, 0.25% above four). Memory: EKS 11 MiB per max pod + 255 MiB; GKE
    and AKS 25% of the first 4 GiB, 20% of the next 4, 10% of the next 8, 6% up to 128;
    each less the 100 MiB hard-eviction threshold."""
    spec = MACHINES.get(machine)
    if spec is None:
        return None
    cores, gib = spec
    reserved_cpu = sum(rate * max(0.0, min(cores, hi) - lo) for lo, hi, rate in
                       ((0, 1, 0.06), (1, 2, 0.01), (2, 4, 0.005), (4, 10**6, 0.0025)))
    mib = gib * 1024.0
    if cloud == "aws":
        reserved_mib = 11 * EKS_MAX_PODS.get(machine, 110) + 255
    else:
        reserved_mib = sum(rate * max(0.0, min(mib, hi * 1024) - lo * 1024) for lo, hi, rate in
                           ((0, 4, 0.25), (4, 8, 0.20), (8, 16, 0.10), (16, 128, 0.06)))
    return cores - reserved_cpu, mib - reserved_mib - EVICTION_MIB


# ------------------------------------------------------------------ graph helpers

def _of(args: StackValidationArgs, typ: str) -> list[PolicyResource]:
    return [r for r in args.resources if r.resource_type == typ]


def _deps(res: PolicyResource, prop: str | None = None) -> list[PolicyResource]:
    if prop is None:
        return list(res.dependencies or [])
    return list((res.property_dependencies or {}).get(prop) or [])


def _dependents(args: StackValidationArgs, target: PolicyResource, typ: str,
                prop: str | None = None) -> list[PolicyResource]:
    """Resources of `typ` that depend on `target` (through `prop`, when given)."""
    return [r for r in _of(args, typ) if any(d.urn == target.urn for d in _deps(r, prop))]


def _has_default_route(args: StackValidationArgs, subnet: PolicyResource, via: tuple[str, ...]) -> bool:
    """Whether `subnet` is associated with a route table whose 0.0.0.0/0 goes to one of `via`."""
    for assoc in _dependents(args, subnet, ASSOCIATION, "subnetId"):
        for table in _deps(assoc, "routeTableId"):
            for route in _dependents(args, table, ROUTE, "routeTableId"):
                if plain(route.props).get("destinationCidrBlock") != DEFAULT_ROUTE:
                    continue
                targets = _deps(route, "natGatewayId") + _deps(route, "gatewayId")
                if any(t.resource_type in via for t in targets):
                    return True
    return False


def _cluster_of(res: PolicyResource) -> PolicyResource | None:
    """The managed cluster a Kubernetes object is deployed to: its provider's kubeconfig
    comes from the cluster's outputs. None for a cluster the stack does not create."""
    provider = res.provider
    if provider is None or provider.resource_type != K8S_PROVIDER:
        return None
    return _provider_cluster.get(provider.urn)


_provider_cluster: dict[str, PolicyResource] = {}


def _index_providers(args: StackValidationArgs) -> None:
    _provider_cluster.clear()
    for provider in _of(args, K8S_PROVIDER):
        for dep in _deps(provider, "kubeconfig") + _deps(provider):
            if dep.resource_type in (EKS, AKS, GKE):
                _provider_cluster[provider.urn] = dep
                break


# ------------------------------------------------------------------ node egress

def _egress(args: StackValidationArgs, report: ReportViolation) -> None:
    groups, pools = _of(args, EKS_NODES), _of(args, GKE_POOL)
    if not groups and not pools:
        args.not_applicable("no EKS node groups or GKE node pools")
    for group in groups:
        for subnet in _deps(group, "subnetIds"):
            if not _has_default_route(args, subnet, (NAT, IGW)):
                report(f"node group '{group.name}': subnet '{subnet.name}' has no default route to a NAT or "
                       "internet gateway, so its nodes cannot pull images or join the cluster", group.urn)
    for pool in pools:
        for cluster in _deps(pool, "cluster"):
            if get(plain(cluster.props), "privateClusterConfig", "enablePrivateNodes") is not True:
                continue
            networks = {n.urn for n in _deps(cluster, "network")}
            if not networks:
                report(f"node pool '{pool.name}': cluster '{cluster.name}' names no network, so its private "
                       "nodes' egress (Cloud NAT) cannot be checked and it fails without a default VPC", pool.urn)
                continue
            routers = [r for r in _of(args, GCP_ROUTER) if {d.urn for d in _deps(r, "network")} & networks]
            nats = [n for n in _of(args, GCP_NAT) if any(d.resource_type == GCP_ROUTER and d in routers
                                                         for d in _deps(n))]
            if not nats:
                report(f"node pool '{pool.name}': private nodes of '{cluster.name}' have no Cloud NAT on the "
                       "cluster's network (a Router and RouterNat), so they cannot pull images", pool.urn)


nodes_have_egress = stack_policy(
    "nodes-have-egress",
    "Private nodes have egress: EKS node subnets route 0.0.0.0/0 to a NAT or internet gateway; "
    "private GKE nodes have Cloud NAT on their network.",
    "Route the node subnets through a NAT gateway (edgefabric/tiers/cloud_core/aws.py network()), "
    "or add a Router and RouterNat on the GKE network (gcp.py).",
    _egress,
)


# --------------------------------------------------- internet-facing load balancers

def _internal(service: PolicyResource) -> bool:
    notes = get(plain(service.props), "metadata", "annotations", default={}) or {}
    return (str(notes.get("service.beta.kubernetes.io/aws-load-balancer-internal", "")).lower() == "true"
            or notes.get("service.beta.kubernetes.io/aws-load-balancer-scheme") == "internal")


def _public_lb(args: StackValidationArgs, report: ReportViolation) -> None:
    _index_providers(args)
    services = [s for s in _of(args, SERVICE)
                if get(plain(s.props), "spec", "type") == "LoadBalancer" and not _internal(s)]
    clusters = {c.urn: c for s in services if (c := _cluster_of(s)) is not None and c.resource_type == EKS}
    if not clusters:
        args.not_applicable("no internet-facing load balancer on an EKS cluster of this stack")
    for cluster in clusters.values():
        vpcs = {v.urn for s in _deps(cluster, "vpcConfig") for v in _deps(s, "vpcId")}
        public = [s for s in _of(args, SUBNET) if {v.urn for v in _deps(s, "vpcId")} & vpcs
                  and get(plain(s.props), "tags", "kubernetes.io/role/elb") == "1"
                  and _has_default_route(args, s, (IGW,))]
        if not public:
            report(f"cluster '{cluster.name}' has internet-facing load balancers but its VPC has no public subnet "
                   "(tagged kubernetes.io/role/elb=1) routed to an internet gateway", cluster.urn)


public_lb_has_public_subnets = stack_policy(
    "public-lb-has-public-subnets",
    "An internet-facing load balancer on EKS has public subnets (kubernetes.io/role/elb) with a route "
    "to an internet gateway.",
    "Add public subnets tagged kubernetes.io/role/elb=1 with a 0.0.0.0/0 route to an internet gateway, "
    "or annotate the Service internal.",
    _public_lb,
)


# --------------------------------------------------------- IAM ordering (destroy)

def _role_attachments(args: StackValidationArgs, role: PolicyResource) -> list[PolicyResource]:
    return _dependents(args, role, ATTACHMENT, "role")


def _iam_order(args: StackValidationArgs, report: ReportViolation) -> None:
    subjects = [(c, "roleArn") for c in _of(args, EKS)] + [(g, "nodeRoleArn") for g in _of(args, EKS_NODES)]
    if not subjects:
        args.not_applicable("no EKS clusters or node groups")
    for res, prop in subjects:
        roles = _deps(res, prop)
        needed = [a for role in roles for a in _role_attachments(args, role)]
        have = {d.urn for d in _deps(res)}
        missing = sorted(a.name for a in needed if a.urn not in have)
        if missing:
            report(f"'{res.name}' does not depend on its role's policy attachments ({', '.join(missing)}): "
                   "destroy would detach them first and hang on what EKS can no longer clean up", res.urn)


eks_depends_on_iam = stack_policy(
    "eks-depends-on-iam",
    "The EKS cluster and node group depend on their IAM role policy attachments.",
    "Pass the RolePolicyAttachments in depends_on of the aws.eks.Cluster and aws.eks.NodeGroup.",
    _iam_order,
)


# --------------------------------------------------------------- capacity

def _min_nodes(args: StackValidationArgs, cluster: PolicyResource) -> Iterator[tuple[str, Any, Any]]:
    """(pool name, machine type, minimum node count) of each pool of `cluster`."""
    props = plain(cluster.props)
    if cluster.resource_type == EKS:
        for group in _dependents(args, cluster, EKS_NODES, "clusterName"):
            p = plain(group.props)
            for machine in p.get("instanceTypes") or [None]:
                yield group.name, machine, get(p, "scalingConfig", "minSize")
                break
    elif cluster.resource_type == GKE:
        for pool in _dependents(args, cluster, GKE_POOL, "cluster"):
            p = plain(pool.props)
            auto = p.get("autoscaling") or {}
            lo = auto.get("totalMinNodeCount")
            if lo is None and auto.get("minNodeCount") is not None:
                lo = auto["minNodeCount"] * 3  # per zone in a regional pool
            yield pool.name, get(p, "nodeConfig", "machineType"), lo
    elif cluster.resource_type == AKS:
        for i, prof in enumerate(props.get("agentPoolProfiles") or []):
            yield f"{cluster.name}.agentPoolProfiles[{i}]", prof.get("vmSize"), prof.get("minCount", prof.get("count"))


def _demand(args: StackValidationArgs) -> dict[str, tuple[float, float, list[str]]]:
    """Per cluster URN: summed (cores, MiB) requests and the workloads counted."""
    hpas: dict[tuple[Any, Any], Any] = {}
    for h in _of(args, HPA):
        p = plain(h.props)
        hpas[(get(p, "metadata", "namespace"), get(p, "spec", "scaleTargetRef", "name"))] = get(p, "spec", "minReplicas")
    out: dict[str, tuple[float, float, list[str]]] = {}
    for typ in WORKLOADS:
        for w in _of(args, typ):
            cluster = _cluster_of(w)
            if cluster is None:
                continue
            p = plain(w.props)
            replicas = get(p, "spec", "replicas")
            if replicas is None:
                replicas = hpas.get((get(p, "metadata", "namespace"), get(p, "metadata", "name")), 1)
            cpu = mem = 0.0
            for c in get(p, "spec", "template", "spec", "containers", default=[]) or []:
                req = get(c, "resources", "requests", default={}) or {}
                if is_unknown(req) or is_unknown(replicas):
                    continue
                cpu += cpu_cores(req.get("cpu", 0))
                mem += mebibytes(req.get("memory", 0))
            have = out.get(cluster.urn, (0.0, 0.0, []))
            out[cluster.urn] = (have[0] + cpu * int(replicas), have[1] + mem * int(replicas), [*have[2], w.name])
    return out


def _capacity(args: StackValidationArgs, report: ReportViolation) -> None:
    _index_providers(args)
    clusters = [r for r in args.resources if r.resource_type in (EKS, AKS, GKE)]
    if not clusters:
        args.not_applicable("no managed clusters in this stack")
    demand = _demand(args)
    cloud_of = {EKS: "aws", AKS: "azure", GKE: "gcp"}
    for cluster in clusters:
        cores_needed, mib_needed, names = demand.get(cluster.urn, (0.0, 0.0, []))
        cores = mib = 0.0
        for pool, machine, lo in _min_nodes(args, cluster):
            if is_unknown(machine) or is_unknown(lo):
                return
            per_node = allocatable(str(machine), cloud_of[cluster.resource_type])
            if per_node is None:
                report(f"node pool '{pool}': machine type {machine!r} is not in the instance-size table "
                       "(policies/rules/cloud.py MACHINES), so its capacity cannot be checked", cluster.urn)
                return
            cores += per_node[0] * int(lo or 0)
            mib += per_node[1] * int(lo or 0)
        for what, need, have, unit in (("cpu", cores_needed, cores, "cores"), ("memory", mib_needed, mib, "MiB")):
            if need > have + 1e-9:
                report(f"cluster '{cluster.name}': {len(names)} workloads request {need:.2f} {unit} of {what}, "
                       f"more than its minimum nodes' allocatable {have:.2f} {unit}", cluster.urn)


requests_fit_min_nodes = stack_policy(
    "requests-fit-min-nodes",
    "What a cluster runs (requests x replicas, HPA minimums) fits its node pools' minimum node count's "
    "allocatable capacity.",
    "Raise edgefabric:core.clusters.<cloud>.minNodes (and nodeCount) or the machine type, or lower "
    "the services' requests or replicas.",
    _capacity,
)


# ------------------------------------------------------------------ metrics-server

def _metrics(args: StackValidationArgs, report: ReportViolation) -> None:
    _index_providers(args)
    hpas = [(h, _cluster_of(h)) for h in _of(args, HPA)]
    hpas = [(h, c) for h, c in hpas if c is not None]
    if not hpas:
        args.not_applicable("no HorizontalPodAutoscaler on a cluster this stack creates")
    for hpa, cluster in hpas:
        if cluster.resource_type != EKS:
            continue  # AKS and GKE run metrics-server as part of the control plane's add-ons
        addons = [a for a in _dependents(args, cluster, EKS_ADDON, "clusterName")
                  if plain(a.props).get("addonName") == "metrics-server"]
        if not addons:
            report(f"HorizontalPodAutoscaler '{hpa.name}' on EKS cluster '{cluster.name}' has no metrics-server "
                   "(the EKS add-on), so it never scales", hpa.urn)


hpa_has_metrics_server = stack_policy(
    "hpa-has-metrics-server",
    "A HorizontalPodAutoscaler runs on a cluster with a metrics-server.",
    "Add the metrics-server EKS add-on to the cluster (edgefabric/tiers/cloud_core/aws.py ADDONS).",
    _metrics,
)


# ------------------------------------------------------------- EKS node autoscaler

AUTOSCALER_IMAGE = "registry.k8s.io/autoscaling/cluster-autoscaler"
POD_IDENTITY = "aws:eks/podIdentityAssociation:PodIdentityAssociation"


def _runs_autoscaler(deployment: PolicyResource) -> bool:
    containers = get(plain(deployment.props), "spec", "template", "spec", "containers", default=[]) or []
    return any(isinstance(c, dict) and split_image(str(c.get("image", "")))[0] == AUTOSCALER_IMAGE
               for c in containers)


def _eks_autoscaled(args: StackValidationArgs, report: ReportViolation) -> None:
    _index_providers(args)
    groups = []
    for group in _of(args, EKS_NODES):
        scaling = plain(group.props).get("scalingConfig")
        if isinstance(scaling, dict) and scaling.get("minSize") != scaling.get("maxSize"):
            groups.append(group)
    if not groups:
        args.not_applicable("no EKS node group with a size range")
    # The clusters a cluster-autoscaler Deployment runs on.
    scaled = {c.urn for d in _of(args, "kubernetes:apps/v1:Deployment")
              if (c := _cluster_of(d)) is not None and _runs_autoscaler(d)}
    for group in groups:
        for cluster in _deps(group, "clusterName"):
            if cluster.urn not in scaled:
                report(f"EKS node group '{group.name}' has a size range but no cluster-autoscaler runs on cluster "
                       f"'{cluster.name}': its desired size never moves", group.urn)
            elif not _dependents(args, cluster, POD_IDENTITY, "clusterName"):
                report(f"cluster-autoscaler on EKS cluster '{cluster.name}' has no Pod Identity association: "
                       "it cannot resize the node group", group.urn)


eks_node_groups_autoscaled = stack_policy(
    "eks-node-groups-autoscaled",
    "An EKS node group with a size range has a cluster-autoscaler with an AWS identity on its cluster.",
    "EKS moves a node group's desired size only when told to: run cluster-autoscaler on the cluster "
    "(edgefabric/tiers/cloud_core/autoscaler.py) with a Pod Identity association for its service account.",
    _eks_autoscaled,
)


# ------------------------------------------------------------- pinned pool counts

def _pinned(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != GKE_POOL:
        args.not_applicable(f"{args.resource_type} is not a GKE node pool")
    p = plain(args.props)
    if p.get("autoscaling") and p.get("nodeCount") is not None:
        report(f"node pool '{args.name}' autoscales but pins nodeCount = {show(p['nodeCount'])}: every `up` "
               "resets what the autoscaler chose (and in a regional pool it counts per zone)")


autoscaled_pools_unpinned = resource_policy(
    "autoscaled-pools-unpinned",
    "An autoscaled GKE node pool does not set node_count.",
    "Use initial_node_count (ignored after creation) and total_min/max_node_count.",
    _pinned,
)


# -------------------------------------------------- plain public L4 load balancers

TLS_PORTS = {443, 8443, 8883, 6443}
HTTP_NAMES = ("http", "grpc", "ws", "web")


def _plain_l4(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != SERVICE:
        args.not_applicable("not a Service")
    p = plain(args.props)
    spec = p.get("spec") or {}
    if spec.get("type") != "LoadBalancer":
        args.not_applicable("not a LoadBalancer Service")
    notes = get(p, "metadata", "annotations", default={}) or {}
    internal = any(str(v).lower() in ("true", "internal") for k, v in notes.items()
                   if k.endswith(("load-balancer-internal", "aws-load-balancer-scheme", "load-balancer-type"))
                   and k != "service.beta.kubernetes.io/aws-load-balancer-type")
    if internal or spec.get("loadBalancerSourceRanges"):
        return
    for port in spec.get("ports") or []:
        number, name = port.get("port"), str(port.get("name") or "")
        if is_unknown(number) or int(number) in TLS_PORTS or name.startswith(HTTP_NAMES) or port.get("appProtocol"):
            continue
        report(f"Service '{args.name}' exposes {name or 'a port'} ({show(number)}) to the internet in plain "
               "text: terminate TLS on it or set loadBalancerSourceRanges")


no_plain_public_l4 = resource_policy(
    "no-plain-public-l4",
    "A public load balancer's non-HTTP ports use TLS or are restricted to source ranges.",
    "Serve the port with TLS (e.g. MQTT on 8883) or set spec.loadBalancerSourceRanges.",
    _plain_l4,
)


# ----------------------------------------------------------- GCP health checks

def _gcp_health(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != GCP_HEALTH_CHECK:
        args.not_applicable("not a GCP health check")
    p = plain(args.props)
    interval, timeout = p.get("checkIntervalSec", 5), p.get("timeoutSec", 5)
    problems: list[str] = []
    if any(is_unknown(v) for v in (interval, timeout)):
        return
    if p.get("sourceRegions") and interval < 30:
        problems.append(f"checkIntervalSec = {show(interval)} with sourceRegions (GCP requires >= 30)")
    if timeout > interval:
        problems.append(f"timeoutSec = {show(timeout)} above checkIntervalSec = {show(interval)}")
    for key in ("healthyThreshold", "unhealthyThreshold"):
        value = p.get(key)
        if value is not None and not is_unknown(value) and not 1 <= value <= 10:
            problems.append(f"{key} = {show(value)} (GCP allows 1..10)")
    for problem in problems:
        report(f"health check '{args.name}': {problem}")


gcp_health_check_limits = resource_policy(
    "gcp-health-check-limits",
    "GCP health checks stay within the limits the API enforces.",
    "Keep intervals >= 30 s when sourceRegions are set, timeouts within the interval, thresholds 1..10 "
    "(edgefabric:healthCheck).",
    _gcp_health,
)


POLICIES = [nodes_have_egress, public_lb_has_public_subnets, eks_depends_on_iam, requests_fit_min_nodes,
            hpa_has_metrics_server, autoscaled_pools_unpinned, no_plain_public_l4, gcp_health_check_limits,
            eks_node_groups_autoscaled]
