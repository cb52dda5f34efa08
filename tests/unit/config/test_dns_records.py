"""`dns.records`: more published names, each following its own strategy; `dns.recordName`
keeps working as the one-record form. Mistakes name their key path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from edgefabric.config import load_config, raw_from_stack_file
from edgefabric.traffic.spec import FailoverSpec
from tests.kits.config import config_problems as problems

ROOT = Path(__file__).resolve().parents[3]
LOCAL = raw_from_stack_file(ROOT / "Pulumi.local.yaml")
ZONE = LOCAL["dns"]["backends"]["powerdns"]["zone"]


def local(**dns: Any) -> dict[str, Any]:
    raw = copy.deepcopy(LOCAL)
    raw["dns"] = {k: v for k, v in {**raw["dns"], **dns}.items() if v is not None}
    return raw


def test_the_local_stack_publishes_two_names_with_different_strategies() -> None:
    cfg = load_config(LOCAL)
    assert cfg.dns is not None
    names = [(r.name, r.strategy) for r in cfg.dns.all_records]
    assert names == [("api." + ZONE, "api-gateway"), ("analytics." + ZONE, "data-analytics")]
    specs = FailoverSpec.all_from_config(cfg, {c: f"127.0.1.{i}" for i, c in enumerate(cfg.traffic_clouds, 1)})
    assert [s.record_name for s in specs] == [n for n, _ in names]
    assert specs[0].strategy.order[0] == "aws" and specs[1].strategy.order[0] == "gcp"
    assert specs[1].strategy.replication == "active-passive"
    assert specs[1].strategy.load_balancing == "performance-based"
    assert {s.strategy.action for s in specs} == {cfg.failover.action}


def test_records_alone_are_the_names() -> None:
    cfg = load_config(local(recordName=None, records=[{"name": "a." + ZONE, "strategy": "api-gateway"}]))
    assert cfg.dns is not None and [r.name for r in cfg.dns.all_records] == ["a." + ZONE]


@pytest.mark.parametrize(("dns", "want"), [
    ({"recordName": None, "records": None}, "edgefabric:dns.recordName = None: a name"),
    ({"records": [{"name": "x." + ZONE, "strategy": "nope"}]}, "edgefabric:dns.records[0].strategy = 'nope'"),
    ({"records": [{"name": "x.elsewhere.", "strategy": "api-gateway"}]},
     "edgefabric:dns.records[0].name = 'x.elsewhere.': a name inside the powerdns zone"),
    ({"records": [{"name": "api." + ZONE, "strategy": "data-analytics"}]},
     "edgefabric:dns.records[0].name = 'api.edgefabric.local.': each published name once"),
    ({"records": [{"name": "No_Good", "strategy": "api-gateway"}]}, "edgefabric:dns.records[0].name = 'No_Good'"),
    ({"records": []}, "edgefabric:dns.records = []"),
])
def test_mistakes_name_their_key(dns: dict[str, Any], want: str) -> None:
    got = problems(local(**dns))
    assert any(p.startswith(want) for p in got), got


def test_traffic_manager_profiles_never_collide() -> None:
    # Traffic Manager beside a zone its names can CNAME from (Route53 here, in place of PowerDNS).
    backends = {"route53": {"zoneName": ZONE, "adopt": True},
                "azureTm": {"resourceGroup": "rg", "profileName": "edge", "relativeDnsName": "edge", "adopt": True}}
    raw = local(records=[{"name": "europe-africa." + ZONE, "strategy": "data-analytics"},
                         {"name": "geo." + ZONE, "strategy": "data-analytics"}])
    raw["dns"]["backends"] = backends
    got = problems(raw)
    assert any(p.startswith("edgefabric:dns.records[0].name") and "europe-africa" in p for p in got), got
    assert any(p.startswith("edgefabric:dns.records[1].name") and "'geo'" in p for p in got), got
    raw = local(records=[{"name": "analytics." + ZONE, "strategy": "data-analytics"}])
    raw["dns"]["backends"] = backends
    cfg = load_config(raw)
    specs = FailoverSpec.all_from_config(cfg, {c: "127.0.1.1" for c in cfg.traffic_clouds})
    assert [s.backends.azure_tm.profile_name for s in specs if s.backends.azure_tm] == ["edge", "edge-analytics"]
