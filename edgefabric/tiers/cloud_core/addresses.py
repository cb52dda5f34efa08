"""Each created cluster's private address ranges, distinct across one stack's clusters.

A cloud's core cluster is number 0 and keeps the ranges it always had (changing a VPC's or a
subnet's range replaces it); a far region's own cluster (`regions[].cluster`) is number 1, 2, ...
in config order among that cloud's far regions. No two clusters of a stack overlap, in one
cloud or across the two that have networks of ours (AWS 10.40-10.49, GCP 10.50-10.56 for the
core and 10.97-10.105 / 10.128-10.163 for regions), so any pair can be peered or joined by a VPN
later without renumbering. (AKS clusters use Azure's managed network: no ranges of ours.)
Pure: the cloud builders take these strings.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from edgefabric.config.vocab import MAX_FAR_REGION_CLUSTERS

MAX_CLUSTERS_PER_CLOUD = 1 + MAX_FAR_REGION_CLUSTERS  # the core and its far regions: the blocks below hold ten


@dataclass(frozen=True)
class AwsRanges:
    vpc: str
    private: tuple[str, ...]  # one /20 per availability zone, for nodes and internal load balancers
    public: tuple[str, ...]  # one /20 per availability zone, for NAT gateways and internet-facing ones


@dataclass(frozen=True)
class GcpRanges:
    nodes: str  # the subnetwork's primary range
    pods: str  # its secondary range `pods`
    services: str  # its secondary range `services`
    master: str  # the private control plane's /28


def _check(index: int) -> None:
    if not 0 <= index < MAX_CLUSTERS_PER_CLOUD:
        raise ValueError(f"cluster number {index}: 0..{MAX_CLUSTERS_PER_CLOUD - 1} per cloud")


def aws_ranges(index: int, zones: int = 2) -> AwsRanges:
    """Cluster `index`'s VPC `10.(40+index).0.0/16`: private subnets from its first /20s,
    public ones from the upper half (as the core's always were)."""
    _check(index)
    slices = list(ipaddress.ip_network(f"10.{40 + index}.0.0/16").subnets(new_prefix=20))
    return AwsRanges(vpc=f"10.{40 + index}.0.0/16", private=tuple(str(s) for s in slices[:zones]),
                     public=tuple(str(s) for s in slices[8:8 + zones]))


def gcp_ranges(index: int) -> GcpRanges:
    _check(index)
    if index == 0:
        return GcpRanges(nodes="10.50.0.0/20", pods="10.52.0.0/14", services="10.56.0.0/20", master="172.16.0.32/28")
    return GcpRanges(nodes=f"10.{96 + index}.0.0/20", pods=f"10.{128 + 4 * (index - 1)}.0.0/14",
                     services=f"10.{96 + index}.16.0/20", master=f"172.16.0.{32 + 16 * index}/28")
