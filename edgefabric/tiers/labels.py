"""The standard tags and labels every edgefabric resource carries.

Cloud resources get plain keys (`environment`, `tier`, `cloud`, `managed-by`); Kubernetes
objects get the same facts under the `edgefabric.io/` prefix plus the well-known
`app.kubernetes.io/managed-by`. Policies (policies/) check for exactly these keys.
"""

from __future__ import annotations

from collections.abc import Mapping

MANAGED_BY = "edgefabric"
TAG_KEYS: tuple[str, ...] = ("environment", "tier", "cloud", "managed-by")
LABEL_PREFIX = "edgefabric.io/"
K8S_LABEL_KEYS: tuple[str, ...] = (
    "edgefabric.io/environment",
    "edgefabric.io/tier",
    "edgefabric.io/cloud",
    "app.kubernetes.io/managed-by",
)


def cloud_tags(environment: str, tier: str, cloud: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Tags for AWS/Azure resources and labels for GCP (all values are lowercase-safe)."""
    tags = dict(extra or {})
    tags.update({"environment": environment, "tier": tier, "cloud": cloud, "managed-by": MANAGED_BY})
    return tags


def k8s_labels(environment: str, tier: str, cloud: str, app: str | None = None) -> dict[str, str]:
    labels = {
        "edgefabric.io/environment": environment,
        "edgefabric.io/tier": tier,
        "edgefabric.io/cloud": cloud,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    if app is not None:
        labels["app.kubernetes.io/name"] = app
    return labels
