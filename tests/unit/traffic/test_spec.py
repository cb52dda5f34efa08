"""The one typed FailoverSpec: built from the stack config, serialised into a resource's
inputs and restored from them as the same type; bad inputs name their key path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edgefabric.config import (
    CustomCheck,
    HttpCheck,
    TcpCheck,
    load_config,
    load_stack_file,
    raw_from_stack_file,
)
from edgefabric.errors import ConfigError
from edgefabric.traffic import spec as spec_module
from edgefabric.traffic.dns.azure_tm import monitor_config
from edgefabric.traffic.dns.base import RecordSpec
from edgefabric.traffic.dns.resolver import RESOLVER_ENV, parse_resolver
from edgefabric.traffic.health import AllOf, CustomProbe, HttpProbe, TcpProbe, Thresholds, probe_many_sync
from edgefabric.traffic.spec import (
    DOES_NOT_RESOLVE,
    PENDING_ADDRESS,
    FailoverSpec,
    NativeCheck,
    Target,
    is_name,
    native_check,
)

ROOT = Path(__file__).resolve().parents[3]
STACKS = ("local", "dev", "staging", "prod")


def addresses(n: int = 3) -> dict[str, str]:
    return {c: f"203.0.113.{i + 10}" for i, c in enumerate(("aws", "azure", "gcp")[:n])}


def floats(value: Any) -> Any:
    """Numbers the way Pulumi hands them back to a provider: every one a float."""
    if isinstance(value, dict):
        return {k: floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [floats(v) for v in value]
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def spec_inputs(**over: Any) -> dict[str, Any]:
    cfg = load_stack_file(ROOT / "Pulumi.prod.yaml")
    return {**FailoverSpec.from_config(cfg, addresses()).to_inputs(), **over}


@pytest.mark.parametrize("stack", STACKS)
def test_from_config_round_trips_through_the_inputs(stack: str) -> None:
    cfg = load_stack_file(ROOT / f"Pulumi.{stack}.yaml")
    spec = FailoverSpec.from_config(cfg, {c: addresses()[c] for c in cfg.traffic_clouds}, azure_tags={"tier": "traffic"})
    inputs = spec.to_inputs()
    assert json.loads(json.dumps(inputs)) == inputs  # JSON-safe, nothing but plain values
    assert FailoverSpec.model_validate(inputs) == spec
    assert FailoverSpec.from_inputs(json.loads(json.dumps(inputs))) == spec
    assert FailoverSpec.from_inputs(floats(inputs)) == spec  # ints come back from the engine as floats
    # Saved outputs carry the inputs plus observed state; the spec takes only its own keys.
    assert FailoverSpec.from_inputs({**inputs, "plan": {}, "secrets": {"config:x": "s3cret"}}) == spec
    assert inputs["strategy"]["order"][0] == cfg.strategies[cfg.dns.strategy].primary  # type: ignore[union-attr]


def test_the_spec_is_the_stack_config_not_a_copy_of_its_defaults() -> None:
    cfg = load_stack_file(ROOT / "Pulumi.local.yaml")
    spec = FailoverSpec.from_config(cfg, addresses())
    assert spec.health_check == cfg.health_check and spec.routing == cfg.routing
    assert spec.thresholds == Thresholds(cfg.health_check.failure_threshold, cfg.health_check.success_threshold,
                                         cfg.health_check.recovery_hold_down_s)
    assert Thresholds() == Thresholds(3, 2, 300)  # the seed defaults, read from the config models
    assert spec.round_gap_s == min(1.0, cfg.health_check.interval_s)
    assert spec.record_spec().endpoints == addresses()
    with pytest.raises(ValidationError, match="frozen"):
        spec.ttl = 1  # type: ignore[misc]  # frozen


def test_addresses_left_to_the_resource_are_pending_and_never_restored() -> None:
    cfg = load_stack_file(ROOT / "Pulumi.prod.yaml")
    spec = FailoverSpec.from_config(cfg)
    assert {ep.address for ep in spec.endpoints.values()} == {PENDING_ADDRESS}
    with pytest.raises(ConfigError, match=r"WeightedFailover:endpoints\.aws\.address = '0\.0\.0\.0'"):
        FailoverSpec.from_inputs(spec.to_inputs())


@pytest.mark.parametrize(("over", "path"), [
    ({"ttl": 0}, "ttl"),
    ({"record_name": "no-trailing-dot"}, "record_name"),
    ({"endpoints": {"aws": {"address": "not-an-ip"}}}, "endpoints.aws.address"),
    ({"endpoints": {"oracle": {"address": "203.0.113.1"}}}, "endpoints.oracle"),
    ({"endpoints": {}}, "endpoints"),
    ({"health_check": {"check": {"type": "http", "port": 0}}}, "health_check.check.port"),
    ({"health_check": {"check": {"type": "custom", "command": []}}}, "health_check.check.command"),
    ({"health_check": {"check": {"type": "icmp"}}}, "health_check.check"),
    ({"strategy": {"order": []}}, "strategy.order"),
    ({"strategy": {"order": ["aws"], "failover": "sometimes"}}, "strategy.failover"),
    ({"routing": {"rules": [{"name": "eu", "regions": ["europe"], "cloud": "aws", "weight": 300}]}},
     "routing.rules[0].weight"),
    ({"routing": {"rules": [{"name": "eu", "regions": ["atlantis"], "cloud": "aws", "weight": 70}]}},
     "routing.rules[0].regions"),
    ({"backends": {"bind": {}}}, "backends.bind"),
    ({"backends": {"powerdns": {"api_url": "http://127.0.0.1:1", "api_key_ref": "plain-key", "zone": "x."}}},
     "backends.powerdns.api_key_ref"),
    ({"record_name": None}, "record_name"),  # missing
])
def test_bad_inputs_raise_config_error_naming_the_key_path(over: dict[str, Any], path: str) -> None:
    props = {k: v for k, v in spec_inputs(**over).items() if v is not None}
    with pytest.raises(ConfigError) as info:
        FailoverSpec.from_inputs(props)
    assert [p.split(" = ")[0] for p in info.value.problems] == [f"WeightedFailover:{path}"], info.value.problems
    assert [p.path for p in FailoverSpec.input_problems(props)] == [path]


def test_cross_field_problems_name_the_key_path() -> None:
    only_aws = {"aws": {"address": "203.0.113.10"}}
    with pytest.raises(ConfigError, match=r"WeightedFailover:strategy\.order = \['aws', 'gcp'\]"):
        FailoverSpec.from_inputs(spec_inputs(endpoints=only_aws, strategy={"order": ["aws", "gcp"]}))
    # The planner's own rules: a routing rule must name a cloud that serves.
    with pytest.raises(ConfigError, match=r"edgefabric:routing\.rules\[1\]\.cloud = 'azure'"):
        FailoverSpec.from_inputs(spec_inputs(endpoints=only_aws, strategy={"order": ["aws"]}))
    with pytest.raises(ConfigError, match=r"routing\.rules\[0\]\.name = 'default'"):
        FailoverSpec.from_inputs(spec_inputs(routing={"rules": [
            {"name": "default", "regions": ["europe"], "cloud": "aws", "weight": 70}]}))


def test_from_config_errors_name_the_stack_key() -> None:
    raw = raw_from_stack_file(ROOT / "Pulumi.prod.yaml")
    cfg = load_config({k: v for k, v in raw.items() if k != "dns"})
    with pytest.raises(ConfigError, match=r"^invalid stack configuration:\n  - edgefabric:dns = None"):
        FailoverSpec.from_config(cfg)
    cfg = load_stack_file(ROOT / "Pulumi.prod.yaml")
    with pytest.raises(ConfigError, match=r"edgefabric:clouds\.gcp\.ingress\.address = None"):
        FailoverSpec.from_config(cfg, addresses(2))
    with pytest.raises(ConfigError, match=r"WeightedFailover:endpoints\.aws\.address = 'x'"):
        FailoverSpec.from_config(cfg, {**addresses(), "aws": "x"})


def test_unranked_clouds_serve_after_the_ranked_ones() -> None:
    spec = FailoverSpec.from_inputs(spec_inputs(strategy={"order": ["azure"]}, routing={"rules": []}))
    assert spec.strategy.order == ("azure",)  # the inputs keep what the strategy ranks
    assert spec.plan_input({}).strategy.order == ("azure", "aws", "gcp")


def test_probes_follow_the_check() -> None:
    http = FailoverSpec.from_inputs(spec_inputs(endpoints={
        "aws": {"address": "203.0.113.10", "health_url": "http://127.0.0.1:9/ready"},
        "azure": {"address": "203.0.113.11"}, "gcp": {"address": "203.0.113.12"}}))
    probes = http.probes()
    assert probes["aws"] == HttpProbe("http://127.0.0.1:9/ready", "GET", 200)
    # Connect to the address; Host, SNI and the certificate's name are the record's.
    assert probes["azure"] == HttpProbe("https://203.0.113.11:443/healthz", "GET", 200, "api.edgefabric.example.com")
    tcp = FailoverSpec.from_inputs(spec_inputs(health_check={"check": {"type": "tcp", "port": 8443}}))
    assert tcp.probes()["gcp"] == TcpProbe("203.0.113.12", 8443)
    custom = FailoverSpec.from_inputs(spec_inputs(health_check={"check": {"type": "custom", "command": ["/bin/ok"]}}))
    assert custom.probes()["aws"] == CustomProbe(("/bin/ok", "203.0.113.10"))


@pytest.mark.parametrize(("check", "native"), [
    (HttpCheck(), NativeCheck("HTTP", 80, "/health")),
    (HttpCheck(scheme="https", port=443, path="/healthz"), NativeCheck("HTTPS", 443, "/healthz")),
    (TcpCheck(type="tcp", port=5432), NativeCheck("TCP", 5432, None)),
    (CustomCheck(type="custom", command=["/bin/check"]), NativeCheck("TCP", 80, None)),
])
def test_one_mapping_to_the_native_checkers(check: Any, native: NativeCheck) -> None:
    """The tier's Route53/GCP checks and the backends' Traffic Manager monitor both read
    `native_check`; for a custom check they used to disagree (`/` vs `/health`)."""
    assert native_check(check) == native
    spec = FailoverSpec.from_inputs(spec_inputs(health_check={"check": check.model_dump()}))
    health = spec.health_settings()
    assert (health.protocol, health.port, health.path) == (native.protocol, native.port, native.path)
    monitor = monitor_config(health)
    assert (monitor["protocol"], monitor["port"], monitor.get("path")) == (native.protocol, native.port, native.path)


# ------------------------------------------------------------------ hostname ingress

ELB = "k8s-edgefabric-api-0a1b2c3d4e5f6a7b.elb.us-east-1.amazonaws.com"


def with_aws(address: str, **over: Any) -> dict[str, Any]:
    """prod's spec inputs with the aws endpoint at `address` (azure, gcp keep their IPs)."""
    eps = {c: {"address": a} for c, a in addresses().items()}
    return spec_inputs(endpoints={**eps, "aws": {"address": address}}, **over)


