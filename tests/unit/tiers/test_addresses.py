"""Address plans: no two clusters of a stack overlap, and the cores keep their ranges."""

from __future__ import annotations

import ipaddress
import itertools

import pytest

from edgefabric.tiers.cloud_core.addresses import MAX_CLUSTERS_PER_CLOUD, aws_ranges, gcp_ranges
from tests.unit.tiers.conftest import rendered_stack


def all_ranges() -> list[tuple[str, ipaddress.IPv4Network]]:
    out = []
    for i in range(MAX_CLUSTERS_PER_CLOUD):
        a, g = aws_ranges(i), gcp_ranges(i)
        out.append((f"aws[{i}].vpc", ipaddress.IPv4Network(a.vpc)))
        out += [(f"gcp[{i}].{k}", ipaddress.IPv4Network(getattr(g, k))) for k in ("nodes", "pods", "services", "master")]
    return out


def test_no_two_clusters_ranges_overlap_in_or_across_clouds() -> None:
    clashes = [(x, y) for (x, a), (y, b) in itertools.combinations(all_ranges(), 2) if a.overlaps(b)]
    assert clashes == []


def test_subnets_sit_inside_their_vpc() -> None:
    for i in range(MAX_CLUSTERS_PER_CLOUD):
        r = aws_ranges(i)
        subnets = [ipaddress.IPv4Network(s) for s in (*r.private, *r.public)]
        assert all(s.subnet_of(ipaddress.IPv4Network(r.vpc)) for s in subnets)
        assert not any(a.overlaps(b) for a, b in itertools.combinations(subnets, 2))


def test_the_cores_keep_the_ranges_they_always_had() -> None:
    assert aws_ranges(0).vpc == "10.40.0.0/16" and aws_ranges(0).private == ("10.40.0.0/20", "10.40.16.0/20")
    assert aws_ranges(0).public == ("10.40.128.0/20", "10.40.144.0/20")
    assert gcp_ranges(0).nodes == "10.50.0.0/20"


def test_a_cluster_number_past_the_plan_is_a_bug() -> None:
    with pytest.raises(ValueError, match=r"0\.\.9 per cloud"):
        aws_ranges(MAX_CLUSTERS_PER_CLOUD)


def test_prods_far_aws_region_has_its_own_vpc_range() -> None:
    """Before, us-west's VPC was 10.40.0.0/16 like us-east's: the two could never be peered."""
    r = rendered_stack("prod")
    vpcs = {x.name: x.inputs["cidrBlock"] for x in r.of_type("aws:ec2/vpc:Vpc")}
    assert vpcs == {"aws-vpc": "10.40.0.0/16", "us-west-vpc": "10.41.0.0/16"}
    subnets = {x.name: x.inputs["ipCidrRange"] for x in r.of_type("gcp:compute/subnetwork:Subnetwork")}
    assert subnets == {"gcp-subnet": "10.50.0.0/20", "ap-south-subnet": "10.97.0.0/20"}
