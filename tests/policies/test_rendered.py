"""The pack over every shipped stack rendered under mocks, at each environment's levels."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from edgefabric.config import raw_from_stack_file
from policies.rules import ALL_POLICIES, registry, traffic
from policies.rules.runtime import Report, Resource, evaluate, secret
from tooling.render import Rendered, render, render_stack_file

ROOT = Path(__file__).resolve().parents[2]


def policy_resources(rendered: Rendered) -> list[Resource]:
    """Registered resources with their secret inputs in the engine's secret envelope."""
    return [
        Resource(r.type, r.name, r.urn,
                 {k: secret(v) if k in r.secret_inputs else v for k, v in r.inputs.items()}, r.parent or None,
                 tuple(r.dependencies), {k: tuple(v) for k, v in r.property_dependencies.items()}, r.provider)
        for r in rendered.resources if r.type != "pulumi:pulumi:Stack"
    ]


def config(env: str) -> Mapping[str, Any]:
    return json.loads((ROOT / "policies" / "config" / f"{env}.json").read_text())


@cache
def stack_report(stack: str) -> tuple[Rendered, Report]:
    rendered = render_stack_file(ROOT / f"Pulumi.{stack}.yaml")
    return rendered, evaluate(ALL_POLICIES, policy_resources(rendered), config(stack))


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_policies_run_over_every_rendered_stack(stack: str) -> None:
    rendered, report = stack_report(stack)
    # The run is not vacuous: the workload, tag and cluster policies saw real resources, and
    # the traffic and registry ones did wherever the stack registers their resources.
    expected = ["required-labels", "k8s-requests-limits", "k8s-probes", "pinned-images",
                "cluster-endpoint-restricted", "node-pool-autoscaling", "kubernetes-version-window",
                "no-plaintext-secrets", "edge-placement-fits", "image-facts"]
    types = {r.type for r in rendered.resources}
    if traffic.WEIGHTED_FAILOVER in types:
        expected += ["failover-ttl", "failover-clouds", "health-check-timing", "health-check-thresholds",
                     "failover-notifications"]
    if types & set(registry.REGISTRY_TYPES):
        expected += ["registry-not-dev-chain", "registry-deployer-not-dev-key"]
    if registry.SERVICE_REGISTRATION in types:
        expected += ["registry-ttl-vs-heartbeat"]
    for name in expected:
        assert report.checked[name] > 0, f"{name} applied to nothing in {stack}"
    assert report.errors == []
    levels = {v.level for v in report.violations}
    assert levels <= ({"advisory"} if stack == "dev" else {"advisory", "mandatory"})


def test_prod_has_no_mandatory_violation() -> None:
    _, report = stack_report("prod")
    assert [f"{v.policy}: {v.message}" for v in report.mandatory()] == []


def test_a_bad_prod_copy_is_blocked_naming_the_policies() -> None:
    raw = raw_from_stack_file(ROOT / "Pulumi.prod.yaml")
    clusters = raw["core"]["clusters"]
    clusters["aws"] = {**clusters["aws"], "apiAllowedCidrs": ["0.0.0.0/0"], "apiAccess": "public"}
    clusters["gcp"] = {**clusters["gcp"], "kubernetesVersion": "1.27"}
    # The config loader already refuses ':latest'; a node cap above the policy's is config-legal.
    clusters["azure"] = {**clusters["azure"], "maxNodes": 500}
    rendered = render(raw, stack="prod")
    report = evaluate(ALL_POLICIES, policy_resources(rendered), config("prod"))
    found = {(v.policy, v.message) for v in report.mandatory()}
    assert ("cluster-endpoint-restricted", "cluster 'aws-cluster': EKS API endpoint is open to 0.0.0.0/0") in found
    assert ("kubernetes-version-window",
            "'gcp-cluster' minMasterVersion = '1.27' is outside the supported window 1.33..1.35") in found
    assert ("node-pool-autoscaling",
            "node pool 'azure-cluster.agentPoolProfiles[0]' may scale to 500 nodes, above the cap of 100") in found


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_pdb_lets_drains_evict_unready_pods(stack: str) -> None:
    rendered, _ = stack_report(stack)
    pdbs = rendered.of_type("kubernetes:policy/v1:PodDisruptionBudget")
    assert pdbs
    assert {p.inputs["spec"].get("unhealthyPodEvictionPolicy") for p in pdbs} == {"AlwaysAllow"}


def test_a_far_region_with_data_flows_passes_the_pack() -> None:
    """staging with eu-west on a cluster of its own in Sweden: the core broker behind a public
    load balancer (MQTT over TLS on 8883), the far region's cluster sized for its services."""
    from tests.unit.tiers.test_region_clusters import staging_with_a_far_region

    raw, _ = staging_with_a_far_region()
    rendered = render(raw, stack="staging")
    report = evaluate(ALL_POLICIES, policy_resources(rendered), config("staging"))
    assert report.errors == []
    assert [f"{v.policy}: {v.message}" for v in report.mandatory()] == []
