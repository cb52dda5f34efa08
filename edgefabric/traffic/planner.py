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

Rules
- automatic + active-active: an unhealthy cloud gets 0 and its share goes to
  the healthy clouds in proportion to their configured weights. If the healthy
  clouds were all configured at 0 (e.g. default weight 100 on the primary),
  everything goes to the highest-priority healthy cloud.
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


@dataclass(frozen=True)
class PlanInput:
    strategy: Strategy
    rules: tuple[RegionRule, ...] = ()
    default_weight: int = 100
    health: Mapping[str, bool] = field(default_factory=dict)


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


def _adjust(
    configured: dict[str, Fraction], priority: Sequence[str], inp: PlanInput
) -> tuple[dict[str, Fraction], bool]:
    """Health-adjust one answer. Returns (shares, failed_open).

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
    for name, regions, main, main_weight in specs:
        configured = _split(100, main, main_weight, order)
        priority = [main] + [c for c in order if c != main]
        shares, opened = _adjust(configured, priority, inp)
        fail_open = fail_open or opened
        answers[name] = Answer(regions=regions, weights=integerize(shares, scale, order))
    down = [c for c in order if not inp.health.get(c, True)]
    if fail_open:
        alerts.append(f"all clouds unhealthy ({', '.join(down)}): failing open with configured weights")
    elif down and inp.strategy.failover == "manual":
        alerts.append(f"manual failover: {', '.join(down)} unhealthy; weights left unchanged")
    elif down:
        alerts.append(f"unhealthy: {', '.join(down)}; weight moved to healthy clouds")
    return Plan(scale=scale, answers=answers, fail_open=fail_open, alerts=tuple(alerts))


def configured_plan(inp: PlanInput, scale: int = 100) -> Plan:
    """The plan with every cloud healthy (what fail-open publishes)."""
    healthy = PlanInput(strategy=inp.strategy, rules=inp.rules, default_weight=inp.default_weight, health={})
    return plan(healthy, scale)
