"""Probe -> plan -> apply, shared by the WeightedFailover provider and the controller.

Engine-free: never imports pulumi. Every function takes the one typed
`edgefabric.traffic.spec.FailoverSpec`; backends are built per call by
`edgefabric.traffic.dns.build_backends`.

Also here, because both writers need them (the controller and `pulumi up`'s
WeightedFailover, which may not import the controller):
- what the published answers say about health (`absent_from_published`): a restarted
  controller, or a new lease holder, starts a cloud the answers leave out as down;
- the lease record one writer holds (`LeaseRecord`, written by
  `edgefabric.traffic.lease`), and `follow_lease_holder`: while a live controller
  holds the record's lease, `pulumi up` reports its plan read back from the backends
  instead of writing over it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgefabric.traffic.dns.base import (
    BackendOutcome,
    DnsBackend,
    Published,
    apply_all,
    published_view,
    read_all,
)
from edgefabric.traffic.health import (
    HealthTracker,
    ProbeResult,
    TargetState,
    Transition,
    assess,
    probe_many_sync,
)
from edgefabric.traffic.planner import Plan, configured_plan, plan, smooth
from edgefabric.traffic.spec import FailoverSpec

# ----------------------------------------------------------------- one round


@dataclass
class Reconciled:
    plan: Plan
    health: dict[str, dict[str, object]]
    outcomes: list[BackendOutcome]
    transitions: list[Transition]
    # Set when this round followed the lease holder instead of applying (`follow_lease_holder`).
    followed: LeaseRecord | None = None
    # Every published name -> its plan, when one round handled several (the controller).
    plans: dict[str, Plan] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(o.changed for o in self.outcomes)

    @property
    def failed(self) -> list[BackendOutcome]:
        return [o for o in self.outcomes if not o.ok]


def plan_from_health(
    spec: FailoverSpec,
    tracker: HealthTracker,
    scale: int = 100,
    latency_s: Mapping[str, float] | None = None,
    held: Mapping[str, float] | None = None,
) -> Plan:
    """The tracker's verdicts planned for `spec`; performance-based balancing also reads the
    smoothed latency and the shares published last (see `FailoverSpec.plan_input`)."""
    health: dict[str, bool] = {c: tracker.states[c].healthy if c in tracker.states else True for c in spec.endpoints}
    return plan(spec.plan_input(health, latency_s, held), scale)


@dataclass
class RecordPlanner:
    """Every published name planned from one health tracker, each with its own strategy:
    what the controller and `edgefabric simulate` share, so a simulation plans exactly as
    the controller does.

    performance-based names also carry state between rounds: the probes' latency smoothed
    per name (`strategies.<s>.latencySmoothing`), and the shares published last, which the
    planner keeps while a change stays within the band (`weightBandPct`)."""

    records: Sequence[FailoverSpec]
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    held: dict[str, dict[str, float] | None] = field(default_factory=dict)

    def observe(self, results: Mapping[str, ProbeResult]) -> None:
        """Fold one round's latencies (passing probes only) into the smoothed latency."""
        sample = {c: r.latency_s for c, r in results.items() if r.ok}
        for r in self.records:
            if r.strategy.load_balancing == "performance-based":
                name = r.record_name
                self.latency[name] = smooth(self.latency.get(name), sample, r.strategy.latency_smoothing)

    def plan(self, record: FailoverSpec, tracker: HealthTracker, scale: int = 100) -> Plan:
        name = record.record_name
        return plan_from_health(record, tracker, scale, self.latency.get(name), self.held.get(name))

    def plans(
        self, tracker: HealthTracker, scales: Mapping[str, int] | None = None
    ) -> tuple[dict[str, Plan], dict[str, dict[str, Plan]]]:
        """Each name's plan (of 100), and for each backend (name -> scale) every name's plan
        at its scale; then the shares just planned become the held shares for next time."""
        plans = {r.record_name: self.plan(r, tracker) for r in self.records}
        per_backend = {b: {r.record_name: self.plan(r, tracker, scale) for r in self.records}
                       for b, scale in (scales or {}).items()}
        for r in self.records:
            if r.strategy.load_balancing == "performance-based":
                self.held[r.record_name] = plans[r.record_name].base_shares
        return plans, per_backend


def apply_plan(
    spec: FailoverSpec,
    tracker: HealthTracker,
    backends: Sequence[DnsBackend],
    transitions: list[Transition],
    deadline_s: float | None = None,
) -> Reconciled:
    """Apply the tracker's plan to every backend in parallel, each within `deadline_s`."""
    rs = spec.record_spec()
    outcomes = apply_all(backends, rs, lambda scale: plan_from_health(spec, tracker, scale), deadline_s)
    return Reconciled(plan_from_health(spec, tracker), tracker.evidence(), outcomes, transitions)


def assess_health(
    spec: FailoverSpec,
    evidence: Mapping[str, Mapping[str, object]] | None,
    sleep: Callable[[float], None] = time.sleep,
    lookup: Callable[[str], str | None] | None = None,
) -> HealthTracker:
    """Deploy-time verdict (see edgefabric.traffic.health.assess). `lookup` answers `config:`
    references of the checks (a `caBundleRef`), as for the backends' (`edgefabric.secrets`)."""
    return assess(
        spec.probes(lookup),
        spec.thresholds,
        spec.timeout_s,
        evidence=evidence,
        round_gap_s=spec.round_gap_s,
        sleep=sleep,
    )


