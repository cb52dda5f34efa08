"""Pure, deterministic weight planning for the global traffic record.

Engine-free and side-effect free: same input, same plan.

Vocabulary
- answer: one weighted answer set. There is one `default` answer plus one per
  user-region routing rule (`americas`, `europe-africa`, ...).
- configured weights: what the routing config asks for when every cloud is
  healthy. Rule "X -> C weight W": C gets W, the other enabled clouds split
  100-W (equally, leftover units in strategy order). Default: the primary gets
  `default_weight`, the others split the rest.
- planned weights: configured weights adjusted for health, as integers summing
  exactly to the backend's scale (100; Route53 uses 255).

Load balancing (`strategies.<service>.loadBalancing`) decides the default answer's
shares; a user-region rule always means what it says (its cloud gets its weight):
- weighted: the configured shares (`routing.defaultWeight` on the primary);
- round-robin: equal shares among the healthy clouds (equal within 1 unit);
- performance-based: shares in inverse proportion to each healthy cloud's smoothed
  probe latency (`smooth`, an EWMA the caller keeps). Shares that would move by less
  than `Performance.band_pct` percentage points keep the last published shares
  (`Performance.held`, `Plan.base_shares`), so weights do not churn with noise.

Rules
- automatic + active-active: an unhealthy cloud gets 0. Its share goes
  (`failover.action`, for weighted answers and region rules):
  - route-to-healthy: to the healthy clouds in proportion to their configured weights;
  - route-to-secondary: to the next healthy cloud after it in priority order
    (wrapping round to the primary).
  If the healthy clouds were all configured at 0 (e.g. default weight 100 on the
  primary), everything goes to the highest-priority healthy cloud. round-robin and
  performance-based answers re-split among the healthy clouds by their own rule.
- automatic + active-passive: the whole scale goes to the highest-priority
  healthy cloud (for a region rule, the rule's cloud comes first).
- manual: weights never move; unhealthy clouds are only reported as alerts.
- every cloud down: fail open (the all-healthy weights) and flag `fail_open`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from edgefabric.config.vocab import CLOUDS
from edgefabric.errors import ConfigError, Problem

Replication = Literal["active-active", "active-passive"]
FailoverMode = Literal["automatic", "manual"]
LoadBalancing = Literal["round-robin", "weighted", "performance-based"]
FailoverAction = Literal["route-to-secondary", "route-to-healthy"]
# A latency below this counts as this (a loopback probe can measure ~0 s): keeps
# inverse-latency shares finite.
MIN_LATENCY_S = 0.001
DEFAULT_ANSWER = "default"
ALLOWED_SCALES = (100, 255)


@dataclass(frozen=True)
class RegionRule:
    name: str
    regions: tuple[str, ...]
    cloud: str
    weight: int


@dataclass(frozen=True)
class Strategy:
    """Clouds in priority order (primary first) plus the two modes."""

    order: tuple[str, ...]
    replication: Replication = "active-active"
    failover: FailoverMode = "automatic"
    load_balancing: LoadBalancing = "weighted"
    # Where a failed cloud's share goes; the default is what the planner always did.
    action: FailoverAction = "route-to-healthy"


@dataclass(frozen=True)
class Performance:
    """What performance-based balancing reads: each cloud's smoothed probe latency in
    seconds (a cloud without one counts as the median of the others), the default
    answer's shares published last (`Plan.base_shares`: cloud -> share of 1), and the band
    in percentage points within which those shares are kept."""

    latency_s: Mapping[str, float] = field(default_factory=dict)
    held: Mapping[str, float] | None = None
    band_pct: float = 5.0


@dataclass(frozen=True)
class PlanInput:
    strategy: Strategy
    rules: tuple[RegionRule, ...] = ()
    default_weight: int = 100
    health: Mapping[str, bool] = field(default_factory=dict)
    performance: Performance = field(default_factory=Performance)


@dataclass(frozen=True)
class Answer:
    regions: tuple[str, ...]
    weights: dict[str, int]


@dataclass(frozen=True)
class Plan:
    scale: int
    answers: dict[str, Answer]
    fail_open: bool
    alerts: tuple[str, ...]
    # The default answer's shares (cloud -> share of 1) before rounding: what a caller keeps
    # and hands back as `Performance.held`, so performance-based weights hold within the band.
    base_shares: dict[str, float] | None = None

    @property
    def default(self) -> dict[str, int]:
        return self.answers[DEFAULT_ANSWER].weights

    def weights(self) -> dict[str, dict[str, int]]:
        """answer name -> cloud -> weight (the shape backends read back)."""
        return {name: dict(a.weights) for name, a in self.answers.items()}

    def to_dict(self) -> dict[str, object]:
        return {
            "scale": self.scale,
            "failOpen": self.fail_open,
            "alerts": list(self.alerts),
            "answers": {
                name: {"regions": list(a.regions), "weights": dict(a.weights)}
                for name, a in self.answers.items()
            },
        }


def plan_problems(inp: PlanInput) -> list[Problem]:
    """What a user can get wrong in routing and strategy, by stack-config key path."""
    order = inp.strategy.order
    p: list[Problem] = []
    if not order:
        p.append(Problem("strategy.primary", None, f"an enabled cloud: at least one of {', '.join(CLOUDS)}"))
    if len(set(order)) != len(order):
        p.append(Problem("strategy", list(order), "each cloud at most once"))
    if not 0 <= inp.default_weight <= 100:
        p.append(Problem("routing.defaultWeight", inp.default_weight, "0..100"))
    seen: set[str] = set()
    for i, rule in enumerate(inp.rules):
        if rule.name == DEFAULT_ANSWER or rule.name in seen:
            p.append(Problem(f"routing.rules[{i}].name", rule.name,
                             f"a unique name other than {DEFAULT_ANSWER!r} (reserved for the default answer)"))
        seen.add(rule.name)
        if rule.cloud not in order:
            p.append(Problem(f"routing.rules[{i}].cloud", rule.cloud, f"an enabled cloud: {', '.join(order)}"))
        if not 1 <= rule.weight <= 100:
            p.append(Problem(f"routing.rules[{i}].weight", rule.weight, "1..100"))
    return p


def _split(total: int, main: str, main_weight: int, order: Sequence[str]) -> dict[str, Fraction]:
    """main gets main_weight (of 100); the others share the rest equally."""
    others = [c for c in order if c != main]
    weights = {c: Fraction(0) for c in order}
    if not others:
        weights[main] = Fraction(total)
        return weights
    weights[main] = Fraction(main_weight * total, 100)
    rest = Fraction((100 - main_weight) * total, 100)
    for c in others:
        weights[c] = rest / len(others)
    return weights


def integerize(shares: Mapping[str, Fraction], scale: int, order: Sequence[str]) -> dict[str, int]:
    """Largest-remainder rounding of exact shares to integers summing to `scale`.

    Ties go to the higher-priority cloud so the result is deterministic. A
    strictly larger share never ends up with a smaller integer.
    """
    total = sum(shares.values(), Fraction(0))
    if total <= 0:
        raise ValueError("integerize needs a positive total")  # a bug: callers guarantee it
    exact = {c: shares[c] * scale / total for c in order}
    result = {c: int(exact[c]) for c in order}  # floor, shares are >= 0
    left = scale - sum(result.values())
    rank = sorted(order, key=lambda c: (-(exact[c] - result[c]), -exact[c], order.index(c)))
    for c in rank[:left]:
        result[c] += 1
    return result


# ------------------------------------------------------------ load balancing


def round_robin_shares(clouds: Sequence[str]) -> dict[str, Fraction]:
    """round-robin: equal shares among `clouds` (the healthy ones)."""
    return {c: Fraction(1, len(clouds)) for c in clouds}


def latency_shares(latency_s: Mapping[str, float], clouds: Sequence[str]) -> dict[str, Fraction]:
    """performance-based: shares in inverse proportion to latency, so a faster cloud never
    gets less. A cloud without a measurement yet counts as the median of the measured
    ones (none measured: equal shares)."""
    known = sorted(max(latency_s[c], MIN_LATENCY_S) for c in clouds if c in latency_s and latency_s[c] >= 0)
    fill = known[len(known) // 2] if known else 1.0
    inverse = {c: 1 / Fraction(max(latency_s.get(c, fill), MIN_LATENCY_S)) for c in clouds}
    total = sum(inverse.values(), Fraction(0))
    return {c: v / total for c, v in inverse.items()}


def hold_within_band(
    candidate: Mapping[str, Fraction], held: Mapping[str, float] | None, band_pct: float
) -> dict[str, Fraction]:
    """The shares to publish: `held` (last published) when every cloud's share would move by
    less than `band_pct` percentage points and the same clouds serve; else `candidate`."""
    if held is None or {c for c, v in held.items() if v > 0} != {c for c, v in candidate.items() if v > 0}:
        return dict(candidate)
    if all(abs(float(v) - held.get(c, 0.0)) * 100 < band_pct for c, v in candidate.items()):
        return {c: Fraction(held.get(c, 0.0)) for c in candidate}
    return dict(candidate)


def smooth(previous: Mapping[str, float] | None, sample: Mapping[str, float], alpha: float) -> dict[str, float]:
    """Exponentially weighted latency: alpha of the new sample, 1 - alpha of the past. A
    cloud without a new sample (its probe failed) keeps its smoothed value."""
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha {alpha!r}: 0 < alpha <= 1")  # a caller's bug: the config bounds it
    out = dict(previous or {})
    for cloud, value in sample.items():
        out[cloud] = value if cloud not in out else alpha * value + (1 - alpha) * out[cloud]
    return out


def _to_secondary(configured: Mapping[str, Fraction], priority: Sequence[str],
                  healthy: Sequence[str]) -> dict[str, Fraction]:
    """route-to-secondary: each failed cloud's share goes to the next healthy cloud after it
    in priority order, wrapping round to the primary."""
    shares = {c: (configured[c] if c in healthy else Fraction(0)) for c in priority}
    for i, cloud in enumerate(priority):
        if cloud in healthy or configured[cloud] == 0:
            continue
        after = [*priority[i + 1:], *priority[:i]]
        heir = next(c for c in after if c in healthy)
        shares[heir] += configured[cloud]
    return shares


def _adjust(
    configured: dict[str, Fraction], priority: Sequence[str], inp: PlanInput, base: bool
) -> tuple[dict[str, Fraction], bool]:
    """Health-adjust one answer (`base`: the default answer, which the load-balancing mode
    shapes). Returns (shares, failed_open).

    Manual failover and fail-open both publish the all-healthy answer, so the
    mode (active-passive still means "primary only") is kept in either case.
    """
    healthy = [c for c in priority if inp.health.get(c, True)]
    failed_open = not healthy and inp.strategy.failover == "automatic"
    if inp.strategy.failover == "manual" or not healthy:
        healthy = list(priority)
    if inp.strategy.replication == "active-passive":
        top = healthy[0]
        return {c: Fraction(1 if c == top else 0) for c in priority}, failed_open
    mode = inp.strategy.load_balancing if base else "weighted"
    if mode == "round-robin":
        shares = round_robin_shares(healthy)
        return {c: shares.get(c, Fraction(0)) for c in priority}, failed_open
    if mode == "performance-based":
        perf = inp.performance
        shares = hold_within_band(latency_shares(perf.latency_s, healthy), perf.held, perf.band_pct)
        return {c: shares.get(c, Fraction(0)) for c in priority}, failed_open
    if inp.strategy.action == "route-to-secondary" and sum(configured[c] for c in healthy) > 0:
        return _to_secondary(configured, priority, healthy), failed_open
    kept = {c: (configured[c] if c in healthy else Fraction(0)) for c in priority}
    if sum(kept.values(), Fraction(0)) == 0:
        # The healthy clouds were configured as pure standbys: promote in priority order.
        top = healthy[0]
        return {c: Fraction(1 if c == top else 0) for c in priority}, failed_open
    return kept, failed_open


def plan(inp: PlanInput, scale: int = 100) -> Plan:
    """Compute the weight plan for every answer at `scale` (100 or 255).

    ConfigError lists every problem of `plan_problems`."""
    if scale not in ALLOWED_SCALES:
        raise ValueError(f"scale {scale!r}: a backend's weight scale is one of {ALLOWED_SCALES}")  # a bug
    problems = plan_problems(inp)
    if problems:
        raise ConfigError(problems)
    order = list(inp.strategy.order)
    answers: dict[str, Answer] = {}
    alerts: list[str] = []
    fail_open = False
    specs: list[tuple[str, tuple[str, ...], str, int]] = [(DEFAULT_ANSWER, (), order[0], inp.default_weight)]
    specs += [(r.name, tuple(r.regions), r.cloud, r.weight) for r in inp.rules]
    base_shares: dict[str, float] | None = None
    for name, regions, main, main_weight in specs:
        configured = _split(100, main, main_weight, order)
        priority = [main] + [c for c in order if c != main]
        shares, opened = _adjust(configured, priority, inp, base=name == DEFAULT_ANSWER)
        fail_open = fail_open or opened
        if name == DEFAULT_ANSWER:
            total = sum(shares.values(), Fraction(0))
            base_shares = {c: float(shares[c] / total) for c in order}
        answers[name] = Answer(regions=regions, weights=integerize(shares, scale, order))
    down = [c for c in order if not inp.health.get(c, True)]
    if fail_open:
        alerts.append(f"all clouds unhealthy ({', '.join(down)}): failing open with configured weights")
    elif down and inp.strategy.failover == "manual":
        alerts.append(f"manual failover: {', '.join(down)} unhealthy; weights left unchanged")
    elif down:
        alerts.append(f"unhealthy: {', '.join(down)}; weight moved to healthy clouds")
    return Plan(scale=scale, answers=answers, fail_open=fail_open, alerts=tuple(alerts), base_shares=base_shares)


def configured_plan(inp: PlanInput, scale: int = 100) -> Plan:
    """The plan with every cloud healthy (what fail-open publishes)."""
    healthy = PlanInput(strategy=inp.strategy, rules=inp.rules, default_weight=inp.default_weight, health={},
                        performance=inp.performance)
    return plan(healthy, scale)
