"""GlobalTraffic renders under pulumi mocks for every shipped stack file."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime.mocks as pmocks
import pulumi.runtime.settings as psettings
import pulumi_aws as aws
import pulumi_gcp as gcp
import pytest
from pulumi_kubernetes.core.v1 import outputs as k8s_outputs

from edgefabric.config import CustomCheck, StackConfig, load_stack_file
from edgefabric.tiers.traffic import GlobalTraffic, GlobalTrafficArgs
from edgefabric.tiers.workloads import lb_address as _lb_address
from edgefabric.traffic.dns.azure_tm import monitor_config
from edgefabric.traffic.spec import FailoverSpec, is_name
from tests.unit.tiers.conftest import rendered_stack
from tooling.render import mock_outputs

ROOT = Path(__file__).resolve().parents[3]
STACKS = ("local", "dev", "staging", "prod")
FAILOVER_TYPE = "pulumi-python:dynamic/failover:WeightedFailover"
SERVICE = "kubernetes:core/v1:Service"


class Mocks(pmocks.Mocks):
    def __init__(self) -> None:
        self.resources: list[pmocks.MockResourceArgs] = []

    def new_resource(self, args: pmocks.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        outs = dict(args.inputs)
        if args.typ == FAILOVER_TYPE:
            outs.update(plan={"scale": 100}, health={}, record_ids={}, last_change_at="2026-01-01T00:00:00+00:00")
        if args.typ == "gcp:compute/healthCheck:HealthCheck":
            outs["selfLink"] = f"https://www.googleapis.com/compute/v1/projects/p/global/healthChecks/{args.name}"
        return f"{args.name}-id", outs

    def call(self, args: pmocks.MockCallArgs) -> dict[str, Any]:
        return {}


def traffic_args(cfg: StackConfig, addresses: dict[str, Any],
                 providers: dict[str, pulumi.ProviderResource]) -> GlobalTrafficArgs:
    """GlobalTraffic's slice of a stack config, the way __main__ cuts it."""
    assert cfg.dns is not None
    return GlobalTrafficArgs(
        dns=cfg.dns, strategy=cfg.strategies[cfg.dns.strategy], routing=cfg.routing,
        strategies=cfg.strategies, action=cfg.failover.action,
        health_check=cfg.health_check, addresses=addresses, environment=cfg.environment, tags=cfg.tags,
        health_urls={c: ep.health_url for c in cfg.clouds.enabled
                     if (ep := cfg.clouds.get(c).ingress) is not None and ep.health_url},
        providers=providers,
    )  # fmt: skip


def start_mocks(stack: str, monkeypatch: pytest.MonkeyPatch, secret_value: str) -> Mocks:
    pulumi.runtime.set_all_config({"edgefabric:powerdnsApiKey": secret_value},
                                  secret_keys=["edgefabric:powerdnsApiKey"])  # fmt: skip
    monkeypatch.setenv("ARM_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000000")
    psettings.set_root_resource(None)  # type: ignore[arg-type]
    mocks = Mocks()
    pmocks.set_mocks(mocks, project="edgefabric", stack=stack, preview=False)
    return mocks


