"""The node autoscaler of an EKS cluster: cluster-autoscaler, with the AWS identity it needs.

AKS and GKE scale their pools themselves (`enable_auto_scaling`, `autoscaling`); on EKS a
managed node group only has a size range, and something in the cluster must move its desired
size. cluster-autoscaler does, from unschedulable pods and idle nodes. EKS tags the managed
node group's Auto Scaling group with `k8s.io/cluster-autoscaler/enabled` and
`k8s.io/cluster-autoscaler/<cluster>`, which the autoscaler discovers it by; its IAM role may
change only groups carrying the second tag (the policy's condition), and reaches the pod
through EKS Pod Identity (the `eks-pod-identity-agent` add-on and an association for its
service account), so no OIDC provider and no static key.

`trust_policy`, `iam_policy`, `command` and `pod_spec` are pure (documents as plain dicts);
`deploy` registers the Kubernetes side through the cluster's provider.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from edgefabric.config import CLUSTER_AUTOSCALER_RELEASES

NAMESPACE = "kube-system"
NAME = "cluster-autoscaler"
IMAGE = "registry.k8s.io/autoscaling/cluster-autoscaler"
METRICS_PORT = 8085  # --address: /metrics and /health-check
USER = 65532  # distroless static:nonroot (image_facts.yaml)


def image(kubernetes_version: str) -> str:
    """The release made for the cluster's minor version (the autoscaler supports only its own:
    it reads the scheduler's code of that release). Config rules refuse a version without one."""
    return f"{IMAGE}:{CLUSTER_AUTOSCALER_RELEASES[kubernetes_version]}"


def trust_policy() -> str:
    """Who may assume the autoscaler's role: EKS Pod Identity, on behalf of the pod."""
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"},
        "Action": ["sts:AssumeRole", "sts:TagSession"]}]})


