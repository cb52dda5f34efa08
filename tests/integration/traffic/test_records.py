"""Several published names (`dns.records`), each following its own strategy: the controller
publishes them all into real PowerDNS, and each backend takes them in batches (counted at
moto, the fakes and PowerDNS's HTTP API)."""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.endpoints import LocalEndpoints
from devenv.powerdns import PowerDnsServer
from edgefabric.config import load_stack_file
from edgefabric.controller.daemon import Controller, failover_specs
from edgefabric.traffic.dns import powerdns as powerdns_module
from edgefabric.traffic.dns.base import DnsBackendError, HealthSettings, RecordSpec, apply_records
from edgefabric.traffic.dns.powerdns import PowerDnsBackend
from edgefabric.traffic.dns.route53 import MAX_CHANGES, Route53Backend, batch_cost
from edgefabric.traffic.health import Thresholds
from edgefabric.traffic.planner import Plan, PlanInput, RegionRule, Strategy, plan
from tests.fakes.azure_tm import FakeTrafficManager
from tests.fakes.gcp_dns import FakeCloudDns
from tests.integration.conftest import AZ_SUB, ZONE, answer_counts
from tests.integration.traffic.test_backends import _tm_put, gcp_backend, tm_backend

IPS = {"aws": "127.0.1.1", "azure": "127.0.1.2", "gcp": "127.0.1.3"}
HEALTH = HealthSettings("HTTP", 8080, "/health", 10, 5, Thresholds(3, 2, 60))
RR = Strategy(("aws", "azure", "gcp"), load_balancing="round-robin")
RULES = (RegionRule("europe-africa", ("europe", "africa"), "azure", 70),)


def records(n: int, prefix: str) -> list[RecordSpec]:
    return [RecordSpec(f"{prefix}{i}.{ZONE}", 30, IPS, HEALTH) for i in range(n)]


# --------------------------------------------------------------------- batching


