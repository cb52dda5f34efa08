"""A hostname ingress that stops resolving: a first-class verdict, "does not resolve", from
real lookups against PowerDNS (the name is dropped from the zone, then published again)."""

from __future__ import annotations

import asyncio
import time

from devenv.endpoints import LocalEndpoints
from edgefabric.traffic.health import (
    DOES_NOT_RESOLVE,
    HealthTracker,
    Thresholds,
    Unresolved,
    probe_many_sync,
    probe_once,
)
from edgefabric.traffic.spec import FailoverSpec
from tests.integration.conftest import ZONE, ElbNames


def _spec(eps: LocalEndpoints, aws: str, resolver: str) -> FailoverSpec:
    return FailoverSpec.from_inputs({
        "record_name": "unresolved." + ZONE, "ttl": 5,
        "endpoints": {"aws": {"address": aws}, "azure": {"address": eps.address("azure")}},
        "health_check": {"interval_s": 1, "timeout_s": 0.5, "failure_threshold": 2, "success_threshold": 1,
                         "recovery_hold_down_s": 0,
                         "check": {"type": "http", "path": "/health", "expected_status": 200, "port": eps.port}},
        "strategy": {"order": ["aws", "azure"]},
        "backends": {"powerdns": {"api_url": "http://127.0.0.1:1", "api_key_ref": "env:UNUSED", "zone": ZONE}},
        "resolver": resolver,
    })  # fmt: skip


def test_the_verdict_itself() -> None:
    started = time.perf_counter()
    res = asyncio.run(probe_once(Unresolved("gone.example.com"), 5.0))
    assert not res.ok and res.reason == DOES_NOT_RESOLVE and res.detail == f"gone.example.com {DOES_NOT_RESOLVE}"
    assert time.perf_counter() - started < 0.5  # nothing to connect to: no timeout to wait out


def test_a_name_that_stops_resolving_is_down_with_that_reason(endpoints: LocalEndpoints,
                                                              elb_names: ElbNames) -> None:  # fmt: skip
    name = elb_names.add("api", [endpoints.address("aws")])
    spec = _spec(endpoints, name, elb_names.resolver)
    tracker = HealthTracker(Thresholds(2, 1, 0))
    res = probe_many_sync(spec.probes(), spec.timeout_s)
    assert res["aws"].ok and res["aws"].reason is None, res["aws"]
    tracker.observe(res)

    elb_names.drop(name)
    probes = spec.probes()
    assert probes["aws"] == Unresolved(name)  # resolved again this round: nothing left to probe
    for _ in range(2):
        res = probe_many_sync(spec.probes(), spec.timeout_s)
        assert res["aws"].reason == DOES_NOT_RESOLVE and not res["aws"].ok
        assert res["azure"].ok
        transitions = tracker.observe(res)
    assert [(t.target, t.to_healthy) for t in transitions] == [("aws", False)]
    assert tracker.states["aws"].last_detail == f"{name} {DOES_NOT_RESOLVE}"

    elb_names.set(name, [endpoints.address("aws")])  # published again: probed at its address again
    res = probe_many_sync(spec.probes(), spec.timeout_s)
    assert res["aws"].ok, res["aws"]
