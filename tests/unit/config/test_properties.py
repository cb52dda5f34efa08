"""Property tests for the config models and the edge placement check."""

from __future__ import annotations

import copy
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from edgefabric.config import ConfigError, load_config, raw_from_stack_file

ROOT = Path(__file__).resolve().parents[3]
DEV = raw_from_stack_file(ROOT / "Pulumi.dev.yaml")
DIMS = (("cpu", "cpu"), ("memoryMb", "memoryMb"), ("storageMb", "storageMb"))

requirement = st.fixed_dictionaries({
    "cpu": st.sampled_from([0.1, 0.25, 0.5, 1.0, 2.0]),
    "memoryMb": st.integers(16, 4096),
    "storageMb": st.integers(0, 8192),
})
services = st.lists(st.tuples(requirement, st.integers(1, 3)), min_size=1, max_size=5)
capabilities = st.fixed_dictionaries({
    "cpu": st.sampled_from([1.0, 2.0, 4.0, 8.0]),
    "memoryMb": st.integers(256, 16384),
    "storageMb": st.integers(0, 32768),
})


def _site(caps: dict, svcs: list[tuple[dict, int]]) -> dict:
    return {
        "name": "site-a", "location": "lab", "kubeconfigRef": "env:KUBECONFIG_A",
        "capabilities": {**caps, "runtime": "kubernetes"},
        "services": [{"name": f"svc-{i}", "kind": "edge-gateway", "image": "envoyproxy/envoy:v1.32.3",
                      "replicas": replicas, "requirements": req,
                      "ports": [{"name": "http", "port": 8080}]}
                     for i, (req, replicas) in enumerate(svcs)],
    }


@settings(max_examples=150, deadline=None)
@given(caps=capabilities, svcs=services)
def test_placement_accepts_exactly_what_fits(caps: dict, svcs: list[tuple[dict, int]]) -> None:
    raw = copy.deepcopy(DEV)
    raw["edge"]["sites"] = [_site(caps, svcs)]
    raw.pop("dataFlows", None)  # it names dev's own sites, which this property replaces
    fits = all(sum(req[key] * n for req, n in svcs) <= caps[cap] + 1e-9 for key, cap in DIMS)
    try:
        load_config(raw)
    except ConfigError as err:
        assert not fits, f"rejected a placement that fits: {err}"
        for problem in err.problems:
            assert problem.startswith("edgefabric:edge.sites[0].services["), problem
            index = int(problem.split("services[")[1].split("]")[0])
            assert 0 <= index < len(svcs)
            assert ".requirements." in problem and "allowed: <=" in problem
    else:
        assert fits, "accepted a placement that does not fit"


@settings(max_examples=100, deadline=None)
@given(interval=st.floats(0.5, 600, allow_nan=False), timeout=st.floats(0.1, 700, allow_nan=False),
       fail=st.integers(-2, 10), ok=st.integers(-2, 10))
def test_health_check_rules(interval: float, timeout: float, fail: int, ok: int) -> None:
    raw = copy.deepcopy(DEV)
    raw["healthCheck"] = {"intervalS": interval, "timeoutS": timeout, "failureThreshold": fail,
                          "successThreshold": ok, "check": DEV["healthCheck"]["check"]}  # a port the gateway serves
    valid = timeout < interval and fail >= 1 and ok >= 1 and timeout <= 600
    try:
        cfg = load_config(raw)
    except ConfigError as err:
        assert not valid, str(err)
        assert all(p.startswith("edgefabric:healthCheck.") for p in err.problems), err.problems
    else:
        assert valid
        assert cfg.health_check.timeout_s < cfg.health_check.interval_s


@settings(max_examples=60, deadline=None)
@given(weights=st.lists(st.integers(-50, 150), min_size=3, max_size=3))
def test_rule_weights_in_range(weights: list[int]) -> None:
    raw = copy.deepcopy(DEV)
    for rule, weight in zip(raw["routing"]["rules"], weights, strict=True):
        rule["weight"] = weight
    bad = {i for i, w in enumerate(weights) if not 1 <= w <= 100}
    try:
        load_config(raw)
    except ConfigError as err:
        named = {int(p.split("rules[")[1].split("]")[0]) for p in err.problems}
        assert named == bad
    else:
        assert not bad


def test_models_round_trip_through_stack_spelling() -> None:
    """Dumping a loaded stack by alias and loading it again gives the same model."""
    for stack in ("local", "dev", "staging", "prod"):
        cfg = load_config(raw_from_stack_file(ROOT / f"Pulumi.{stack}.yaml"))
        again = load_config(cfg.model_dump(by_alias=True, exclude_none=True))
        assert again == cfg, stack