def probe_round(spec: FailoverSpec, tracker: HealthTracker, concurrency: int = 100) -> list[Transition]:
    """One controller tick: a single probe per target through the hysteresis."""
    return probe_round_results(spec, tracker, concurrency)[1]


def probe_round_results(
    spec: FailoverSpec, tracker: HealthTracker, concurrency: int = 100
) -> tuple[dict[str, ProbeResult], list[Transition]]:
    """`probe_round`, with each target's probe result (latency, detail) as well."""
    results = probe_many_sync(spec.probes(), spec.timeout_s, concurrency)
    return results, tracker.observe(results)


def expected_published(
    spec: FailoverSpec, tracker_plan: Callable[[int], Plan], backends: Sequence[DnsBackend]
) -> dict[str, Published]:
    return {b.name: published_view(tracker_plan(b.scale), b.supports_regions) for b in backends}


def read_published(
    spec: FailoverSpec, backends: Sequence[DnsBackend], deadline_s: float | None = None
) -> dict[str, Published | str | None]:
    return read_all(backends, spec.record_spec(), deadline_s)


def normalise_published(p: Published | str | None) -> Published | str | None:
    if not isinstance(p, dict):
        return p
    return {a: {c: w for c, w in sorted(ws.items()) if w > 0} for a, ws in sorted(p.items())}


# ----------------------------------------------------------- what the answers say


def absent_from_published(
    spec: FailoverSpec, published: Mapping[str, Published | str | None], backends: Sequence[DnsBackend]
) -> dict[str, str]:
    """The clouds the published answers leave out, each with the reason: cloud -> reason.

    A cloud is absent when the configured plan (every cloud healthy) gives it weight in an
    answer that some backend publishes, and that backend serves it at weight 0 or not at all.
    Only a health verdict takes a cloud out of an answer it is configured in, so that is
    the evidence a writer left behind. Evidence from any one backend counts (a backend
    whose last apply failed may still serve a cloud another has already dropped): the
    safe side is to start such a cloud down. A backend with no record, or that could not be
    read, says nothing, nor does an answer that serves addresses the spec does not have;
    in `manual` failover and when failing open every configured cloud is served, so
    nothing is absent.
    """
    by_name = {b.name: b for b in backends}
    absent: dict[str, str] = {}
    for name, got in sorted(published.items()):
        backend = by_name.get(name)
        if backend is None or not isinstance(got, dict):
            continue
        configured = published_view(configured_plan(spec.plan_input({}), backend.scale), backend.supports_regions)
        for answer, weights in configured.items():
            served = got.get(answer)
            if served is None or any(c not in spec.endpoints for c in served):
                # Not published (a rule added since), or published for other addresses (an
                # ingress that moved): no evidence about this configuration.
                continue
            for cloud in sorted(weights):
                if served.get(cloud, 0) <= 0 and cloud not in absent:
                    absent[cloud] = f"absent from {name}'s {answer} answer"
    return absent


def seeded_down(reason: str, now: float) -> TargetState:
    """A target that starts down: it must serve its whole recovery (`successThreshold`
    successes and a success streak as long as `recoveryHoldDownS`) before it returns."""
    return TargetState(healthy=False, last_transition_at=now, last_detail=f"started down: {reason}")


# ------------------------------------------------------------------ one writer

LEASE_FILE_ENV = "EDGEFABRIC_LEASE_FILE"


@dataclass(frozen=True)
class LeaseRecord:
    """Who may write a record, until when (epoch seconds). The file lease
    (`edgefabric.traffic.lease.FileLease`) keeps one of these as JSON; writers on one
    machine share it."""

    holder: str
    record: str
    acquired_at: float
    renewed_at: float
    expires_at: float

    def live(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) < self.expires_at

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LeaseRecord | None:
        """None for anything that is not a whole record (an empty or half-written file)."""
        try:
            data = json.loads(text)
            return cls(str(data["holder"]), str(data["record"]), float(data["acquired_at"]),
                       float(data["renewed_at"]), float(data["expires_at"]))  # fmt: skip
        except (ValueError, KeyError, TypeError):
            return None


def read_lease(path: Path) -> LeaseRecord | None:
    """The lease record in `path`; None when there is none."""
    try:
        return LeaseRecord.from_json(path.read_text())
    except OSError:
        return None


def live_lease_holder(
    spec: FailoverSpec, path: str | Path | None = None, now: float | None = None
) -> LeaseRecord | None:
    """The live lease on the spec's record in `path` (default: $EDGEFABRIC_LEASE_FILE), if any."""
    where = path if path is not None else os.environ.get(LEASE_FILE_ENV)
    if not where:
        return None
    lease = read_lease(Path(where))
    if lease is None or lease.record != spec.record_name or not lease.live(now):
        return None
    return lease


def follow_lease_holder(
    spec: FailoverSpec, lease: LeaseRecord, backends: Sequence[DnsBackend], deadline_s: float | None = 20.0
) -> Reconciled:
    """Write nothing: the lease holder owns the record. The round reports the holder's plan
    as read back from the backends (`absent_from_published`: the clouds it took out are
    down), each backend `ok` and unchanged."""
    published = read_published(spec, backends, deadline_s)
    now = time.time()
    tracker = HealthTracker(spec.thresholds)
    tracker.states = {cloud: seeded_down(reason, now)
                      for cloud, reason in absent_from_published(spec, published, backends).items()}
    outcomes = [BackendOutcome(b.name, True, False) for b in backends]
    return Reconciled(plan_from_health(spec, tracker), tracker.evidence(), outcomes, [], followed=lease)
