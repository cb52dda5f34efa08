"""Clusters: API endpoints private or CIDR-restricted, autoscaling bounds on node pools, and
a Kubernetes version inside the supported window from policy config."""

from __future__ import annotations

import re
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs

from .common import config_value, get, is_unknown, plain, resource_policy, schema, show

EKS = "aws:eks/cluster:Cluster"
EKS_NODES = "aws:eks/nodeGroup:NodeGroup"
AKS = "azure-native:containerservice:ManagedCluster"
AKS_POOL = "azure-native:containerservice:AgentPool"
GKE = "gcp:container/cluster:Cluster"
GKE_POOL = "gcp:container/nodePool:NodePool"

_OPEN = {"0.0.0.0/0", "::/0"}


# ------------------------------------------------------------------ API endpoint

def _cidr_problem(cidrs: Any, what: str) -> str | None:
    if is_unknown(cidrs):
        return None
    cidrs = [c for c in (cidrs or []) if c]
    if not cidrs:
        return f"{what} is public and not restricted to any CIDR"
    open_ = sorted(set(cidrs) & _OPEN)
    if open_:
        return f"{what} is open to {', '.join(open_)}"
    return None


def _endpoint(args: ResourceValidationArgs, report: ReportViolation) -> None:
    p = plain(args.props)
    typ = args.resource_type
    if typ == EKS:
        # EKS defaults endpointPublicAccess to true and publicAccessCidrs to 0.0.0.0/0.
        public = get(p, "vpcConfig", "endpointPublicAccess", default=True)
        problem = None if public is False or is_unknown(public) else _cidr_problem(
            get(p, "vpcConfig", "publicAccessCidrs"), "EKS API endpoint")
    elif typ == AKS:
        private = get(p, "apiServerAccessProfile", "enablePrivateCluster", default=False)
        problem = None if private is True or is_unknown(private) else _cidr_problem(
            get(p, "apiServerAccessProfile", "authorizedIPRanges"), "AKS API server")
    elif typ == GKE:
        private = get(p, "privateClusterConfig", "enablePrivateEndpoint", default=False)
        blocks = get(p, "masterAuthorizedNetworksConfig", "cidrBlocks", default=[])
        cidrs = blocks if is_unknown(blocks) else [b.get("cidrBlock") for b in blocks if isinstance(b, dict)]
        problem = None if private is True or is_unknown(private) else _cidr_problem(cidrs, "GKE control plane")
    else:
        args.not_applicable(f"{typ} is not a managed cluster")
        return
    if problem:
        report(f"cluster '{args.name}': {problem}")


cluster_endpoint_restricted = resource_policy(
    "cluster-endpoint-restricted",
    "EKS/AKS/GKE API endpoints are private, or public only to listed CIDRs (never 0.0.0.0/0).",
    "Leave edgefabric:core.clusters.<cloud>.apiAllowedCidrs empty for a private endpoint, or list "
    "the operator/CI CIDRs that may reach the API server.",
    _endpoint,
)


# ------------------------------------------------------------------- autoscaling

def _bounds(lo: Any, hi: Any, cap: int) -> str | None:
    if is_unknown(lo) or is_unknown(hi):
        return None
    if lo is None or hi is None:
        return "has no autoscaling min/max"
    if not 1 <= int(lo) <= int(hi):
        return f"has autoscaling bounds {show(lo)}..{show(hi)} (need 1 <= min <= max)"
    if int(hi) > cap:
        return f"may scale to {show(hi)} nodes, above the cap of {cap}"
    return None