def iam_policy(cluster_name: str) -> str:
    """Read every group, change only this cluster's (the tag EKS puts on its node groups)."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Resource": "*", "Action": [
            "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
            "autoscaling:DescribeLaunchConfigurations", "autoscaling:DescribeScalingActivities",
            "autoscaling:DescribeTags", "ec2:DescribeImages", "ec2:DescribeInstanceTypes",
            "ec2:DescribeLaunchTemplateVersions", "ec2:GetInstanceTypesFromInstanceRequirements",
            "eks:DescribeNodegroup"]},
        {"Effect": "Allow", "Resource": "*",
         "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
         "Condition": {"StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"}}},
    ]})


def _rule(groups: list[str], resources: list[str], verbs: list[str], names: list[str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"apiGroups": groups, "resources": resources, "verbs": verbs}
    if names:
        rule["resourceNames"] = names
    return rule


READ = ["get", "list", "watch"]
# What the autoscaler reads to simulate scheduling and drains, and what it writes: node
# taints and deletions, evictions, its status ConfigMap and its leader lease.
CLUSTER_RULES = [
    _rule([""], ["events", "endpoints"], ["create", "patch"]),
    _rule([""], ["pods/eviction"], ["create"]),
    _rule([""], ["pods/status"], ["update"]),
    _rule([""], ["endpoints"], ["get", "update"], [NAME]),
    _rule([""], ["nodes"], [*READ, "update"]),
    _rule([""], ["namespaces", "pods", "services", "replicationcontrollers", "persistentvolumeclaims",
                 "persistentvolumes"], READ),
    _rule(["apps"], ["statefulsets", "replicasets", "daemonsets"], READ),
    _rule(["policy"], ["poddisruptionbudgets"], ["list", "watch"]),
    _rule(["storage.k8s.io"], ["storageclasses", "csinodes", "csidrivers", "csistoragecapacities"], READ),
    _rule(["batch"], ["jobs", "cronjobs"], [*READ, "patch"]),
    _rule(["coordination.k8s.io"], ["leases"], ["create"]),
    _rule(["coordination.k8s.io"], ["leases"], ["get", "update"], [NAME]),
    _rule(["resource.k8s.io"], ["resourceclaims", "resourceslices", "deviceclasses"], READ),
]
NAMESPACE_RULES = [
    _rule([""], ["configmaps"], ["create", "list", "watch"]),
    _rule([""], ["configmaps"], ["delete", "get", "update", "watch"],
          ["cluster-autoscaler-status", "cluster-autoscaler-priority-expander"]),
]


def command(cluster_name: str) -> list[str]:
    return [
        "/cluster-autoscaler", "--cloud-provider=aws",
        f"--node-group-auto-discovery=asg:tag=k8s.io/cluster-autoscaler/enabled,k8s.io/cluster-autoscaler/{cluster_name}",
        # Several groups of one shape scale together; the cheapest fit wins.
        "--balance-similar-node-groups", "--expander=least-waste",
        # Our pods keep nothing on local disks; system pods (coredns, ...) may move.
        "--skip-nodes-with-local-storage=false", "--skip-nodes-with-system-pods=false",
        f"--address=:{METRICS_PORT}", "--stderrthreshold=info", "--v=2",
    ]


def pod_spec(cluster_name: str, kubernetes_version: str, region: str) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/health-check", "port": METRICS_PORT}, "periodSeconds": 30}
    return {
        "serviceAccountName": NAME,
        "priorityClassName": "system-cluster-critical",
        "securityContext": {"runAsNonRoot": True, "runAsUser": USER, "runAsGroup": USER, "fsGroup": USER},
        "containers": [{
            "name": NAME, "image": image(kubernetes_version), "command": command(cluster_name),
            "env": [{"name": "AWS_REGION", "value": region}],
            "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
            "resources": {"requests": {"cpu": "100m", "memory": "300Mi"},
                          "limits": {"cpu": "100m", "memory": "300Mi"}},
            "livenessProbe": probe, "readinessProbe": probe,
            "securityContext": {"runAsNonRoot": True, "runAsUser": USER, "runAsGroup": USER,
                                "allowPrivilegeEscalation": False, "privileged": False,
                                "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
        }],
    }


def deploy(cluster_name: str, kubernetes_version: str, region: str, labels: dict[str, str],
           provider: k8s.Provider, parent: pulumi.Resource, prefix: str = "aws") -> k8s.apps.v1.Deployment:
    """The service account (its AWS role comes by Pod Identity), RBAC and the Deployment;
    `prefix` starts their logical names (the cloud, or a region with its own cluster)."""
    opts = pulumi.ResourceOptions(parent=parent, provider=provider)
    meta = {"name": NAME, "namespace": NAMESPACE, "labels": {**labels, "app.kubernetes.io/name": NAME}}
    account = k8s.core.v1.ServiceAccount(f"{prefix}-autoscaler", metadata=meta, opts=opts)
    cluster_meta = {"name": NAME, "labels": meta["labels"]}
    role = k8s.rbac.v1.ClusterRole(f"{prefix}-autoscaler", metadata=cluster_meta, rules=CLUSTER_RULES, opts=opts)
    subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
    k8s.rbac.v1.ClusterRoleBinding(
        f"{prefix}-autoscaler", metadata=cluster_meta, subjects=subject,
        role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[role])))
    ns_role = k8s.rbac.v1.Role(f"{prefix}-autoscaler", metadata=meta, rules=NAMESPACE_RULES, opts=opts)
    k8s.rbac.v1.RoleBinding(
        f"{prefix}-autoscaler", metadata=meta, subjects=subject,
        role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[ns_role])))
    selector = {"app.kubernetes.io/name": NAME}
    return k8s.apps.v1.Deployment(
        f"{prefix}-autoscaler", metadata=meta,
        spec={"replicas": 1, "selector": {"matchLabels": selector},
              "template": {"metadata": {"labels": meta["labels"]},
                           "spec": pod_spec(cluster_name, kubernetes_version, region)}},
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[account])))
