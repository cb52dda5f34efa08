"""The pure planner: examples from the seed, and Hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefabric.errors import ConfigError
from edgefabric.traffic.planner import PlanInput, RegionRule, Strategy, configured_plan, plan

AAA = Strategy(("aws", "azure", "gcp"))
SEED_RULES = (
    RegionRule("americas", ("north-america", "south-america"), "aws", 70),
    RegionRule("europe-africa", ("europe", "africa"), "azure", 70),
    RegionRule("asia-australia", ("asia", "australia"), "gcp", 70),
)


def test_seed_configuration_all_healthy() -> None:
    p = plan(PlanInput(AAA, SEED_RULES, default_weight=100))
    assert p.default == {"aws": 100, "azure": 0, "gcp": 0}
    assert p.answers["americas"].weights == {"aws": 70, "azure": 15, "gcp": 15}
    assert p.answers["europe-africa"].weights == {"aws": 15, "azure": 70, "gcp": 15}
    assert p.answers["asia-australia"].weights == {"aws": 15, "azure": 15, "gcp": 70}
    assert not p.fail_open and p.alerts == ()


def test_unhealthy_share_goes_to_healthy_in_proportion() -> None:
    p = plan(PlanInput(AAA, SEED_RULES, health={"azure": False}))
    assert p.answers["europe-africa"].weights == {"aws": 50, "azure": 0, "gcp": 50}
    assert p.answers["americas"].weights == {"aws": 82, "azure": 0, "gcp": 18}  # 70:15 -> 82.35:17.65
    assert p.alerts and "azure" in p.alerts[0]


def test_default_primary_down_goes_to_next_priority() -> None:
    p = plan(PlanInput(Strategy(("aws", "gcp", "azure")), default_weight=100, health={"aws": False}))
    assert p.default == {"aws": 0, "gcp": 100, "azure": 0}


def test_active_passive_all_to_highest_priority_healthy() -> None:
    s = Strategy(("aws", "azure", "gcp"), replication="active-passive")
    assert plan(PlanInput(s, default_weight=60)).default == {"aws": 100, "azure": 0, "gcp": 0}
    p = plan(PlanInput(s, SEED_RULES, health={"aws": False}))
    assert p.default == {"aws": 0, "azure": 100, "gcp": 0}
    assert p.answers["asia-australia"].weights == {"aws": 0, "azure": 0, "gcp": 100}


def test_manual_never_moves_weight_only_reports() -> None:
    s = Strategy(("aws", "azure", "gcp"), failover="manual")
    healthy = plan(PlanInput(s, SEED_RULES))
    down = plan(PlanInput(s, SEED_RULES, health={"aws": False}))
    assert down.weights() == healthy.weights()
    assert any("manual" in a and "aws" in a for a in down.alerts)


def test_all_down_fails_open_with_alert() -> None:
    inp = PlanInput(AAA, SEED_RULES, default_weight=60, health=dict.fromkeys(("aws", "azure", "gcp"), False))
    p = plan(inp)
    assert p.fail_open and p.weights() == configured_plan(inp).weights()
    assert p.default == {"aws": 60, "azure": 20, "gcp": 20}
    assert "failing open" in p.alerts[0]


def test_route53_scale_255() -> None:
    p = plan(PlanInput(AAA, SEED_RULES), scale=255)
    assert all(sum(a.weights.values()) == 255 for a in p.answers.values())
    assert p.answers["americas"].weights == {"aws": 179, "azure": 38, "gcp": 38}  # 178.5, 38.25, 38.25


@pytest.mark.parametrize(
    ("inp", "scale", "match"),
    [
        (PlanInput(AAA, (RegionRule("x", ("europe",), "oracle", 50),)), 100, r"rules\[0\]\.cloud"),
        (PlanInput(AAA, (RegionRule("x", ("europe",), "aws", 0),)), 100, r"rules\[0\]\.weight"),
        (PlanInput(AAA, default_weight=101), 100, "defaultWeight"),
        (PlanInput(Strategy(())), 100, r"strategy\.primary"),
        (PlanInput(AAA, (RegionRule("default", ("europe",), "aws", 5),)), 100, "reserved"),
    ],
)
def test_user_errors_name_the_key(inp: PlanInput, scale: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        plan(inp, scale)


def test_a_scale_no_backend_uses_is_a_bug_not_a_user_error() -> None:
    with pytest.raises(ValueError, match="scale") as info:
        plan(PlanInput(AAA), 1000)
    assert not isinstance(info.value, ConfigError)


def test_every_problem_is_listed_at_once() -> None:
    inp = PlanInput(AAA, (RegionRule("default", ("europe",), "oracle", 0),), default_weight=101)
    with pytest.raises(ConfigError) as info:
        plan(inp)
    assert [p.split(" = ")[0] for p in info.value.problems] == [
        "edgefabric:routing.defaultWeight", "edgefabric:routing.rules[0].name",
        "edgefabric:routing.rules[0].cloud", "edgefabric:routing.rules[0].weight"]


# ------------------------------------------------------------- properties

clouds_st = st.permutations(["aws", "azure", "gcp"]).flatmap(
    lambda order: st.integers(1, 3).map(lambda n: tuple(order[:n]))
)


@st.composite
def plan_inputs(draw: st.DrawFn) -> tuple[PlanInput, int]:
    order = draw(clouds_st)
    rules = tuple(
        RegionRule(f"r{i}", ("europe",), draw(st.sampled_from(order)), draw(st.integers(1, 100)))
        for i in range(draw(st.integers(0, 3)))
    )
    strategy = Strategy(
        order,
        replication=draw(st.sampled_from(["active-active", "active-passive"])),
        failover=draw(st.sampled_from(["automatic", "manual"])),
    )
    health = {c: draw(st.booleans()) for c in order}
    return PlanInput(strategy, rules, draw(st.integers(1, 100)), health), draw(st.sampled_from([100, 255]))


@settings(max_examples=300, deadline=None)
@given(plan_inputs())
def test_sums_are_exact_and_nonnegative(case: tuple[PlanInput, int]) -> None:
    inp, scale = case
    for answer in plan(inp, scale).answers.values():
        assert sum(answer.weights.values()) == scale
        assert all(w >= 0 for w in answer.weights.values())


@settings(max_examples=300, deadline=None)
@given(plan_inputs())
def test_no_weight_to_unhealthy_unless_all_unhealthy(case: tuple[PlanInput, int]) -> None:
    inp, scale = case
    p = plan(inp, scale)
    any_healthy = any(inp.health.get(c, True) for c in inp.strategy.order)
    assert p.fail_open == (not any_healthy and inp.strategy.failover == "automatic")
    if inp.strategy.failover == "automatic" and any_healthy:
        for answer in p.answers.values():
            assert all(answer.weights[c] == 0 for c in inp.strategy.order if not inp.health[c])


@settings(max_examples=300, deadline=None)
@given(plan_inputs())
def test_relative_order_among_healthy_preserved(case: tuple[PlanInput, int]) -> None:
    inp, scale = case
    p = plan(inp, scale)
    configured = configured_plan(inp, scale)
    healthy = [c for c in inp.strategy.order if inp.health.get(c, True)] or list(inp.strategy.order)
    for name, answer in p.answers.items():
        want = configured.answers[name].weights
        for a in healthy:
            for b in healthy:
                if want[a] > want[b]:
                    assert answer.weights[a] >= answer.weights[b], (name, a, b, want, answer.weights)


@settings(max_examples=200, deadline=None)
@given(plan_inputs())
def test_deterministic(case: tuple[PlanInput, int]) -> None:
    inp, scale = case
    assert plan(inp, scale) == plan(inp, scale)
    # Insertion order of the health mapping must not matter either.
    reordered = PlanInput(inp.strategy, inp.rules, inp.default_weight, dict(reversed(list(inp.health.items()))))
    assert plan(reordered, scale) == plan(inp, scale)


def test_engine_free_modules_never_import_pulumi() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys; import edgefabric.traffic.health, edgefabric.traffic.planner, edgefabric.traffic.reconcile, "
        "edgefabric.traffic.spec, edgefabric.traffic.dns, edgefabric.controller.daemon, "
        "edgefabric.controller.notify, edgefabric.traffic.dns.route53, edgefabric.traffic.dns.azure_tm, edgefabric.traffic.dns.gcp_dns, "
        "edgefabric.traffic.dns.powerdns, devenv.endpoints, devenv.powerdns; "
        "print(sorted(m for m in sys.modules if m == 'pulumi' or m.startswith('pulumi.')))"
    )
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
