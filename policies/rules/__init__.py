"""edgefabric policies, one module per area. `ALL_POLICIES` is what the pack enforces."""

from __future__ import annotations

from pulumi_policy import Policy

from . import cloud, clusters, images, placement, registry, secrets, tags, traffic, workloads

ALL_POLICIES: list[Policy] = [
    *tags.POLICIES,
    *workloads.POLICIES,
    *images.POLICIES,
    *clusters.POLICIES,
    *cloud.POLICIES,
    *placement.POLICIES,
    *traffic.POLICIES,
    *registry.POLICIES,
    *secrets.POLICIES,
]
