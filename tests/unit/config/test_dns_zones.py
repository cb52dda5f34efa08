"""One authoritative zone per published name (`dns.authority`, edgefabric.config.zones): the
shipped stacks publish each name in one zone, and every way of breaking that is refused with
its key path before anything is registered."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from edgefabric.config import load_config, raw_from_stack_file, zones
from edgefabric.tiers.dns_zones import published_names
from tests.kits.config import config_problems as problems

ROOT = Path(__file__).resolve().parents[3]
DEV = raw_from_stack_file(ROOT / "Pulumi.dev.yaml")


def dev(authority: Any = "route53", **backends: Any) -> dict[str, Any]:
    raw = copy.deepcopy(DEV)
    raw["dns"]["authority"] = authority
    if authority is None:
        del raw["dns"]["authority"]
    for key, value in backends.items():
        if value is None:
            del raw["dns"]["backends"][key]
        else:
            raw["dns"]["backends"][key] = {**raw["dns"]["backends"].get(key, {}), **value}
    return raw


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_each_shipped_name_has_one_authoritative_zone(stack: str) -> None:
    cfg = load_config(raw_from_stack_file(ROOT / f"Pulumi.{stack}.yaml"))
    assert cfg.dns is not None and cfg.dns.authority_backend == "route53"
    record = cfg.dns.all_records[0].name
    tm = cfg.dns.backends.azure_tm
    assert tm is not None
    names = published_names(cfg.dns, [record], {record: tm.relative_dns_name})[record]
    gcp_zone = cfg.dns.backends.gcp_dns.dns_name if cfg.dns.backends.gcp_dns else None
    assert gcp_zone is not None
    # Route53 answers for the name itself; Cloud DNS only inside its own, delegated subzone.
    assert names["route53"] == record
    assert names["gcpDns"] == f"{record.split('.')[0]}.{gcp_zone}" and zones.within(names["gcpDns"], gcp_zone)
    assert not zones.within(record, gcp_zone) and zones.below(gcp_zone, cfg.dns.backends.route53.zone_name)
    assert names["azureTm"].startswith(f"{record.split('.')[0]}.tm.")
    # No name is answered by two zones.
    assert len(set(names.values())) == len(names)


def test_the_old_defect_two_zones_for_one_name_is_refused() -> None:
    # Cloud DNS hosting the same zone as Route53: the name would be answered by two zones.
    got = problems(dev(gcpDns={"dnsName": "edgefabric.example.com."}))
    assert any(p.startswith("edgefabric:dns.backends.gcpDns.dnsName = 'edgefabric.example.com.': a subzone of "
                            "the authority's zone") for p in got), got


def test_several_zone_backends_need_an_authority() -> None:
    (line,) = problems(dev(authority=None))
    assert line.startswith("edgefabric:dns.authority = None: the backend whose zone answers for the names: "
                           "route53 | gcpDns"), line


def test_the_authority_is_a_configured_zone_backend() -> None:
    (line,) = problems(dev(authority="powerdns"))
    assert line == "edgefabric:dns.authority = 'powerdns': a configured zone backend: route53 | gcpDns", line
    got = problems(dev(authority="azureTm"))
    assert any(p.startswith("edgefabric:dns.authority = 'azureTm'") and "'route53', 'gcpDns' or 'powerdns'" in p
               for p in got), got


def test_cloud_dns_names_its_zone() -> None:
    raw = dev(gcpDns={})
    del raw["dns"]["backends"]["gcpDns"]["dnsName"]
    got = problems(raw)
    assert any(p.startswith("edgefabric:dns.backends.gcpDns.dnsName = None: the managed zone's DNS name")
               for p in got), got


def test_a_subzone_that_holds_a_published_name_is_refused() -> None:
    got = problems(dev(gcpDns={"dnsName": "dev.edgefabric.example.com."}))
    assert any(p.startswith("edgefabric:dns.backends.gcpDns.dnsName = 'dev.edgefabric.example.com.': a subzone "
                            "that holds none of the published names") for p in got), got


def test_names_outside_the_authoritys_zone_are_refused() -> None:
    raw = dev()
    raw["dns"]["recordName"] = "api.dev.example.org."
    got = problems(raw)
    assert any(p.startswith("edgefabric:dns.recordName = 'api.dev.example.org.': a name inside the route53 zone "
                            "'edgefabric.example.com.'") for p in got), got


def test_traffic_manager_needs_a_cloud_zone_to_cname_from() -> None:
    raw = dev(authority=None, route53=None, gcpDns=None)
    got = problems(raw)
    assert any(p.startswith("edgefabric:dns.backends.azureTm = 'configured': a route53 or gcpDns zone beside it")
               for p in got), got


def test_powerdns_may_be_a_secondary_but_not_the_authority_of_cloud_zones() -> None:
    pdns = {"apiUrl": "http://127.0.0.1:8081", "apiKeyRef": "env:PDNS_KEY", "zone": "pdns.edgefabric.example.com."}
    cfg = load_config(dev(powerdns=pdns))  # its subzone's delegation is the operator's: the policy says so
    assert cfg.dns is not None and cfg.dns.zones["powerdns"] == "pdns.edgefabric.example.com."
    raw = dev(authority="powerdns", route53=None, azureTm=None,
              powerdns={**pdns, "zone": "edgefabric.example.com."},
              gcpDns={"dnsName": "gcp.dev.edgefabric.example.com."})
    got = problems(raw)
    assert any(p.startswith("edgefabric:dns.authority = 'powerdns': a cloud zone (route53 or gcpDns)")
               for p in got), got


def test_standby_names_must_not_collide() -> None:
    raw = dev()
    # Same first label under two parents: both would be api.<gcp zone> in the secondary.
    raw["dns"]["records"] = [{"name": "api.staging.edgefabric.example.com.", "strategy": "api-gateway"}]
    got = problems(raw)
    assert any(p.startswith("edgefabric:dns.records[0].name = 'api.staging.edgefabric.example.com.': a first label "
                            "other than 'api'") for p in got), got
