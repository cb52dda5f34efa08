"""Tags and labels: every taggable cloud resource and every Kubernetes object says which
environment, tier and cloud it belongs to, and that edgefabric manages it.

The keys mirror edgefabric/tiers/labels.py (a test keeps them in step). Cloud resources carry
plain keys; Kubernetes objects carry them under `edgefabric.io/` plus the well-known
`app.kubernetes.io/managed-by`.
"""

from __future__ import annotations

from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs

from .common import get, is_unknown, plain, resource_policy, schema

CLOUD_TAG_KEYS: tuple[str, ...] = ("environment", "tier", "cloud", "managed-by")
K8S_LABEL_KEYS: tuple[str, ...] = (
    "edgefabric.io/environment",
    "edgefabric.io/tier",
    "edgefabric.io/cloud",
    "app.kubernetes.io/managed-by",
)

# Cloud resource types edgefabric creates that can carry tags, and where the tags live.
# GCP calls them labels; a node pool's VM labels are `nodeConfig.resourceLabels`
# (`nodeConfig.labels` are Kubernetes node labels, not GCE labels).
TAGGABLE: dict[str, tuple[str, ...]] = {
    "aws:ec2/vpc:Vpc": ("tags",),
    "aws:ec2/subnet:Subnet": ("tags",),
    "aws:ec2/securityGroup:SecurityGroup": ("tags",),
    "aws:iam/role:Role": ("tags",),
    "aws:eks/cluster:Cluster": ("tags",),
    "aws:eks/nodeGroup:NodeGroup": ("tags",),
    "aws:route53/zone:Zone": ("tags",),
    "aws:route53/healthCheck:HealthCheck": ("tags",),
    "azure-native:resources:ResourceGroup": ("tags",),
    "azure-native:containerservice:ManagedCluster": ("tags",),
    "azure-native:containerservice:AgentPool": ("tags",),
    "azure-native:network:Profile": ("tags",),
    "gcp:container/cluster:Cluster": ("resourceLabels",),
    "gcp:container/nodePool:NodePool": ("nodeConfig", "resourceLabels"),
    "gcp:dns/managedZone:ManagedZone": ("labels",),
}

DOCKER_LABELLED = ("docker:index/container:Container", "docker:index/network:Network")


def _missing(tags: Any, keys: tuple[str, ...]) -> list[str]:
    if is_unknown(tags):
        return []
    tags = tags if isinstance(tags, dict) else {}
    return [k for k in keys if not (isinstance(tags.get(k), str) and tags.get(k))]


def _docker_labels(props: dict[str, Any]) -> dict[str, Any]:
    # docker.Container takes labels as a list of {label, value}.
    out: dict[str, Any] = {}
    for item in props.get("labels") or []:
        if isinstance(item, dict) and isinstance(item.get("label"), str):
            out[item["label"]] = item.get("value")
    return out


def _validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
    typ = args.resource_type
    cloud_keys = tuple(args.get_config().get("cloudKeys") or CLOUD_TAG_KEYS)
    k8s_keys = tuple(args.get_config().get("kubernetesKeys") or K8S_LABEL_KEYS)
    if typ in TAGGABLE:
        where = ".".join(TAGGABLE[typ])
        missing = _missing(get(plain(args.props), *TAGGABLE[typ], default={}), cloud_keys)
    elif typ.startswith("kubernetes:"):
        where = "metadata.labels"
        missing = _missing(get(plain(args.props), "metadata", "labels", default={}), k8s_keys)
    elif typ in DOCKER_LABELLED:
        # Docker objects are not Kubernetes objects: the plain cloud keys, or the Kubernetes
        # ones, are both complete answers.
        where = "labels"
        labels = _docker_labels(plain(args.props))
        as_cloud, as_k8s = _missing(labels, cloud_keys), _missing(labels, k8s_keys)
        missing = as_cloud if len(as_cloud) <= len(as_k8s) else as_k8s
    else:
        args.not_applicable(f"{typ} is not a taggable type")
        return
    if missing:
        report(f"{typ} '{args.name}' is missing {', '.join(missing)} in {where}")


required_labels = resource_policy(
    "required-labels",
    "Taggable cloud resources and Kubernetes objects carry environment, tier, cloud and managed-by.",
    "Build tags with edgefabric.tiers.labels.cloud_tags(...) for cloud resources and "
    "edgefabric.tiers.labels.k8s_labels(...) for Kubernetes metadata.labels; never hand-write them.",
    _validate,
    schema(
        cloudKeys={"type": "array", "items": {"type": "string"}},
        kubernetesKeys={"type": "array", "items": {"type": "string"}},
    ),
)

POLICIES = [required_labels]
