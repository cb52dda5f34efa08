"""Probe -> plan -> apply, shared by the WeightedFailover provider and the controller.

Engine-free: never imports pulumi. Every function takes the one typed
`edgefabric.traffic.spec.FailoverSpec`; backends are built per call by
`edgefabric.traffic.dns.build_backends`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from edgefabric.traffic.dns.base import (
    BackendOutcome,
    DnsBackend,
    Published,
    apply_all,
    published_view,
    read_all,
)
from edgefabric.traffic.health import HealthTracker, Transition, assess, probe_many_sync
from edgefabric.traffic.planner import Plan, plan
from edgefabric.traffic.spec import FailoverSpec

# ----------------------------------------------------------------- one round


@dataclass
class Reconciled:
    plan: Plan
    health: dict[str, dict[str, object]]
    outcomes: list[BackendOutcome]
    transitions: list[Transition]

    @property
    def changed(self) -> bool:
        return any(o.changed for o in self.outcomes)

    @property
    def failed(self) -> list[BackendOutcome]:
        return [o for o in self.outcomes if not o.ok]


def plan_from_health(spec: FailoverSpec, tracker: HealthTracker, scale: int = 100) -> Plan:
    health: dict[str, bool] = {c: tracker.states[c].healthy if c in tracker.states else True for c in spec.endpoints}
    return plan(spec.plan_input(health), scale)


def apply_plan(
    spec: FailoverSpec, tracker: HealthTracker, backends: Sequence[DnsBackend], transitions: list[Transition]
) -> Reconciled:
    rs = spec.record_spec()
    outcomes = apply_all(backends, rs, lambda scale: plan_from_health(spec, tracker, scale))
    return Reconciled(plan_from_health(spec, tracker), tracker.evidence(), outcomes, transitions)


def assess_health(
    spec: FailoverSpec,
    evidence: Mapping[str, Mapping[str, object]] | None,
    sleep: Callable[[float], None] = time.sleep,
) -> HealthTracker:
    """Deploy-time verdict (see edgefabric.traffic.health.assess)."""
    return assess(
        spec.probes(),
        spec.thresholds,
        spec.timeout_s,
        evidence=evidence,
        round_gap_s=spec.round_gap_s,
        sleep=sleep,
    )


def probe_round(spec: FailoverSpec, tracker: HealthTracker, concurrency: int = 100) -> list[Transition]:
    """One controller tick: a single probe per target through the hysteresis."""
    return tracker.observe(probe_many_sync(spec.probes(), spec.timeout_s, concurrency))


def expected_published(
    spec: FailoverSpec, tracker_plan: Callable[[int], Plan], backends: Sequence[DnsBackend]
) -> dict[str, Published]:
    return {b.name: published_view(tracker_plan(b.scale), b.supports_regions) for b in backends}


def read_published(spec: FailoverSpec, backends: Sequence[DnsBackend]) -> dict[str, Published | str | None]:
    return read_all(backends, spec.record_spec())


def normalise_published(p: Published | str | None) -> Published | str | None:
    if not isinstance(p, dict):
        return p
    return {a: {c: w for c, w in sorted(ws.items()) if w > 0} for a, ws in sorted(p.items())}
