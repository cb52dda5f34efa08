"""How a created cluster is reached and what its images need, refused before any resource:
documentation CIDRs, a private endpoint without a runner, Keycloak without a database, a
varnish cache without an origin. Each case names the key path, the value and what is allowed."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest

from edgefabric.config import ConfigError, load_config, raw_from_stack_file

ROOT = Path(__file__).resolve().parents[3]


def _raw(stack: str) -> dict:
    return raw_from_stack_file(ROOT / f"Pulumi.{stack}.yaml")


def _problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(raw)
    return err.value.problems


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_the_shipped_stacks_declare_a_way_in_and_a_database(stack: str) -> None:
    cfg = load_config(_raw(stack))
    assert {size.api_access for size in cfg.core.clusters.values()} == {"runner"}
    keycloak = [s for s in cfg.core.services if s.image.startswith("quay.io/keycloak/")]
    assert keycloak and all(s.database is not None for s in keycloak)


def _cluster(cloud: str, **fields: object) -> Callable[[dict], None]:
    def mutate(raw: dict) -> None:
        raw["core"]["clusters"][cloud] = {**raw["core"]["clusters"][cloud], **fields}
    return mutate


@pytest.mark.parametrize(("mutate", "line"), [
    # What dev and staging shipped before: a documentation range nobody connects from.
    (_cluster("aws", apiAllowedCidrs=["203.0.113.0/24"], apiAccess="public"),
     "core.clusters.aws.apiAllowedCidrs[0] = '203.0.113.0/24': the deployer's or CI's egress CIDR, "
     "not a documentation range"),
    (_cluster("gcp", apiAllowedCidrs=["2001:db8:1::/48"], apiAccess="public"),
     "core.clusters.gcp.apiAllowedCidrs[0] = '2001:db8:1::/48'"),
    # What prod shipped before: private endpoints and nothing inside the network.
    (_cluster("azure", apiAccess=None),
     "core.clusters.azure.apiAccess = None: 'runner' (pulumi runs inside the cluster's network)"),
    (_cluster("aws", apiAllowedCidrs=["198.18.0.0/24"], apiAccess="runner"),
     "core.clusters.aws.apiAccess = 'runner': 'public' (or unset) with apiAllowedCidrs"),
])
def test_a_cluster_nobody_can_reach_is_refused(mutate: Callable[[dict], None], line: str) -> None:
    raw = copy.deepcopy(_raw("prod"))
    mutate(raw)
    problems = _problems(raw)
    assert any(p.startswith(f"edgefabric:{line}") for p in problems), problems


def test_a_restricted_public_endpoint_is_a_way_in() -> None:
    raw = copy.deepcopy(_raw("prod"))
    _cluster("aws", apiAllowedCidrs=["198.18.0.0/24"], apiAccess="public")(raw)
    assert load_config(raw).core.clusters["aws"].api_allowed_cidrs == ["198.18.0.0/24"]


def test_keycloak_without_a_database_is_refused_on_created_clusters() -> None:
    raw = copy.deepcopy(_raw("staging"))
    i = next(i for i, s in enumerate(raw["core"]["services"]) if s["kind"] == "user-management")
    del raw["core"]["services"][i]["database"]
    assert any(p.startswith(f"edgefabric:core.services[{i}].database = None: a PostgreSQL database")
               for p in _problems(raw))


def test_a_varnish_cache_without_a_gateway_to_front_is_refused() -> None:
    raw = copy.deepcopy(_raw("dev"))
    region = raw["regions"][0]
    region["services"] = [s for s in region["services"] if s["kind"] != "regional-gateway"]
    j = next(j for j, s in enumerate(region["services"]) if s["kind"] == "content-cache")
    assert any(p.startswith(f"edgefabric:regions[0].services[{j}].image = 'varnish:7.6.1': a region with a regional-gateway")
               for p in _problems(raw))