def fake_dns(monkeypatch: pytest.MonkeyPatch, table: dict[str, tuple[str, ...]]) -> list[tuple[Any, ...]]:
    """Answer the spec's name lookups from `table` (a name it lacks does not resolve)."""
    asked: list[tuple[Any, ...]] = []

    def resolve_a(name: str, resolver: str | None = None, lifetime_s: float = 5.0) -> tuple[str, ...]:
        asked.append((name, resolver, lifetime_s))
        return table.get(name, ())

    monkeypatch.setattr(spec_module, "resolve_a", resolve_a)
    return asked


@pytest.mark.parametrize("address", [ELB, ELB.upper() + ".", "ingress.internal.example"])
def test_an_endpoint_may_be_a_dns_name(address: str) -> None:
    spec = FailoverSpec.from_inputs(with_aws(address))
    endpoint = spec.endpoints["aws"]
    assert endpoint.address == address.lower().removesuffix(".") and endpoint.is_name and is_name(endpoint.address)
    assert not spec.endpoints["azure"].is_name
    assert FailoverSpec.from_inputs(json.loads(json.dumps(spec.to_inputs()))) == spec


@pytest.mark.parametrize("address", ["elb", "lb..example.com", "-lb.example.com", "lb_1.example.com",
                                     "10.0.0.256", "1.2.3", "x" * 64 + ".example.com", ""])
