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

An address is an IP or a DNS name (an AWS load balancer reports only a hostname). A name
stays a name in the spec; `targets` resolves it on every probe round and every apply, and
the probes and the A answers use the addresses it resolves to (README "Hostname ingress").

Engine-free: never imports pulumi.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgefabric.config.models import (
    CustomCheck,
    DnsConfig,
    DnsRecord,
    HealthCheckConfig,
    HttpCheck,
    RoutingConfig,
    StackConfig,
    StrategyConfig,
    TcpCheck,
    TrafficEndpoint,
    is_ip_address,
)
from edgefabric.config.vocab import CLOUDS, Cloud
from edgefabric.errors import ConfigError, Problem
from edgefabric.secrets import resolve
from edgefabric.traffic.dns import BackendSettings
from edgefabric.traffic.dns.base import HealthSettings, RecordSpec
from edgefabric.traffic.dns.resolver import RESOLVER_PATTERN, resolve_a, resolver_address
from edgefabric.traffic.health import (  # noqa: F401 - DOES_NOT_RESOLVE: re-exported
    DOES_NOT_RESOLVE,
    AllOf,
    CustomProbe,
    HttpProbe,
    Probe,
    SingleProbe,
    TcpProbe,
    Thresholds,
    Unresolved,
)
from edgefabric.traffic.planner import (
    FailoverAction,
    FailoverMode,
    LoadBalancing,
    Performance,
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


# ---------------------------------------------------------- endpoints and targets

def is_name(address: str) -> bool:
    """True for a DNS name (an AWS load balancer's hostname), False for an IP literal: the
    one rule the tier (Route53 `fqdn` or `ipAddress`), the probes and the backends share."""
    return not is_ip_address(address)


@dataclass(frozen=True)
class Target:
    """One cloud's endpoint as one probe round (or one apply) sees it: the address as
    configured, and the addresses it answers at. An IP answers at itself; a DNS name at
    the A records it resolved to, sorted; () when it did not resolve."""

    cloud: str
    address: str
    addresses: tuple[str, ...]

    @property
    def name(self) -> str | None:
        return self.address if is_name(self.address) else None


# ------------------------------------------------------------- native checkers


@dataclass(frozen=True)
class NativeCheck:
    """How a cloud's own checker probes an endpoint: Route53 HealthCheck, GCP compute
    HealthCheck and the Traffic Manager monitor all take exactly this, one check."""

    protocol: Literal["HTTP", "HTTPS", "TCP"]
    port: int
    path: str | None  # None for TCP
    # The checks the native checkers do not run, and what they do instead: said in the
    # preview (`pulumi.log.warn` in the traffic tier), never silently another path.
    notes: tuple[str, ...] = field(default=(), compare=False)


def describe_check(check: HttpCheck | TcpCheck | CustomCheck) -> str:
    """A check in a few words: `https GET :443/healthz`, `tcp :8443`, `custom /bin/ok`."""
    if isinstance(check, HttpCheck):
        return f"{check.scheme} {check.method} :{check.port}{check.path}"
    if isinstance(check, TcpCheck):
        return f"tcp :{check.port}"
    return "custom " + shlex.join(check.command)


def native_check(checks: HealthCheckConfig | HttpCheck | TcpCheck | CustomCheck) -> NativeCheck:
    """The one mapping from our health checks to the clouds' native checkers.

    They take one check: the first `http`/`tcp` one of `healthCheck.checks` (or the single
    `check`). The others are ours only, and `notes` names each with what the checkers run.

    A `custom` check is a command only our probes can run. When the list has nothing else,
    the native stand-in is a TCP connect to the ingress's plain-http port (HttpCheck's
    default port, 80): the weakest probe that still catches a dead ingress. A stricter
    stand-in (an HTTP GET of `/` or of `/health`, paths nobody configured) could fail on a
    service our own check calls healthy, and the native checkers act on their own between
    reconciles: Route53 and Cloud DNS would skip the cloud and Traffic Manager degrade it,
    against our verdict.
    """
    hc = checks if isinstance(checks, HealthCheckConfig) else HealthCheckConfig(check=checks)
    items = hc.all_checks
    chosen = next((i for i, c in enumerate(items) if not isinstance(c, CustomCheck)), None)
    if chosen is None:
        port = HttpCheck.model_validate({}).port
        notes = tuple(f"{hc.check_path(i)} ({describe_check(c)}) cannot run in the clouds' native checkers "
                      f"(Route53, Traffic Manager, Cloud DNS); they connect over TCP to port {port} instead"
                      for i, c in enumerate(items))
        return NativeCheck("TCP", port, None, notes)
    check = items[chosen]
    notes = tuple(f"{hc.check_path(i)} ({describe_check(c)}) is not run by the clouds' native checkers "
                  f"(Route53, Traffic Manager, Cloud DNS), which take one check; they run only "
                  f"{hc.check_path(chosen)} ({describe_check(check)})"
                  for i, c in enumerate(items) if i != chosen)
    if isinstance(check, TcpCheck):
        return NativeCheck("TCP", check.port, None, notes)
    assert isinstance(check, HttpCheck)
    return NativeCheck("HTTPS" if check.scheme == "https" else "HTTP", check.port, check.path, notes)


# ------------------------------------------------------------------- the spec


class StrategySpec(BaseModel):
    """The strategy's ranked clouds (primary first) and its modes. Enabled clouds it does
    not rank still serve, after the ranked ones (see `FailoverSpec.plan_input`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    order: tuple[Cloud, ...] = Field(min_length=1)
    replication: Replication = "active-active"
    failover: FailoverMode = "automatic"
    load_balancing: LoadBalancing = "weighted"
    # `failover.action`: where a failed cloud's share goes (see the planner). Unset (inputs
    # saved before it existed), it is what those resources always did.
    action: FailoverAction = "route-to-healthy"
    latency_smoothing: Annotated[(float, *StrategyConfig.model_fields["latency_smoothing"].metadata)] = 0.3
    weight_band_pct: Annotated[(float, *StrategyConfig.model_fields["weight_band_pct"].metadata)] = 5.0


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
    # Where DNS-name endpoints are resolved (`host[:port]`); default: `EDGEFABRIC_RESOLVER`,
    # else the system's resolver. Tests point it at the local PowerDNS.
    resolver: str | None = Field(None, pattern=RESOLVER_PATTERN)

    # ---- building and restoring

    @classmethod
    def all_from_config(
        cls,
        cfg: StackConfig,
        addresses: Mapping[str, str] | None = None,
        azure_tags: Mapping[str, str] | None = None,
    ) -> list[FailoverSpec]:
        """One spec per published name (`dns.records`, or the one `dns.recordName`)."""
        if cfg.dns is None:
            raise ConfigError.one("dns", None, "a dns section: global traffic publishes its record")
        records = cfg.dns.all_records
        if not records:
            raise ConfigError.one("dns.recordName", None, "a name (FQDN with trailing dot), or a list in dns.records")
        return [cls.from_config(cfg, addresses, azure_tags, record) for record in records]

    @classmethod
    def from_config(
        cls,
        cfg: StackConfig,
        addresses: Mapping[str, str] | None = None,
        azure_tags: Mapping[str, str] | None = None,
        record: DnsRecord | None = None,
    ) -> FailoverSpec:
        """The stack's global traffic for `record` (default: the first published name).
        `addresses` maps every enabled cloud to its ingress address; None leaves them
        `PENDING_ADDRESS` for the resource's `addresses` input."""
        if cfg.dns is None:
            raise ConfigError.one("dns", None, "a dns section: global traffic publishes its record")
        if record is None:
            records = cfg.dns.all_records
            if not records:
                raise ConfigError.one("dns.recordName", None,
                                      "a name (FQDN with trailing dot), or a list in dns.records")
            record = records[0]
        strategy = cfg.strategies.get(record.strategy)
        if strategy is None:
            others = [r.name for r in cfg.dns.records or []]
            where = ("dns.strategy" if record.name not in others
                     else f"dns.records[{others.index(record.name)}].strategy")
            raise ConfigError.one(where, record.strategy,
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
        return cls.build(cfg.dns, strategy, cfg.routing, cfg.health_check, endpoints, azure_tags,
                         record_name=record.name, action=cfg.failover.action)

    @classmethod
    def build(
        cls,
        dns: DnsConfig,
        strategy: StrategyConfig,
        routing: RoutingConfig,
        health_check: HealthCheckConfig,
        endpoints: Mapping[str, TrafficEndpoint],
        azure_tags: Mapping[str, str] | None = None,
        record_name: str | None = None,
        action: FailoverAction = "route-to-secondary",
    ) -> FailoverSpec:
        """The spec from the slices of the stack config it is made of: `dns`, the record's
        strategy, `routing`, `healthCheck`, `failover.action`, and one ingress endpoint per
        enabled cloud (the address may be `PENDING_ADDRESS`). `record_name` defaults to
        `dns.recordName`. `azure_tags` are the tags the Traffic Manager profiles carry.

        Each name of `dns.records` has Traffic Manager profiles of its own,
        `<profileName>-<first label>` (relative name likewise), so two names never share one;
        `dns.recordName` keeps `profileName`. With `dns.authority` set, every other zone
        backend is a secondary: it publishes `<first label>.<its zone>` (`secondary_zone`)."""
        name = record_name if record_name is not None else dns.record_name
        backends = dns.backends.model_dump(exclude_none=True)
        if azure_tags is not None and "azure_tm" in backends:
            backends["azure_tm"]["tags"] = dict(azure_tags)
        authority = dns.authority_backend  # None: several zone backends, none named (outside a stack)
        for other, zone in dns.zones.items():
            if authority is not None and other != authority:
                backends[other]["secondary_zone"] = zone  # publishes `<first label>.<zone>`
        if "azure_tm" in backends and name and name != dns.record_name:
            label = name.split(".", 1)[0]
            backends["azure_tm"]["profile_name"] += f"-{label}"
            backends["azure_tm"]["relative_dns_name"] += f"-{label}"
        return cls._checked({
            "record_name": name,
            "ttl": dns.ttl,
            "endpoints": {c: ep.model_dump() for c, ep in endpoints.items()},
            "health_check": health_check,
            "strategy": {"order": strategy.order, "replication": strategy.replication,
                         "failover": strategy.failover, "load_balancing": strategy.load_balancing,
                         "action": action, "latency_smoothing": strategy.latency_smoothing,
                         "weight_band_pct": strategy.weight_band_pct},
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

    def plan_input(
        self,
        health: Mapping[str, bool],
        latency_s: Mapping[str, float] | None = None,
        held: Mapping[str, float] | None = None,
    ) -> PlanInput:
        """The planner's input: `health` per cloud; for performance-based balancing, the
        smoothed latency per cloud and the shares published last (`Plan.base_shares`)."""
        s = self.strategy
        ranked = s.order
        # Enabled clouds the strategy does not rank still serve, after the ranked ones.
        order = ranked + tuple(c for c in CLOUDS if c in self.endpoints and c not in ranked)
        return PlanInput(
            strategy=Strategy(order, s.replication, s.failover, s.load_balancing, s.action),
            rules=tuple(RegionRule(r.name, tuple(r.regions), r.cloud, r.weight) for r in self.routing.rules),
            default_weight=self.routing.default_weight,
            health=dict(health),
            performance=Performance(dict(latency_s or {}), dict(held) if held is not None else None,
                                    s.weight_band_pct),
        )

    def probes(self, lookup: Callable[[str], str | None] | None = None) -> dict[str, Probe]:
        """One probe per cloud: its checks, each against the cloud's ingress address, or,
        for a DNS name, against every address it resolves to this round (`targets`); a name
        that does not resolve fails the round ("<name> does not resolve").

        http/https ask for the record's name (Host and TLS SNI: `record_name` without the
        dot, or the check's `hostHeader`) while connecting to the address; an ingress
        `health_url` is requested as written. A `caBundleRef` is resolved here (`lookup`
        answers `config:` references; see `edgefabric.secrets.resolve`), so a reference that
        points at nothing is a ConfigError naming it, not every cloud down."""
        hc = self.health_check
        checks = hc.all_checks
        ca = {i: _ca_bundle(c.ca_bundle_ref, f"{hc.check_path(i)}.caBundleRef", lookup)
              for i, c in enumerate(checks) if isinstance(c, HttpCheck) and c.ca_bundle_ref}
        record = self.record_name.rstrip(".")
        out: dict[str, Probe] = {}
        targets = self.targets()
        for cloud, ep in self.endpoints.items():
            target = targets[cloud]
            if not target.addresses:
                out[cloud] = Unresolved(target.address)  # down this round, never skipped
                continue
            # A DNS name is probed at every address it resolved to: each gets an equal share of
            # the cloud's traffic, so the cloud passes a round only when all of them pass.
            singles: list[SingleProbe] = []
            labels: list[str] = []
            for n, address in enumerate(target.addresses):
                for i, check in enumerate(checks):
                    if isinstance(check, CustomCheck):
                        # The command gets the target as its last argument so one command serves all clouds.
                        singles.append(CustomProbe((*check.command, address), check.timeout_s))
                    elif isinstance(check, TcpCheck):
                        singles.append(TcpProbe(address, check.port, check.timeout_s))
                    elif ep.health_url:
                        if n:
                            continue  # requested as written: once, whatever the name resolves to
                        singles.append(HttpProbe(ep.health_url, check.method, check.expected_status,
                                                 check.host_header, ca.get(i), check.timeout_s))
                    else:
                        host = f"[{address}]" if ":" in address else address
                        singles.append(HttpProbe(f"{check.scheme}://{host}:{check.port}{check.path}", check.method,
                                                 check.expected_status, check.host_header or record, ca.get(i),
                                                 check.timeout_s))
                    labels.append(hc.check_path(i) if len(target.addresses) == 1
                                  else f"{hc.check_path(i)} at {address}")
            out[cloud] = singles[0] if len(singles) == 1 else AllOf(tuple(singles), tuple(labels))
        return out

    def targets(self) -> dict[str, Target]:
        """Each cloud's endpoint with the addresses it answers at now: an IP as is, a DNS name
        resolved with dnspython (`resolver`, else `EDGEFABRIC_RESOLVER`, else the system's),
        each name within the health check's timeout. Called on every probe round and at
        every apply, so a load balancer that moves is followed."""
        server = resolver_address(self.resolver)
        return {cloud: Target(cloud, ep.address,
                              resolve_a(ep.address, server, self.timeout_s) if ep.is_name else (ep.address,))
                for cloud, ep in self.endpoints.items()}

    def health_settings(self) -> HealthSettings:
        native = native_check(self.health_check)
        return HealthSettings(native.protocol, native.port, native.path, self.interval_s, self.timeout_s,
                              self.thresholds)

    def record_spec(self, resolve_names: bool = True) -> RecordSpec:
        """What the backends publish: each cloud's endpoint and, for a DNS name, the
        addresses it resolves to now (`targets`). `resolve_names=False` skips resolving, for
        callers that need no addresses (delete)."""
        names = [c for c, ep in self.endpoints.items() if ep.is_name]
        addresses = ({str(c): t.addresses for c, t in self.targets().items() if c in names}
                     if names and resolve_names else {})
        return RecordSpec(
            name=self.record_name,
            ttl=self.ttl,
            endpoints={c: ep.address for c, ep in self.endpoints.items()},
            health=self.health_settings(),
            health_check_ids={str(c): i for c, i in self.health_check_ids.items()},
            addresses=addresses,
        )


# ------------------------------------------------------------------ problems

_UNION_TAGS = ("http", "tcp", "custom")


def _union_tag(loc: tuple[Any, ...], i: int) -> bool:
    """`loc[i]` is a check union's tag: after `check`, or after an index of `checks`."""
    if loc[i] not in _UNION_TAGS or not i:
        return False
    return loc[i - 1] == "check" or (isinstance(loc[i - 1], int) and i > 1 and loc[i - 2] == "checks")


def _ca_bundle(ref: str, where: str, lookup: Callable[[str], str | None] | None) -> str:
    """The PEM bundle a `caBundleRef` points at; ConfigError naming `where` (never the value)."""
    pem = str(resolve(ref, where, lookup))
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ConfigError.one(where, ref, "a reference to a PEM bundle of CA certificates "
                                          "(-----BEGIN CERTIFICATE----- ...)")
    return pem


def _problems(exc: ValidationError) -> list[Problem]:
    out = []
    for err in exc.errors():
        path = ""
        for i, part in enumerate(err["loc"]):
            if isinstance(part, int):
                path += f"[{part}]"
            elif part == "[key]" or _union_tag(err["loc"], i):
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