def test_powerdns_takes_every_record_in_one_patch(pdns: PowerDnsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: collections.Counter[str] = collections.Counter()
    real = powerdns_module.json_request

    def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        calls[method] += 1
        return real(method, url, *args, **kwargs)

    monkeypatch.setattr(powerdns_module, "json_request", counted)
    backend = PowerDnsBackend(pdns.api_url, pdns.api_key, pdns.zone)
    specs = records(100, "pbatch")
    items = [(s, plan(PlanInput(RR, health={"aws": i % 2 == 0}))) for i, s in enumerate(specs)]
    assert apply_records(backend, items).changed
    assert calls == {"GET": 1, "PATCH": 1}  # 100 records: one read of the zone, one PATCH
    assert backend.read(specs[0]) == {"default": {"aws": 34, "azure": 33, "gcp": 33}}
    assert backend.read(specs[1]) == {"default": {"azure": 50, "gcp": 50}}
    calls.clear()
    assert not apply_records(backend, items).changed
    assert calls == {"GET": 1}  # nothing changed: nothing written
    for s in specs:
        backend.delete(s)


class CountingRoute53(Route53Backend):
    """Counts the Route53 API calls the backend makes (each one request to moto)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counted: collections.Counter[str] = collections.Counter()
        self.batch_sizes: list[int] = []

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        self.counted[what] += 1
        if what == "ChangeResourceRecordSets":
            self.batch_sizes.append(sum(batch_cost(c) for c in kwargs["ChangeBatch"]["Changes"]))
        return super()._call(what, fn, **kwargs)


def test_route53_takes_as_few_change_batches_as_route53_allows(hosted_zone: str) -> None:
    backend = CountingRoute53(ZONE, hosted_zone_id=hosted_zone)
    few = records(100, "rbatch")
    p = plan(PlanInput(RR), scale=255)
    assert apply_records(backend, [(s, p) for s in few]).changed
    # 100 records x 3 weighted sets, each an UPSERT of one address (counted twice): one batch.
    assert backend.counted["ChangeResourceRecordSets"] == 1 and backend.batch_sizes == [600]
    # 400 records: 2,400 against Route53's 1,000 a batch: three, no record split across two.
    backend = CountingRoute53(ZONE, hosted_zone_id=hosted_zone)
    many = records(400, "rmany")
    assert apply_records(backend, [(s, p) for s in many]).changed
    assert backend.counted["ChangeResourceRecordSets"] == 3
    assert all(size <= MAX_CHANGES and size % 6 == 0 for size in backend.batch_sizes)
    assert sum(backend.batch_sizes) == 2400
    assert backend.read(many[399]) == {"default": {"aws": 85, "azure": 85, "gcp": 85}}
    backend = CountingRoute53(ZONE, hosted_zone_id=hosted_zone)
    assert not apply_records(backend, [(s, p) for s in many]).changed
    assert backend.counted["ChangeResourceRecordSets"] == 0


def test_cloud_dns_takes_one_change_per_zone(gcp_fake: FakeCloudDns) -> None:
    backend = gcp_backend(gcp_fake)
    p = plan(PlanInput(RR, RULES))  # two answers per record: two rrsets each
    specs = records(20, "gbatch")
    before = len([r for r in gcp_fake.requests if r.method == "POST"])
    assert apply_records(backend, [(s, p) for s in specs]).changed
    posts = [r for r in gcp_fake.requests if r.method == "POST"]
    assert len(posts) == before + 1
    assert backend.read(specs[7]) == {"default": {"aws": 34, "azure": 33, "gcp": 33},
                                      "europe-africa": {"aws": 15, "azure": 70, "gcp": 15}}


def test_traffic_manager_takes_one_call_per_profile(azure_fake: FakeTrafficManager) -> None:
    backend = tm_backend(azure_fake)
    p = plan(PlanInput(RR))
    spec = RecordSpec("tm0." + ZONE, 30, IPS, HEALTH)
    puts = lambda: len([r for r in azure_fake.requests if r.method == "PUT"])  # noqa: E731
    assert apply_records(backend, [(spec, p)]).changed
    assert puts() == 1  # the one weighted profile of a record without region rules
    assert not apply_records(backend, [(spec, p)]).changed
    assert puts() == 1


def test_traffic_manager_reads_the_resource_group_once_a_round(azure_fake: FakeTrafficManager) -> None:
    """Names with profiles of their own (`dns.records`), as the controller passes them: one
    list call a round for all of them, a PUT only where a profile differs from its plan, and
    still only our tagged profiles touched."""
    lead = tm_backend(azure_fake)
    specs = records(30, "tmr")
    own_backends = [dataclasses.replace(lead, profile_name=f"api-tm-tmr{i}", relative_dns_name=f"api-tmr{i}")
                    for i in range(1, len(specs))]  # fmt: skip
    up, gcp_down = plan(PlanInput(RR)), plan(PlanInput(RR, health={"gcp": False}))

    def round_(p: Plan) -> tuple[bool, collections.Counter[str]]:
        before = len(azure_fake.requests)
        done = apply_records(lead, [(specs[0], p)], [(b, s, p) for b, s in zip(own_backends, specs[1:], strict=True)])
        return done.changed, collections.Counter(r.method for r in azure_fake.requests[before:])

    assert round_(up) == (True, {"GET": 1, "PUT": 30})  # first publication
    assert round_(up) == (False, {"GET": 1})  # nothing changed: one list, nothing written
    assert round_(gcp_down) == (True, {"GET": 1, "PUT": 30})
    assert lead.read(specs[0]) == {"default": {"aws": 50, "azure": 50}}
    assert own_backends[-1].read(specs[-1]) == {"default": {"aws": 50, "azure": 50}}
    # Someone else's untagged profile under one of our names is never overwritten; the other
    # names of the round are still applied.
    theirs = {"location": "global", "tags": {"team": "legacy"},
              "properties": {"profileStatus": "Enabled", "trafficRoutingMethod": "Weighted",
                             "dnsConfig": {"relativeName": "someone-else", "ttl": 60},
                             "monitorConfig": {"protocol": "HTTP", "port": 80, "path": "/"}, "endpoints": []}}  # fmt: skip
    assert _tm_put(azure_fake, "api-tm-stranger", theirs) == 201
    kept = json.loads(json.dumps(azure_fake.profiles[(AZ_SUB, "rg-edge", "api-tm-stranger")]))
    stranger = dataclasses.replace(lead, profile_name="api-tm-stranger", relative_dns_name="api-stranger")
    with pytest.raises(DnsBackendError, match=r"api-tm-stranger.*not edgefabric's"):
        apply_records(lead, [(specs[0], up)], [(stranger, records(1, "stranger")[0], up)])
    assert azure_fake.profiles[(AZ_SUB, "rg-edge", "api-tm-stranger")] == kept
    assert lead.read(specs[0]) == {"default": {"aws": 34, "azure": 33, "gcp": 33}}
    del azure_fake.profiles[(AZ_SUB, "rg-edge", "api-tm-stranger")]
    for b, s in zip([lead, *own_backends], specs, strict=True):
        b.delete(s)
    assert azure_fake.profiles == {}


# ------------------------------------------------------ the controller, for real


def write_stack(tmp: Path, eps: LocalEndpoints, pdns: PowerDnsServer) -> Path:
    cfg = {
        "environment": "records",
        "clouds": {c: {"enabled": True, "ingress": {"address": eps.address(c)}} for c in ("aws", "azure", "gcp")},
        "strategies": {
            "user-service": {"primary": "aws", "secondary": "azure", "tertiary": "gcp",
                             "replication": "active-active", "loadBalancing": "round-robin"},
            "order-service": {"primary": "azure", "secondary": "aws", "tertiary": "gcp",
                              "replication": "active-active", "loadBalancing": "weighted"},
            "payment-service": {"primary": "gcp", "secondary": "aws", "tertiary": "azure",
                                "replication": "active-active", "loadBalancing": "performance-based"},
        },
        "routing": {"defaultWeight": 60},
        "failover": {"action": "route-to-secondary"},
        "healthCheck": {"intervalS": 1, "timeoutS": 0.5, "failureThreshold": 2, "successThreshold": 2,
                        "recoveryHoldDownS": 60, "check": {"type": "http", "path": "/health", "port": eps.port}},
        "dns": {"ttl": 1, "records": [{"name": "user." + ZONE, "strategy": "user-service"},
                                      {"name": "orders." + ZONE, "strategy": "order-service"},
                                      {"name": "payments." + ZONE, "strategy": "payment-service"}],
                "backends": {"powerdns": {"apiUrl": pdns.api_url, "apiKeyRef": "config:powerdnsApiKey",
                                          "zone": ZONE}}},
    }  # fmt: skip
    path = tmp / "Pulumi.records.yaml"
    path.write_text(yaml.safe_dump({"config": {f"edgefabric:{k}": v for k, v in cfg.items()}}))
    return path


def shares(pdns: PowerDnsServer, name: str, eps: LocalEndpoints, n: int = 2000) -> dict[str, float]:
    counts = answer_counts(pdns, name, n)
    by_cloud = {c: 100 * counts[eps.address(c)] / n for c in ("aws", "azure", "gcp")}
    assert abs(sum(by_cloud.values()) - 100) < 1e-9, counts
    return by_cloud


def near(got: dict[str, float], want: dict[str, int]) -> bool:
    return all(abs(got[c] - want[c]) <= 5 for c in want)


def test_the_controller_publishes_each_name_by_its_own_strategy(
    tmp_path: Path, endpoints: LocalEndpoints, pdns: PowerDnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEFABRIC_SECRET_POWERDNSAPIKEY", pdns.api_key)
    specs = failover_specs(load_stack_file(write_stack(tmp_path, endpoints, pdns)))
    assert [s.record_name for s in specs] == ["user." + ZONE, "orders." + ZONE, "payments." + ZONE]
    log: list[tuple[str, dict[str, Any]]] = []
    ctl = Controller(specs[0], [], lambda event, **f: log.append((event, f)), records=specs, apply_timeout_s=10)
    rec = ctl.tick(wait=True)
    assert [o.ok for o in rec.outcomes] == [True]
    # The seed's three services: round-robin, weighted, and performance-based (shares from the
    # probes' latency: loopback endpoints answer alike, so the plan is whatever the measured
    # latencies give; every cloud healthy gets a share, and the answers must follow that plan).
    want = {"user." + ZONE: {"aws": 34, "azure": 33, "gcp": 33}, "orders." + ZONE: {"aws": 20, "azure": 60, "gcp": 20}}
    plans = {name: p.default for name, p in rec.plans.items()}
    assert {n: plans[n] for n in want} == want
    perf = plans["payments." + ZONE]
    assert sum(perf.values()) == 100 and all(perf[c] > 0 for c in ("aws", "azure", "gcp")), perf
    for name, weights in {**want, "payments." + ZONE: perf}.items():
        got = shares(pdns, name, endpoints)
        assert near(got, weights), (name, got, weights)
    # azure fails: round-robin re-splits; the weighted name gives azure's 60 to the next cloud
    # in its order (azure, aws, gcp): aws; the performance-based name drops azure.
    endpoints.set_healthy("azure", False)
    for _ in range(2):
        rec = ctl.tick(wait=True)
    after = {"user." + ZONE: {"aws": 50, "azure": 0, "gcp": 50}, "orders." + ZONE: {"aws": 80, "azure": 0, "gcp": 20}}
    plans = {name: p.default for name, p in rec.plans.items()}
    assert {n: plans[n] for n in after} == after
    perf = plans["payments." + ZONE]
    assert perf["azure"] == 0 and sum(perf.values()) == 100, perf
    for name, weights in {**after, "payments." + ZONE: perf}.items():
        got = shares(pdns, name, endpoints)
        assert near(got, weights), (name, got, weights)
    planned = [f for e, f in log if e == "plan"]
    assert {p["record"] for p in planned} == {s.record_name for s in specs}
    ctl.close()
    backend = PowerDnsBackend(pdns.api_url, pdns.api_key, pdns.zone)
    for s in specs:
        backend.delete(s.record_spec())