def test_an_address_neither_ip_nor_name_names_its_key_path(address: str) -> None:
    with pytest.raises(ConfigError) as info:
        FailoverSpec.from_inputs(with_aws(address))
    (problem,) = info.value.problems
    assert problem.startswith(f"WeightedFailover:endpoints.aws.address = {address!r}: "), problem
    assert "does not appear to be an IPv4 or IPv6 address, nor a fully qualified DNS name" in problem


def test_the_stack_config_takes_a_hostname_ingress_and_names_a_bad_one() -> None:
    raw: dict[str, Any] = {"environment": "t", "clouds": {"aws": {"enabled": True, "ingress": {"address": ELB}}}}
    cfg = load_config(raw)
    ingress = cfg.clouds.aws.ingress
    assert ingress is not None and ingress.address == ELB and ingress.is_name
    assert cfg.clouds.provisioned == []  # the name answers for aws: no cluster is made
    raw["clouds"]["aws"]["ingress"]["address"] = "elb"
    with pytest.raises(ConfigError, match=r"edgefabric:clouds\.aws\.ingress\.address = 'elb': does not appear to "
                                          r"be an IPv4 or IPv6 address, nor a fully qualified DNS name"):
        load_config(raw)


def test_a_name_is_probed_at_every_address_it_resolves_to(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_dns(monkeypatch, {ELB: ("198.51.100.7", "198.51.100.8")})
    spec = FailoverSpec.from_inputs(with_aws(ELB, resolver="127.0.0.1:5353"))
    probes = spec.probes()
    assert asked == [(ELB, "127.0.0.1:5353", spec.timeout_s)]  # only the name is looked up
    aws = probes["aws"]
    assert isinstance(aws, AllOf)
    assert [(p.url, p.server_name) for p in aws.probes if isinstance(p, HttpProbe)] == [
        ("https://198.51.100.7:443/healthz", "api.edgefabric.example.com"),
        ("https://198.51.100.8:443/healthz", "api.edgefabric.example.com")]
    assert aws.labels == ("healthCheck.check at 198.51.100.7", "healthCheck.check at 198.51.100.8")
    assert probes["azure"] == FailoverSpec.from_inputs(spec_inputs()).probes()["azure"]  # an IP: as before
    tcp = FailoverSpec.from_inputs(with_aws(ELB, health_check={"check": {"type": "tcp", "port": 8443}})).probes()
    assert isinstance(tcp["aws"], AllOf)
    assert [(p.host, p.port) for p in tcp["aws"].probes if isinstance(p, TcpProbe)] == [
        ("198.51.100.7", 8443), ("198.51.100.8", 8443)]
    custom = FailoverSpec.from_inputs(with_aws(ELB, health_check={"check": {"type": "custom", "command": ["/bin/ok"]}}))
    assert isinstance(custom.probes()["aws"], AllOf)
    assert [p.command for p in custom.probes()["aws"].probes if isinstance(p, CustomProbe)] == [  # type: ignore[union-attr]
        ("/bin/ok", "198.51.100.7"), ("/bin/ok", "198.51.100.8")]
    # One address: the same single probe an IP gets.
    fake_dns(monkeypatch, {ELB: ("198.51.100.7",)})
    one = FailoverSpec.from_inputs(with_aws(ELB)).probes()["aws"]
    assert isinstance(one, HttpProbe) and one.url == "https://198.51.100.7:443/healthz"


def test_a_name_that_does_not_resolve_fails_the_round_and_is_left_out_of_the_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_dns(monkeypatch, {})
    spec = FailoverSpec.from_inputs(with_aws(ELB))
    result = probe_many_sync(spec.probes(), 5.0)["aws"]
    assert not result.ok and result.detail.startswith(f"{ELB} {DOES_NOT_RESOLVE}"), result.detail
    record = spec.record_spec()
    assert record.endpoints["aws"] == ELB and record.addresses == {"aws": ()}
    assert record.split({"aws": 60, "azure": 20, "gcp": 20}) == [("azure", "203.0.113.11", 20),
                                                                 ("gcp", "203.0.113.12", 20)]
    # Deleting needs no address: nothing is looked up.
    asked = fake_dns(monkeypatch, {})
    assert spec.record_spec(resolve_names=False).addresses == {} and asked == []


def test_the_resolver_is_the_specs_else_the_environments_else_the_systems(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_dns(monkeypatch, {ELB: ("198.51.100.7",)})
    monkeypatch.setenv(RESOLVER_ENV, "127.0.0.1:1053")
    FailoverSpec.from_inputs(with_aws(ELB)).targets()
    FailoverSpec.from_inputs(with_aws(ELB, resolver="[::1]:53")).targets()
    monkeypatch.delenv(RESOLVER_ENV)
    targets = FailoverSpec.from_inputs(with_aws(ELB)).targets()
    assert [a[1] for a in asked] == ["127.0.0.1:1053", "[::1]:53", None]
    assert targets["aws"] == Target("aws", ELB, ("198.51.100.7",)) and targets["aws"].name == ELB
    assert targets["gcp"] == Target("gcp", "203.0.113.12", ("203.0.113.12",)) and targets["gcp"].name is None
    with pytest.raises(ConfigError, match=r"WeightedFailover:resolver = 'dns\.example\.com'"):
        FailoverSpec.from_inputs(with_aws(ELB, resolver="dns.example.com"))
    assert parse_resolver("127.0.0.1") == ("127.0.0.1", 53) and parse_resolver("[::1]:5353") == ("::1", 5353)


def test_a_clouds_weight_is_split_evenly_between_its_addresses() -> None:
    record = RecordSpec("api.example.com.", 30, {"aws": ELB, "azure": "203.0.113.11", "gcp": "gcp.example.com"},
                        addresses={"aws": ("198.51.100.7", "198.51.100.8", "198.51.100.9"), "gcp": ()})
    assert record.split({"aws": 100, "azure": 50, "gcp": 10}) == [
        ("aws", "198.51.100.7", 34), ("aws", "198.51.100.8", 33), ("aws", "198.51.100.9", 33),
        ("azure", "203.0.113.11", 50)]  # gcp's name did not resolve: no part, never an empty one
    assert record.split({"aws": 1}) == [("aws", "198.51.100.7", 1), ("aws", "198.51.100.8", 0),
                                        ("aws", "198.51.100.9", 0)]
    assert record.cloud_for_ip() == {ELB: "aws", "198.51.100.7": "aws", "198.51.100.8": "aws",
                                     "198.51.100.9": "aws", "203.0.113.11": "azure", "gcp.example.com": "gcp"}
    # A name nobody resolved is never published as if it were an address.
    assert RecordSpec("api.example.com.", 30, {"aws": ELB}).answers_for("aws") == ()
