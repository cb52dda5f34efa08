"""The one typed failover spec: what the WeightedFailover resource and the controller publish.

Built once from the typed stack config (`FailoverSpec.from_config`; `build` from the slices
of it the traffic tier receives), so `pulumi up` and the controller publish exactly the same
plan. A dynamic resource serialises it into its inputs
(`to_inputs`: `model_dump`, JSON-safe, snake_case keys) and restores the same type from them
(`from_inputs`: `model_validate`). There is no second, hand-written validation of a dict:
the field constraints are the stack config's own models (health check, routing rules,
backends, ingress endpoints), reused; the only checks added here are the ones that span the
spec's own fields (every ranked cloud has an endpoint, routing fits the strategy).

Addresses may only be known as Pulumi Outputs where the program builds the spec. There the
spec holds `PENDING_ADDRESS` and the resource supplies the addresses as its own `addresses`
input (see `edgefabric.dynamic.failover`); `from_inputs` rejects a spec that
still holds the placeholder, so it can never reach a DNS answer.

Engine-free: never imports pulumi.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgefabric.config.models import (
    CustomCheck,
    DnsConfig,
    HealthCheckConfig,
    HttpCheck,
    RoutingConfig,
    StackConfig,
    StrategyConfig,
    TcpCheck,
    TrafficEndpoint,
)
from edgefabric.config.vocab import CLOUDS, Cloud
from edgefabric.errors import ConfigError, Problem
from edgefabric.traffic.dns import BackendSettings
from edgefabric.traffic.dns.base import HealthSettings, RecordSpec
from edgefabric.traffic.health import CustomProbe, HttpProbe, Probe, TcpProbe, Thresholds
from edgefabric.traffic.planner import (
    FailoverMode,
    PlanInput,
    RegionRule,
    Replication,
    Strategy,
    plan_problems,
)

# Problems in a resource's inputs are named by input key (`ttl`, `endpoints.aws.address`).
INPUTS = "WeightedFailover"
# Where the program builds the spec, an address is an Output: it travels as its own input.
PENDING_ADDRESS = "0.0.0.0"

# The record's constraints are the stack config's (`dns.recordName`, `dns.ttl`), not restated.
RecordName = Annotated[(str, *DnsConfig.model_fields["record_name"].metadata)]
Ttl = Annotated[(int, *DnsConfig.model_fields["ttl"].metadata)]


# ------------------------------------------------------------- native checkers


@dataclass(frozen=True)
class NativeCheck:
    """How a cloud's own checker probes an endpoint: Route53 HealthCheck, GCP compute
    HealthCheck and the Traffic Manager monitor all take exactly this."""

    protocol: Literal["HTTP", "HTTPS", "TCP"]
    port: int
    path: str | None  # None for TCP


def native_check(check: HttpCheck | TcpCheck | CustomCheck) -> NativeCheck:
    """The one mapping from our health check to the clouds' native checkers.

    A `custom` check is a command only our probes can run. Its native stand-in is a TCP
    connect to the ingress's plain-http port (HttpCheck's default port, 80): the weakest
    probe that still catches a dead ingress. A stricter stand-in (an HTTP GET of `/` or of
    `/health`, paths nobody configured) could fail on a service our own check calls healthy,
    and the native checkers act on their own between reconciles: Route53 and Cloud DNS
    would skip the cloud and Traffic Manager degrade it, against our verdict.
    """
    if isinstance(check, TcpCheck):
        return NativeCheck("TCP", check.port, None)
    if isinstance(check, HttpCheck):
        return NativeCheck("HTTPS" if check.scheme == "https" else "HTTP", check.port, check.path)
    return NativeCheck("TCP", HttpCheck.model_validate({}).port, None)


# ------------------------------------------------------------------- the spec


class StrategySpec(BaseModel):
    """The strategy's ranked clouds (primary first) and its modes. Enabled clouds it does
    not rank still serve, after the ranked ones (see `FailoverSpec.plan_input`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    order: tuple[Cloud, ...] = Field(min_length=1)
    replication: Replication = "active-active"
    failover: FailoverMode = "automatic"


class FailoverSpec(BaseModel):
    """One global record: name, endpoints, health check, strategy, routing, backends."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record_name: RecordName
    ttl: Ttl
    endpoints: dict[Cloud, TrafficEndpoint] = Field(min_length=1)
    health_check: HealthCheckConfig
    strategy: StrategySpec
    routing: RoutingConfig = RoutingConfig.model_validate({})
    backends: BackendSettings
    # Route53 health-check ids per cloud, attached to the weighted sets.
    health_check_ids: dict[Cloud, str] = {}
    # Seconds between deploy-time probe rounds; default: min(1 s, the interval).
    probe_round_gap_s: float | None = Field(None, ge=0)

    # ---- building and restoring

    @classmethod
    def from_config(
        cls,
        cfg: StackConfig,
        addresses: Mapping[str, str] | None = None,
        azure_tags: Mapping[str, str] | None = None,
    ) -> FailoverSpec:
        """The stack's global traffic. `addresses` maps every enabled cloud to its ingress
        address; None leaves them `PENDING_ADDRESS` for the resource's `addresses` input."""
        if cfg.dns is None:
            raise ConfigError.one("dns", None, "a dns section: global traffic publishes its record")
        strategy = cfg.strategies.get(cfg.dns.strategy)
        if strategy is None:
            raise ConfigError.one("dns.strategy", cfg.dns.strategy,
                                  f"a key of strategies: {', '.join(sorted(cfg.strategies)) or '(none defined)'}")
        endpoints: dict[str, TrafficEndpoint] = {}
        for cloud in cfg.traffic_clouds:
            ingress = cfg.clouds.get(cloud).ingress
            address = PENDING_ADDRESS if addresses is None else addresses.get(cloud)
            if address is None:
                raise ConfigError.one(f"clouds.{cloud}.ingress.address", None,
                                      f"an address for enabled cloud {cloud!r}")
            # Unchecked here: `build` validates the whole spec, so a bad address is a ConfigError.
            endpoints[cloud] = TrafficEndpoint.model_construct(
                address=address, health_url=ingress.health_url if ingress else None)
        return cls.build(cfg.dns, strategy, cfg.routing, cfg.health_check, endpoints, azure_tags)

    @classmethod
    def build(
        cls,
        dns: DnsConfig,
        strategy: StrategyConfig,
        routing: RoutingConfig,
        health_check: HealthCheckConfig,
        endpoints: Mapping[str, TrafficEndpoint],
        azure_tags: Mapping[str, str] | None = None,
    ) -> FailoverSpec:
        """The spec from the slices of the stack config it is made of: `dns`,
        `strategies[dns.strategy]`, `routing`, `healthCheck`, and one ingress endpoint per
        enabled cloud (the address may be `PENDING_ADDRESS`). `azure_tags` are the tags the
        Traffic Manager profiles carry."""
        backends = dns.backends.model_dump(exclude_none=True)
        if azure_tags is not None and "azure_tm" in backends:
            backends["azure_tm"]["tags"] = dict(azure_tags)
        return cls._checked({
            "record_name": dns.record_name,
            "ttl": dns.ttl,
            "endpoints": {c: ep.model_dump() for c, ep in endpoints.items()},
            "health_check": health_check,
            "strategy": {"order": strategy.order, "replication": strategy.replication,
                         "failover": strategy.failover},
            "routing": routing,
            "backends": backends,
        })

    def to_inputs(self) -> dict[str, Any]:
        """The spec as a resource's inputs: plain, JSON-safe values; unset optionals left out."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_inputs(cls, props: Mapping[str, Any]) -> FailoverSpec:
        """The spec a resource's inputs (or saved outputs) carry; ConfigError names each bad input."""
        spec, problems = cls._parse_inputs(props)
        if problems or spec is None:
            raise ConfigError(problems)
        return spec

    @classmethod
    def input_problems(cls, props: Mapping[str, Any]) -> list[Problem]:
        """Every problem `from_inputs` would raise, for a provider's `check`."""
        return cls._parse_inputs(props)[1]

    @classmethod
    def _parse_inputs(cls, props: Mapping[str, Any]) -> tuple[FailoverSpec | None, list[Problem]]:
        spec, problems = cls._parse({k: props[k] for k in cls.model_fields if props.get(k) is not None})
        if spec is not None and not problems:
            problems = [Problem(f"endpoints.{c}.address", PENDING_ADDRESS,
                                "the cloud's ingress address (the program passes it as `addresses`)", INPUTS)
                        for c, ep in spec.endpoints.items() if ep.address == PENDING_ADDRESS]
        return spec, problems

    @classmethod
    def _checked(cls, data: Mapping[str, Any]) -> FailoverSpec:
        spec, problems = cls._parse(data)
        if problems or spec is None:
            raise ConfigError(problems)
        return spec

    @classmethod
    def _parse(cls, data: Mapping[str, Any]) -> tuple[FailoverSpec | None, list[Problem]]:
        try:
            spec = cls.model_validate(dict(data))
        except ValidationError as exc:
            return None, _problems(exc)
        return spec, spec._cross_problems()

    def _cross_problems(self) -> list[Problem]:
        """What spans the spec's fields: ranked clouds need endpoints; routing must fit the
        strategy (the planner's own rules)."""
        orphans = [c for c in self.strategy.order if c not in self.endpoints]
        if orphans:
            return [Problem("strategy.order", list(self.strategy.order),
                            f"clouds with an endpoint: {', '.join(self.endpoints)}; {orphans} have none", INPUTS)]
        return plan_problems(self.plan_input({}))

    # ---- derived

    @property
    def interval_s(self) -> float:
        return self.health_check.interval_s

    @property
    def timeout_s(self) -> float:
        return self.health_check.timeout_s

    @property
    def round_gap_s(self) -> float:
        gap = self.probe_round_gap_s
        return gap if gap is not None else min(1.0, self.interval_s)

    @property
    def thresholds(self) -> Thresholds:
        hc = self.health_check
        return Thresholds(hc.failure_threshold, hc.success_threshold, hc.recovery_hold_down_s)

    def plan_input(self, health: Mapping[str, bool]) -> PlanInput:
        ranked = self.strategy.order
        # Enabled clouds the strategy does not rank still serve, after the ranked ones.
        order = ranked + tuple(c for c in CLOUDS if c in self.endpoints and c not in ranked)
        return PlanInput(
            strategy=Strategy(order, self.strategy.replication, self.strategy.failover),
            rules=tuple(RegionRule(r.name, tuple(r.regions), r.cloud, r.weight) for r in self.routing.rules),
            default_weight=self.routing.default_weight,
            health=dict(health),
        )

    def probes(self) -> dict[str, Probe]:
        check = self.health_check.check
        out: dict[str, Probe] = {}
        for cloud, ep in self.endpoints.items():
            if isinstance(check, CustomCheck):
                # The command gets the target as its last argument so one command serves all clouds.
                out[cloud] = CustomProbe((*check.command, ep.address))
            elif isinstance(check, TcpCheck):
                out[cloud] = TcpProbe(ep.address, check.port)
            else:
                url = ep.health_url or f"{check.scheme}://{ep.address}:{check.port}{check.path}"
                out[cloud] = HttpProbe(url, check.method, check.expected_status)
        return out

    def health_settings(self) -> HealthSettings:
        native = native_check(self.health_check.check)
        return HealthSettings(native.protocol, native.port, native.path, self.interval_s, self.timeout_s,
                              self.thresholds)

    def record_spec(self) -> RecordSpec:
        return RecordSpec(
            name=self.record_name,
            ttl=self.ttl,
            endpoints={c: ep.address for c, ep in self.endpoints.items()},
            health=self.health_settings(),
            health_check_ids={str(c): i for c, i in self.health_check_ids.items()},
        )


# ------------------------------------------------------------------ problems

_UNION_TAGS = ("http", "tcp", "custom")


def _problems(exc: ValidationError) -> list[Problem]:
    out = []
    for err in exc.errors():
        path = ""
        for i, part in enumerate(err["loc"]):
            if isinstance(part, int):
                path += f"[{part}]"
            elif part == "[key]" or (part in _UNION_TAGS and i and err["loc"][i - 1] == "check"):
                continue  # a bad dict key, or the discriminated union's tag: not keys anybody wrote
            else:
                path += ("." if path else "") + str(part)
        value = None if err["type"] == "missing" else err.get("input")
        out.append(Problem(path, value, _allowed(err), INPUTS))
    return out


def _allowed(err: Mapping[str, Any]) -> str:
    ctx = err.get("ctx") or {}
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required"
    if err["type"] == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}"
    if err["type"] == "literal_error":
        return f"one of {ctx.get('expected')}"
    return str(err["msg"]).removeprefix("Value error, ")