@pytest.mark.parametrize("stack", STACKS)
def test_global_traffic_renders(stack: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_stack_file(ROOT / f"Pulumi.{stack}.yaml")
    assert cfg.dns is not None
    secret_value = f"mock-pdns-key-{stack}"
    mocks = start_mocks(stack, monkeypatch, secret_value)

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        providers: dict[str, pulumi.ProviderResource] = {}
        if "aws" in cfg.traffic_clouds:
            providers["aws"] = aws.Provider("aws", region="us-east-1")
        if "gcp" in cfg.traffic_clouds:
            providers["gcp"] = gcp.Provider("gcp", project="edgefabric-test")
        endpoints = {
            c: (cfg.clouds.get(c).ingress.address if cfg.clouds.get(c).ingress else f"203.0.113.{i + 10}")
            for i, c in enumerate(cfg.traffic_clouds)
        }  # fmt: skip
        comp = GlobalTraffic("global", traffic_args(cfg, endpoints, providers))

        def verify(args: list[Any]) -> None:
            assert args[0].endswith("edgefabric:traffic:GlobalTraffic::global"), args[0]
            by_type: dict[str, list[pmocks.MockResourceArgs]] = {}
            for r in mocks.resources:
                by_type.setdefault(r.typ, []).append(r)
            # One WeightedFailover per published name, each following its own strategy.
            failovers = {r.inputs["record_name"]: r for r in by_type[FAILOVER_TYPE]}
            # In any order: the mocks record resources as their registrations resolve.
            assert len(by_type[FAILOVER_TYPE]) == len(cfg.dns.all_records)
            assert sorted(failovers) == sorted(r.name for r in cfg.dns.all_records)
            for record in cfg.dns.all_records:
                got = FailoverSpec.from_inputs(failovers[record.name].inputs)
                want = FailoverSpec.from_config(cfg, endpoints, record=record)
                assert got.strategy == want.strategy and got.strategy.order[0] == cfg.strategies[record.strategy].primary
            fo = failovers[cfg.dns.record_name]
            inputs = fo.inputs
            # The inputs are the typed spec, serialised, with the addresses laid over it.
            spec = FailoverSpec.from_inputs(inputs)
            overlaid = {"health_check_ids", "backends"}  # Route53 check ids, GCP check, Azure tags
            assert spec.model_dump(exclude=overlaid) == FailoverSpec.from_config(cfg, endpoints).model_dump(
                exclude=overlaid)
            assert {c: ep.address for c, ep in spec.endpoints.items()} == endpoints
            assert inputs["record_name"] == cfg.dns.record_name
            assert set(inputs["endpoints"]) == set(cfg.traffic_clouds)
            assert inputs["strategy"]["order"][0] == cfg.strategies[cfg.dns.strategy].primary
            assert inputs["provider_version"]
            backends = cfg.dns.backends
            r53 = by_type.get("aws:route53/healthCheck:HealthCheck", [])
            if backends.route53 is not None and backends.route53.health_check_ids and "aws" in providers:
                assert len(r53) == len(cfg.traffic_clouds), f"{stack}: one Route53 check per cloud"
                for check in r53:
                    tags = check.inputs["tags"]
                    assert {"environment", "tier", "cloud", "managed-by"} <= set(tags), check.name
                    assert tags["tier"] == "traffic" and check.inputs["failureThreshold"] == cfg.health_check.failure_threshold
                assert set(inputs["health_check_ids"]) == set(cfg.traffic_clouds)
            else:
                assert r53 == []
            gcp_checks = by_type.get("gcp:compute/healthCheck:HealthCheck", [])
            assert len(gcp_checks) == (1 if backends.gcp_dns is not None and "gcp" in providers else 0)
            if "azure_tm" in inputs["backends"]:
                assert inputs["backends"]["azure_tm"]["tags"]["tier"] == "traffic"
            # No secret value travels as a plain input or inside the pickled provider.
            plain = json.dumps({k: v for k, v in inputs.items() if k not in ("secrets", "__provider")})
            assert secret_value not in plain
            blob = inputs["__provider"]
            blob = blob.get("value", "") if isinstance(blob, dict) else blob  # secret envelope under mocks
            assert blob and secret_value.encode() not in base64.b64decode(blob)
            if backends.powerdns is not None and backends.powerdns.api_key_ref.startswith("config:"):
                envelope = inputs["secrets"]  # passed as a pulumi secret: encrypted in state
                assert envelope["4dabf18193072939515e22adb298388d"] == "1b47061264138c4ac30d75fd1eb44270"
                assert envelope["value"] == {backends.powerdns.api_key_ref: secret_value}

        # Every name's failover registered (comp.plans), not only the first's: the mocks record a
        # resource when its registration resolves, and a second name's may still be in flight.
        return pulumi.Output.all(comp.urn, comp.plan, comp.record_ids, comp.plans).apply(verify)

    program()



def test_native_checkers_and_traffic_manager_agree_on_a_custom_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """A custom check (a command) has no native equivalent: the Route53 checks, the GCP check
    and the Traffic Manager monitor must all get the same stand-in (TCP to port 80)."""
    cfg = load_stack_file(ROOT / "Pulumi.prod.yaml")
    custom = cfg.health_check.model_copy(update={"check": CustomCheck(type="custom", command=["/bin/check"])})
    cfg = cfg.model_copy(update={"health_check": custom})
    mocks = start_mocks("prod", monkeypatch, "unused")
    endpoints = {c: f"203.0.113.{i + 10}" for i, c in enumerate(cfg.traffic_clouds)}

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        providers = {"aws": aws.Provider("aws", region="us-east-1"), "gcp": gcp.Provider("gcp", project="p-test")}
        comp = GlobalTraffic("global", traffic_args(cfg, endpoints, providers))

        def verify(_: Any) -> None:
            by_type: dict[str, list[pmocks.MockResourceArgs]] = {}
            for r in mocks.resources:
                by_type.setdefault(r.typ, []).append(r)
            (fo,) = by_type[FAILOVER_TYPE]
            monitor = monitor_config(FailoverSpec.from_inputs(fo.inputs).record_spec().health)
            assert (monitor["protocol"], monitor["port"], monitor.get("path")) == ("TCP", 80, None)
            r53 = by_type["aws:route53/healthCheck:HealthCheck"]
            assert {(c.inputs["type"], c.inputs["port"], c.inputs.get("resourcePath")) for c in r53} == {
                ("TCP", 80, None)}
            (gcp_check,) = by_type["gcp:compute/healthCheck:HealthCheck"]
            assert gcp_check.inputs["tcpHealthCheck"] == {"port": 80}
            assert "httpHealthCheck" not in gcp_check.inputs

        return comp.plan.apply(verify)

    program()


# ------------------------------------------------------------------ hostname ingress


def test_an_aws_load_balancer_reports_a_hostname_and_the_cloud_stack_still_renders() -> None:
    """An AWS load balancer reports `status.loadBalancer.ingress[0].hostname` and no IP. The
    mocks answer that way, so a cloud stack that only works with IPs fails here, not at
    `pulumi up` (where the provider's check rejected the name and Route53 got it as an IP)."""
    rendered = rendered_stack("dev")
    (fo,) = rendered.of_type(FAILOVER_TYPE)
    endpoints = {c: ep["address"] for c, ep in fo.inputs["endpoints"].items()}
    assert is_name(endpoints["aws"]) and endpoints["aws"].endswith(".elb.us-east-1.amazonaws.com"), endpoints
    assert not is_name(endpoints["azure"]) and not is_name(endpoints["gcp"]), endpoints
    # What the provider's `check` says of these inputs at `pulumi up`.
    assert FailoverSpec.input_problems(fo.inputs) == []
    assert FailoverSpec.from_inputs(fo.inputs).endpoints["aws"].is_name
    checks = {r.name: r.inputs for r in rendered.of_type("aws:route53/healthCheck:HealthCheck")}
    assert checks["global-r53-aws"].get("fqdn") == endpoints["aws"] and "ipAddress" not in checks["global-r53-aws"]
    for cloud in ("azure", "gcp"):
        assert checks[f"global-r53-{cloud}"].get("ipAddress") == endpoints[cloud]
        assert "fqdn" not in checks[f"global-r53-{cloud}"]
    # Everything else that takes the ingress address takes the name as well.
    assert rendered.outputs["ingress"]["aws"] == endpoints["aws"]


@pytest.mark.parametrize("stack", STACKS)
def test_every_route53_check_targets_an_ip_or_a_name_never_both(stack: str) -> None:
    for check in rendered_stack(stack).of_type("aws:route53/healthCheck:HealthCheck"):
        kind = {k for k in ("ipAddress", "fqdn") if check.inputs.get(k)}
        assert len(kind) == 1, (stack, check.name, check.inputs)
        target = check.inputs[kind.pop()]
        assert is_name(target) == ("fqdn" in check.inputs), (stack, check.name, target)


def test_the_mocks_answer_load_balancers_like_each_cloud() -> None:
    lb = {"spec": {"type": "LoadBalancer"}}
    aws_k8s = "urn:pulumi:dev::edgefabric::edgefabric:core:CloudCore$pulumi:providers:kubernetes::aws-k8s::aws-k8s-id"
    gcp_k8s = aws_k8s.replace("aws-k8s", "gcp-k8s")
    (point,) = mock_outputs(SERVICE, "us-east-regional-gateway", lb, aws_k8s, "eu-west-1")["status"]["loadBalancer"]["ingress"]
    assert set(point) == {"hostname"} and point["hostname"].endswith(".elb.eu-west-1.amazonaws.com")
    (point,) = mock_outputs(SERVICE, "gcp-api-gateway", lb, gcp_k8s)["status"]["loadBalancer"]["ingress"]
    assert set(point) == {"ip"}


@pytest.mark.parametrize(("status", "address"), [
    ({"loadBalancer": {"ingress": [{"hostname": "k8s-a-1b2c.elb.us-east-1.amazonaws.com"}]}},
     "k8s-a-1b2c.elb.us-east-1.amazonaws.com"),
    ({"loadBalancer": {"ingress": [{"ip": "203.0.113.7", "hostname": "lb.example.com"}]}}, "203.0.113.7"),
    ({"loadBalancer": {"ingress": [{}, {"ip": "203.0.113.8"}]}}, "203.0.113.8"),
    ({"loadBalancer": {}}, ""),
    (None, ""),
])
def test_the_core_ingress_is_the_load_balancers_ip_or_else_its_hostname(status: Any, address: str) -> None:
    assert _lb_address(status) == address
    if status and status["loadBalancer"].get("ingress"):  # the SDK's typed status reads the same
        typed = k8s_outputs.ServiceStatus(load_balancer=k8s_outputs.LoadBalancerStatus(
            ingress=[k8s_outputs.LoadBalancerIngress(**p) for p in status["loadBalancer"]["ingress"]]))
        assert _lb_address(typed) == address