def _autoscaling(args: ResourceValidationArgs, report: ReportViolation) -> None:
    p = plain(args.props)
    typ = args.resource_type
    cap = int(config_value(args, "maxNodes", 100))
    pools: list[tuple[str, str | None]] = []
    if typ == EKS_NODES:
        pools.append((args.name, _bounds(get(p, "scalingConfig", "minSize"), get(p, "scalingConfig", "maxSize"), cap)))
    elif typ in (AKS, AKS_POOL):
        profiles = get(p, "agentPoolProfiles", default=[]) if typ == AKS else [p]
        for i, prof in enumerate(profiles if isinstance(profiles, list) else []):
            name = f"{args.name}.agentPoolProfiles[{i}]" if typ == AKS else args.name
            if prof.get("enableAutoScaling") is not True:
                pools.append((name, "does not enable autoscaling"))
            else:
                pools.append((name, _bounds(prof.get("minCount"), prof.get("maxCount"), cap)))
    elif typ == GKE_POOL:
        auto = get(p, "autoscaling", default={})
        lo = get(auto, "minNodeCount") if get(auto, "minNodeCount") is not None else get(auto, "totalMinNodeCount")
        hi = get(auto, "maxNodeCount") if get(auto, "maxNodeCount") is not None else get(auto, "totalMaxNodeCount")
        pools.append((args.name, _bounds(lo, hi, cap)))
    else:
        args.not_applicable(f"{typ} is not a node pool")
    for name, problem in pools:
        if problem:
            report(f"node pool '{name}' {problem}")


node_pool_autoscaling = resource_policy(
    "node-pool-autoscaling",
    "Node pools autoscale within explicit bounds (1 <= min <= max <= maxNodes).",
    "Set edgefabric:core.clusters.<cloud>.minNodes/maxNodes; the cloud core passes them to the "
    "EKS scalingConfig, AKS enableAutoScaling/minCount/maxCount and GKE autoscaling.",
    _autoscaling,
    schema(maxNodes={"type": "integer", "minimum": 1}),
)


# ---------------------------------------------------------------------- version

_VERSION_FIELDS: dict[str, tuple[str, bool]] = {
    # type: (field, required) — clusters must pin a version; pools may follow the cluster.
    EKS: ("version", True),
    EKS_NODES: ("version", False),
    AKS: ("kubernetesVersion", True),
    AKS_POOL: ("orchestratorVersion", False),
    GKE: ("minMasterVersion", True),
    GKE_POOL: ("version", False),
}


def _minor(version: str) -> tuple[int, int] | None:
    m = re.match(r"^v?(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _version(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in _VERSION_FIELDS:
        args.not_applicable(f"{args.resource_type} has no Kubernetes version")
    field, required = _VERSION_FIELDS[args.resource_type]
    lo_text = str(config_value(args, "minVersion", "1.30"))
    hi_text = str(config_value(args, "maxVersion", "1.33"))
    lo, hi = _minor(lo_text), _minor(hi_text)
    assert lo and hi, "minVersion/maxVersion must look like 1.30"
    p = plain(args.props)
    versions: list[tuple[str, Any]] = [(field, p.get(field))]
    if args.resource_type == AKS:
        for i, prof in enumerate(p.get("agentPoolProfiles") or []):
            if isinstance(prof, dict):
                versions.append((f"agentPoolProfiles[{i}].orchestratorVersion", prof.get("orchestratorVersion")))
    for where, value in versions:
        if is_unknown(value):
            continue
        if value is None:
            if required and where == field:
                report(f"'{args.name}' does not pin {field}; the provider default drifts "
                       f"(supported window {lo_text}..{hi_text})")
            continue
        minor = _minor(str(value))
        if minor is None or not lo <= minor <= hi:
            report(f"'{args.name}' {where} = {value!r} is outside the supported window {lo_text}..{hi_text}")


kubernetes_version_window = resource_policy(
    "kubernetes-version-window",
    "Cluster and node pool Kubernetes versions are within the supported window.",
    "Set edgefabric:core.clusters.<cloud>.kubernetesVersion inside the window in "
    "policies/config/<env>.json (minVersion..maxVersion), or move the window when a version is "
    "released or retired.",
    _version,
    schema(minVersion={"type": "string", "pattern": r"^1\.[0-9]+$"},
           maxVersion={"type": "string", "pattern": r"^1\.[0-9]+$"}),
)

POLICIES = [cluster_endpoint_restricted, node_pool_autoscaling, kubernetes_version_window]
