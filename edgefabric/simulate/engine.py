"""Run a scenario on a virtual clock through the controller's hysteresis and planner.

One probe round per step (`stepS`, default `healthCheck.intervalS`), from `start` to `end`
inclusive: each cloud's outcome comes from its timeline, goes through `HealthTracker`
(failureThreshold, successThreshold, recoveryHoldDownS) and every published name is planned
by `RecordPlanner`, the controller's own, from the specs `FailoverSpec.build` makes for the
controller. Nothing is probed and nothing is published: the endpoints are documentation
addresses (192.0.2.0/24) no code here ever contacts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgefabric.config.models import DnsBackends, DnsConfig, TrafficEndpoint
from edgefabric.config.vocab import CLOUDS
from edgefabric.simulate.scenario import Scenario, Settings, check_settings, parse_clock
from edgefabric.traffic.health import HealthTracker, ProbeResult
from edgefabric.traffic.reconcile import RecordPlanner
from edgefabric.traffic.spec import FailoverSpec


@dataclass(frozen=True)
class Row:
    """One probe round: what the probes said, the verdicts, and each name's default answer."""

    t: float
    probes: dict[str, bool]
    health: dict[str, bool]
    weights: dict[str, dict[str, int]]  # record -> cloud -> weight of 100
    fail_open: dict[str, bool]


@dataclass(frozen=True)
class Timeline:
    label: str
    clouds: tuple[str, ...]
    records: tuple[str, ...]
    strategies: dict[str, str]  # record -> the strategy it follows
    rows: tuple[Row, ...]

    def at(self, clock: str | float) -> Row:
        """The row in force at `clock` (HH:MM[:SS] or seconds): the last round at or before it."""
        t = parse_clock(clock) if isinstance(clock, str) else clock
        before = [r for r in self.rows if r.t <= t]
        if not before:
            raise ValueError(f"{clock!r} is before the scenario starts")  # a caller's bug
        return before[-1]


def specs(settings: Settings, clouds: Sequence[str]) -> list[FailoverSpec]:
    """The controller's specs for the settings' names, each cloud at a documentation address."""
    dns = DnsConfig(records=settings.records, backends=DnsBackends())
    endpoints = {c: TrafficEndpoint(address=f"192.0.2.{i + 1}") for i, c in enumerate(clouds)}
    return [FailoverSpec.build(dns, settings.strategies[r.strategy], settings.routing, settings.health_check,
                               endpoints, record_name=r.name, action=settings.failover.action)
            for r in settings.records]


def run(scenario: Scenario, settings: Settings, label: str = "") -> Timeline:
    """The weights over time: one `Row` per probe round."""
    clouds: tuple[str, ...] = tuple(c for c in CLOUDS if c in scenario.clouds)
    records = specs(settings, clouds)
    now = scenario.start
    tracker = HealthTracker(records[0].thresholds, clock=lambda: now)
    planner = RecordPlanner(records)
    step = scenario.step_s or settings.health_check.interval_s
    rows: list[Row] = []
    n = 0
    while (now := scenario.start + n * step) <= scenario.end:
        outcomes = {c: scenario.clouds[c].probe(now) for c in clouds}  # type: ignore[index]
        results: dict[str, ProbeResult] = {c: ProbeResult(ok, latency, "simulated") for c, (ok, latency) in outcomes.items()}
        tracker.observe(results)
        planner.observe(results)
        plans, _ = planner.plans(tracker)
        rows.append(Row(
            t=now,
            probes={c: ok for c, (ok, _) in outcomes.items()},
            health={c: tracker.states[c].healthy for c in clouds},
            weights={name: dict(p.default) for name, p in plans.items()},
            fail_open={name: p.fail_open for name, p in plans.items()},
        ))  # fmt: skip
        n += 1
    return Timeline(label, clouds, tuple(r.record_name for r in records),
                    {r.name: r.strategy for r in settings.records}, tuple(rows))


def simulate(scenario: Scenario, raw_settings: dict | None = None, label: str = "") -> Timeline:
    """`run` with raw settings (default: the scenario's own), checked first."""
    raw = raw_settings if raw_settings is not None else scenario.settings
    return run(scenario, check_settings(raw, {str(c): t for c, t in scenario.clouds.items()}), label)
