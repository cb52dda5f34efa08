"""The vocabularies stack files are written in: cloud names and user regions.

Config validates against these; the DNS backends translate user regions into each
vendor's geography (`edgefabric.traffic.dns.regions`), so the names live here, once.
"""

from __future__ import annotations

from typing import Literal

Cloud = Literal["aws", "azure", "gcp"]
CLOUDS: tuple[Cloud, ...] = ("aws", "azure", "gcp")

# User regions for routing rules, and the continent code each maps to (the codes Route53
# geolocation understands).
USER_REGIONS: dict[str, str] = {
    "north-america": "NA",
    "south-america": "SA",
    "europe": "EU",
    "africa": "AF",
    "asia": "AS",
    "australia": "OC",
    "antarctica": "AN",
}

# cluster-autoscaler releases by Kubernetes minor version (EKS clusters run it; it supports only
# the minor it was cut for). A version missing here is refused for a cluster the stack creates
# on AWS (`core.clusters.aws.kubernetesVersion`). Tags: registry.k8s.io/autoscaling/cluster-autoscaler.
CLUSTER_AUTOSCALER_RELEASES: dict[str, str] = {
    "1.32": "v1.32.0",
    "1.33": "v1.33.0",
    "1.34": "v1.34.0",
    "1.35": "v1.35.0",
}

# Regions of one cloud on clusters of their own (`regions[].cluster`): each gets private address
# ranges of its own beside its core's (edgefabric.tiers.cloud_core.addresses holds ten blocks).
MAX_FAR_REGION_CLUSTERS = 9
