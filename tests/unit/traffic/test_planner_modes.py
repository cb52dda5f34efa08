"""The load-balancing modes and `failover.action`: examples, and Hypothesis properties."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgefabric.traffic.planner import (
    MIN_LATENCY_S,
    Performance,
    PlanInput,
    RegionRule,
    Strategy,
    hold_within_band,
    latency_shares,
    plan,
    smooth,
)

ORDER = ("aws", "azure", "gcp")
EUROPE = (RegionRule("europe-africa", ("europe",), "azure", 70),)


# ---------------------------------------------------------------- examples


def test_round_robin_is_equal_among_the_healthy() -> None:
    s = Strategy(ORDER, load_balancing="round-robin")
    assert plan(PlanInput(s)).default == {"aws": 34, "azure": 33, "gcp": 33}
    assert plan(PlanInput(s, health={"azure": False})).default == {"aws": 50, "azure": 0, "gcp": 50}


def test_weighted_is_the_configured_shares() -> None:
    s = Strategy(ORDER, load_balancing="weighted")
    assert plan(PlanInput(s, default_weight=60)).default == {"aws": 60, "azure": 20, "gcp": 20}


def test_performance_based_follows_inverse_latency() -> None:
    s = Strategy(ORDER, load_balancing="performance-based")
    perf = Performance(latency_s={"aws": 0.010, "azure": 0.020, "gcp": 0.040})
    p = plan(PlanInput(s, performance=perf))
    assert p.default == {"aws": 57, "azure": 29, "gcp": 14}  # 4:2:1
    # No measurement yet: the median stands in, so the unmeasured cloud is not starved.
    p = plan(PlanInput(s, performance=Performance(latency_s={"aws": 0.010, "gcp": 0.030})))
    assert p.default["azure"] == p.default["gcp"]


def test_performance_based_holds_within_the_band() -> None:
    s = Strategy(ORDER, load_balancing="performance-based")
    first = plan(PlanInput(s, performance=Performance({"aws": 0.010, "azure": 0.020, "gcp": 0.040})))
    assert first.base_shares is not None
    # 10 % slower aws: shares would move by < 5 points; the published weights stay.
    nudged = Performance({"aws": 0.011, "azure": 0.020, "gcp": 0.040}, held=first.base_shares, band_pct=5)
    assert plan(PlanInput(s, performance=nudged)).default == first.default
    # Twice as slow: outside the band, weights move.
    moved = Performance({"aws": 0.020, "azure": 0.020, "gcp": 0.040}, held=first.base_shares, band_pct=5)
    assert plan(PlanInput(s, performance=moved)).default == {"aws": 40, "azure": 40, "gcp": 20}


def test_route_to_secondary_gives_the_share_to_the_next_healthy() -> None:
    s = Strategy(ORDER, action="route-to-secondary")
    # europe-africa: azure 70, aws 15, gcp 15; azure down -> its 70 to aws (next after azure).
    p = plan(PlanInput(s, EUROPE, health={"azure": False}))
    assert p.answers["europe-africa"].weights == {"aws": 85, "azure": 0, "gcp": 15}
    # default 60/20/20; gcp (last) down -> wraps round to the primary.
    p = plan(PlanInput(s, default_weight=60, health={"gcp": False}))
    assert p.default == {"aws": 80, "azure": 20, "gcp": 0}
    # aws and azure down: both shares end on gcp.
    p = plan(PlanInput(s, default_weight=60, health={"aws": False, "azure": False}))
    assert p.default == {"aws": 0, "azure": 0, "gcp": 100}


def test_route_to_healthy_spreads_in_proportion() -> None:
    s = Strategy(ORDER, action="route-to-healthy")
    p = plan(PlanInput(s, EUROPE, health={"azure": False}))
    assert p.answers["europe-africa"].weights == {"aws": 50, "azure": 0, "gcp": 50}


def test_smooth_is_an_ewma_that_keeps_clouds_without_a_sample() -> None:
    s1 = smooth(None, {"aws": 0.1, "gcp": 0.2}, 0.5)
    assert s1 == {"aws": 0.1, "gcp": 0.2}
    assert smooth(s1, {"aws": 0.3}, 0.5) == pytest.approx({"aws": 0.2, "gcp": 0.2})


# -------------------------------------------------------------- properties

orders = st.permutations(list(ORDER)).flatmap(lambda o: st.integers(1, 3).map(lambda n: tuple(o[:n])))
latency = st.floats(0.0005, 5.0, allow_nan=False)


@st.composite
def inputs(draw: st.DrawFn) -> tuple[PlanInput, int]:
    order = draw(orders)
    strategy = Strategy(
        order,
        replication=draw(st.sampled_from(["active-active", "active-passive"])),
        failover=draw(st.sampled_from(["automatic", "manual"])),
        load_balancing=draw(st.sampled_from(["round-robin", "weighted", "performance-based"])),
        action=draw(st.sampled_from(["route-to-secondary", "route-to-healthy"])),
    )
    rules = tuple(RegionRule(f"r{i}", ("europe",), draw(st.sampled_from(order)), draw(st.integers(1, 100)))
                  for i in range(draw(st.integers(0, 2))))
    lat = {c: draw(latency) for c in order if draw(st.booleans())}
    held = draw(st.none() | st.just({c: 1 / len(order) for c in order}))
    perf = Performance(lat, held, draw(st.floats(0, 20)))
    health = {c: draw(st.booleans()) for c in order}
    return PlanInput(strategy, rules, draw(st.integers(1, 100)), health, perf), draw(st.sampled_from([100, 255]))


@settings(max_examples=400, deadline=None)
@given(inputs())
def test_every_mode_sums_to_the_scale(case: tuple[PlanInput, int]) -> None:
    inp, scale = case
    for answer in plan(inp, scale).answers.values():
        assert sum(answer.weights.values()) == scale
        assert all(w >= 0 for w in answer.weights.values())


@settings(max_examples=400, deadline=None)
@given(inputs())
def test_every_mode_gives_an_unhealthy_cloud_nothing(case: tuple[PlanInput, int]) -> None:
    inp, scale = case
    assume(inp.strategy.failover == "automatic" and any(inp.health.values()))
    for answer in plan(inp, scale).answers.values():
        assert all(answer.weights[c] == 0 for c, ok in inp.health.items() if not ok), answer


@settings(max_examples=300, deadline=None)
@given(inputs())
def test_round_robin_is_equal_within_one(case: tuple[PlanInput, int]) -> None:
    inp, scale = case
    assume(inp.strategy.replication == "active-active")
    s = inp.strategy
    inp = PlanInput(Strategy(s.order, s.replication, s.failover, "round-robin", s.action),
                    inp.rules, inp.default_weight, inp.health)
    serving = [c for c in s.order if inp.health[c]] if s.failover == "automatic" else list(s.order)
    serving = serving or list(s.order)  # fail open
    weights = plan(inp, scale).default
    assert max(weights[c] for c in serving) - min(weights[c] for c in serving) <= 1


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(ORDER), latency, min_size=3, max_size=3))
def test_performance_is_monotone_in_latency(lat: dict[str, float]) -> None:
    shares = latency_shares(lat, ORDER)
    assert sum(shares.values()) == 1
    weights = plan(PlanInput(Strategy(ORDER, load_balancing="performance-based"),
                             performance=Performance(lat))).default
    effective = {c: max(v, MIN_LATENCY_S) for c, v in lat.items()}  # a loopback ~0 s counts as 1 ms
    for a in ORDER:
        for b in ORDER:
            if effective[a] < effective[b]:
                assert shares[a] >= shares[b] and weights[a] >= weights[b]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(ORDER), latency, min_size=3, max_size=3),
       st.lists(st.floats(0.9, 1.1), min_size=3, max_size=3), st.floats(0.5, 30))
def test_performance_is_stable_within_the_band(lat: dict[str, float], noise: list[float], band: float) -> None:
    first = latency_shares(lat, ORDER)
    held = {c: float(v) for c, v in first.items()}
    noisy = {c: lat[c] * n for c, n in zip(ORDER, noise, strict=True)}
    candidate = latency_shares(noisy, ORDER)
    out = hold_within_band(candidate, held, band)
    moved = max(abs(float(candidate[c]) - held[c]) * 100 for c in ORDER)
    if moved < band:
        assert out == {c: Fraction(held[c]) for c in ORDER}
    else:
        assert out == candidate


@settings(max_examples=300, deadline=None)
@given(orders.flatmap(lambda o: st.tuples(st.just(o), st.lists(st.booleans(), min_size=len(o), max_size=len(o))
                                                         .filter(any))),
       st.integers(1, 50).map(lambda half: 2 * half))  # even: the configured split is exact, no rounding
def test_route_to_secondary_moves_a_failed_share_to_one_cloud(case: tuple[tuple[str, ...], list[bool]],
                                                              default_weight: int) -> None:
    """Against the configured weights: the healthy clouds carry the whole scale, and every
    healthy cloud except the heirs (the next healthy cloud after each failed one) keeps
    exactly its configured weight."""
    order, oks = case
    health = dict(zip(order, oks, strict=True))
    s = Strategy(order, action="route-to-secondary")
    p = plan(PlanInput(s, (), default_weight, health), 100)
    configured = plan(PlanInput(s, (), default_weight), 100).default
    healthy = [c for c in order if health[c]]
    down = [c for c in order if not health[c] and configured[c] > 0]
    heirs = {next(c for c in [*order[order.index(d) + 1:], *order] if c in healthy) for d in down}
    if sum(configured[c] for c in healthy) > 0:
        for c in healthy:
            if c not in heirs:
                assert p.default[c] == configured[c]
    assert sum(p.default[c] for c in healthy) == 100
