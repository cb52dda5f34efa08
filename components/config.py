"""The typed stack configuration of edgefabric.

Every key under the `edgefabric:` namespace of a stack file is parsed here, once, into
frozen pydantic models, and checked against the cross-field rules before any resource is
registered. Everything downstream receives these objects, never raw dicts.

Errors a user can cause are raised as `ConfigError`. Each problem names the key path
(`edgefabric:edge.sites[2].services[0].requirements.memoryMb`), the bad value, and what
is allowed.

This module is engine-free on purpose: `load_stack_file` reads a `Pulumi.<stack>.yaml`
directly so that the failover controller, `make render` and `make promote-check` share
the exact same models as `pulumi up`. Only `from_pulumi()` touches the Pulumi SDK.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from providers.dns.regions import CONTINENT

NAMESPACE = "edgefabric"

Cloud = Literal["aws", "azure", "gcp"]
CLOUDS: tuple[Cloud, ...] = ("aws", "azure", "gcp")

# User regions for routing rules, and the continent code each maps to (the codes Route53
# geolocation understands). The DNS backends own the mapping; config only validates names.
USER_REGIONS: dict[str, str] = CONTINENT

_DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
DnsLabel = Annotated[str, Field(pattern=_DNS_LABEL)]
# A reference to a secret, never the secret itself: `env:NAME` is read from the process
# environment where it is used; `config:KEY` is the Pulumi secret `edgefabric:KEY`.
SecretRef = Annotated[str, Field(pattern=r"^(env:[A-Za-z_][A-Za-z0-9_]*|config:[A-Za-z][A-Za-z0-9_.-]*)$")]
# Kubernetes quantities: cpu "250m" / "0.5" / "2", memory "256Mi" / "1Gi" / "512M".
CpuQuantity = Annotated[str, Field(pattern=r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$")]
MemQuantity = Annotated[str, Field(pattern=r"^[0-9]+(Ki|Mi|Gi|Ti|K|M|G|T)?$")]


class ConfigError(ValueError):
    """Bad stack configuration. `problems` holds one line per problem, each naming the key."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            "invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in self.problems)
        )


class _Model(BaseModel):
    # camelCase keys in YAML, snake_case in Python; unknown keys are typos, so reject them.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


def _check_image(value: str) -> str:
    """Images must be pinned: a tag or digest, and never `:latest`."""
    name, _, digest = value.partition("@")
    if digest:
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise ValueError("digest must be sha256:<64 hex>")
        return value
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        raise ValueError("image must carry an explicit tag, e.g. 'redis:7.4.1'")
    if last.endswith(":latest"):
        raise ValueError("':latest' is not allowed; pin a version tag")
    return value


def _check_url(value: str, schemes: tuple[str, ...]) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in schemes or not parsed.hostname:
        raise ValueError(f"must be a URL with scheme {' or '.join(schemes)} and a host")
    try:
        parsed.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise ValueError(f"malformed port: {exc}") from None
    return value


def cpu_cores(quantity: str) -> float:
    """Kubernetes cpu quantity to cores: '250m' -> 0.25, '2' -> 2.0."""
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def memory_mb(quantity: str) -> float:
    """Kubernetes memory quantity to MiB: '256Mi' -> 256, '1Gi' -> 1024."""
    mib = 1024**2
    units = {"Ki": 1024 / mib, "Mi": 1.0, "Gi": 1024.0, "Ti": 1024.0**2,
             "K": 1e3 / mib, "M": 1e6 / mib, "G": 1e9 / mib, "T": 1e12 / mib}
    match = re.fullmatch(r"([0-9]+)([KMGT]i?)?", quantity)
    if not match:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    number, unit = match.groups()
    return int(number) / 1024**2 if unit is None else int(number) * units[unit]


# ---------------------------------------------------------------------------- clouds


class AwsCloud(_Model):
    enabled: bool = False
    region: str = Field("us-east-1", pattern=r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$")
    # Assumed by the explicit provider; credentials themselves come from the environment
    # (OIDC in CI, a profile on a laptop), never from config.
    role_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$")
    ingress: TrafficEndpoint | None = None


class AzureCloud(_Model):
    enabled: bool = False
    location: str = Field("westeurope", pattern=r"^[a-z0-9]+$")
    subscription_id_ref: SecretRef = "env:ARM_SUBSCRIPTION_ID"
    ingress: TrafficEndpoint | None = None


class GcpCloud(_Model):
    enabled: bool = False
    project: str = Field("edgefabric", pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
    region: str = Field("asia-southeast1", pattern=r"^[a-z]+-[a-z]+[0-9]$")
    ingress: TrafficEndpoint | None = None


class TrafficEndpoint(_Model):
    """An existing ingress for a cloud. When set, that cloud's core is not provisioned and
    this address answers for it (the local stack's stand-ins, or a cluster you bring)."""

    address: str
    health_url: str | None = None

    @field_validator("address")
    @classmethod
    def _ip(cls, value: str) -> str:
        ipaddress.ip_address(value)  # ValueError names the literal
        return value

    @field_validator("health_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value, ("http", "https"))


class Clouds(_Model):
    aws: AwsCloud = AwsCloud()
    azure: AzureCloud = AzureCloud()
    gcp: GcpCloud = GcpCloud()

    def get(self, cloud: Cloud) -> AwsCloud | AzureCloud | GcpCloud:
        return getattr(self, cloud)

    @property
    def enabled(self) -> list[Cloud]:
        return [c for c in CLOUDS if self.get(c).enabled]

    @property
    def provisioned(self) -> list[Cloud]:
        """Enabled clouds whose core cluster this stack creates."""
        return [c for c in self.enabled if self.get(c).ingress is None]


# -------------------------------------------------------------------------- services


class Port(_Model):
    name: DnsLabel
    port: int = Field(ge=1, le=65535)
    protocol: Literal["http", "http2", "grpc", "websocket", "tcp", "mqtt"] = "http"


class Autoscale(_Model):
    min_replicas: int = Field(ge=1)
    max_replicas: int = Field(ge=1, le=1000)
    cpu_percent: int = Field(70, ge=10, le=100)


class Workload(_Model):
    """A containerised service: what every tier deploys."""

    name: DnsLabel
    image: str
    replicas: int = Field(1, ge=1, le=1000)
    cpu: CpuQuantity = "250m"
    memory: MemQuantity = "256Mi"
    # Limits default to twice the request: headroom for bursts without starving neighbours.
    cpu_limit: CpuQuantity | None = None
    memory_limit: MemQuantity | None = None
    ports: list[Port] = Field(min_length=1)
    health_path: str = Field("/healthz", pattern=r"^/")
    env: dict[str, str] = {}

    @field_validator("image")
    @classmethod
    def _pinned(cls, value: str) -> str:
        return _check_image(value)


class CoreService(Workload):
    kind: Literal["api-gateway", "data-analytics", "user-management", "business-logic"]
    autoscale: Autoscale | None = None
    # OAuth2 issuer for user management; other kinds ignore it.
    oauth2_issuer: str | None = None


class ClusterSize(_Model):
    node_count: int = Field(3, ge=1, le=1000)
    min_nodes: int = Field(1, ge=1, le=1000)
    max_nodes: int = Field(10, ge=1, le=1000)
    machine_type: str = Field(min_length=1)
    kubernetes_version: str = Field("1.31", pattern=r"^1\.[0-9]{2}$")
    # Who may reach the API server. Empty means private endpoint only.
    api_allowed_cidrs: list[str] = []

    @field_validator("api_allowed_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr)
        return value


class CoreConfig(_Model):
    clusters: dict[Cloud, ClusterSize] = {}
    services: list[CoreService] = []


class RegionalService(Workload):
    kind: Literal["regional-gateway", "content-cache", "local-analytics", "device-management"]


class Region(_Model):
    name: DnsLabel
    cloud: Cloud
    location: str = Field(min_length=1)
    services: list[RegionalService] = Field(min_length=1)


class Requirements(_Model):
    cpu: float = Field(gt=0, le=1024, description="cores")
    memory_mb: int = Field(gt=0, le=16 * 1024 * 1024)
    storage_mb: int = Field(0, ge=0, le=1024 * 1024 * 1024)


class Capabilities(_Model):
    cpu: float = Field(gt=0, le=1024)
    memory_mb: int = Field(gt=0)
    storage_mb: int = Field(ge=0)
    runtime: Literal["kubernetes", "docker", "native"] = "kubernetes"


class EdgeService(_Model):
    name: DnsLabel
    kind: Literal["edge-gateway", "realtime-processing", "local-cache", "sensor-ingest"]
    image: str
    replicas: int = Field(1, ge=1, le=100)
    requirements: Requirements
    ports: list[Port] = Field(min_length=1)
    health_path: str = Field("/healthz", pattern=r"^/")
    # For the native runtime: the command the systemd unit runs.
    exec_start: str | None = None

    @field_validator("image")
    @classmethod
    def _pinned(cls, value: str) -> str:
        return _check_image(value)


class EdgeSite(_Model):
    name: DnsLabel
    location: str = Field(min_length=1)
    capabilities: Capabilities
    # kubernetes runtime: the kubeconfig, as a secret reference.
    kubeconfig_ref: SecretRef | None = None
    # docker runtime: ssh://user@host or tcp://host:2376; native runtime: ssh://user@host[:port].
    host: str | None = None
    ssh_key_ref: SecretRef | None = None
    services: list[EdgeService] = Field(min_length=1)


class EdgeConfig(_Model):
    sites: list[EdgeSite] = []
    node_selector: dict[str, str] = {"node-role.edgefabric.io/edge": "true"}
    toleration_key: str = "edgefabric.io/edge"


# ------------------------------------------------------------------ traffic & health


class StrategyConfig(_Model):
    primary: Cloud
    secondary: Cloud | None = None
    tertiary: Cloud | None = None
    replication: Literal["active-active", "active-passive"] = "active-active"
    load_balancing: Literal["round-robin", "weighted", "performance-based"] = "weighted"
    failover: Literal["automatic", "manual"] = "automatic"

    @property
    def order(self) -> list[Cloud]:
        return [c for c in (self.primary, self.secondary, self.tertiary) if c is not None]


class RoutingRule(_Model):
    name: DnsLabel
    regions: list[str] = Field(min_length=1)
    cloud: Cloud
    weight: int = Field(ge=1, le=100)

    @field_validator("regions")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for region in value:
            if region not in USER_REGIONS:
                raise ValueError(f"unknown user region {region!r}; allowed: {', '.join(USER_REGIONS)}")
        return value


class RoutingConfig(_Model):
    rules: list[RoutingRule] = []
    # The default answer (users outside every rule): the strategy's primary gets this weight.
    default_weight: int = Field(100, ge=1, le=100)


class HttpCheck(_Model):
    type: Literal["http"] = "http"
    path: str = Field("/health", pattern=r"^/")
    expected_status: int = Field(200, ge=100, le=599)
    method: Literal["GET", "HEAD"] = "GET"
    port: int = Field(80, ge=1, le=65535)
    scheme: Literal["http", "https"] = "http"


class TcpCheck(_Model):
    type: Literal["tcp"]
    port: int = Field(ge=1, le=65535)


class CustomCheck(_Model):
    type: Literal["custom"]
    command: list[str] = Field(min_length=1)


class HealthCheckConfig(_Model):
    interval_s: float = Field(30, gt=0, le=3600)
    timeout_s: float = Field(5, gt=0, le=600)
    failure_threshold: int = Field(3, ge=1, le=100)
    success_threshold: int = Field(2, ge=1, le=100)
    recovery_hold_down_s: float = Field(300, ge=0, le=86400)
    check: Annotated[Union[HttpCheck, TcpCheck, CustomCheck], Field(discriminator="type")] = HttpCheck()


class SlackNotification(_Model):
    type: Literal["slack"]
    url_ref: SecretRef


class PagerDutyNotification(_Model):
    type: Literal["pagerduty"]
    routing_key_ref: SecretRef
    events_url: str = "https://events.pagerduty.com/v2/enqueue"

    @field_validator("events_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value, ("http", "https"))


class EmailNotification(_Model):
    type: Literal["email"]
    smtp_host: str = Field(min_length=1)
    smtp_port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    username: str | None = None
    password_ref: SecretRef | None = None
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    recipients: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(min_length=1)


Notification = Annotated[
    Union[SlackNotification, PagerDutyNotification, EmailNotification], Field(discriminator="type")
]


class FailoverConfig(_Model):
    """How failover acts. The trigger is `healthCheck.failureThreshold` consecutive failures;
    recovery waits `healthCheck.successThreshold` successes and the hold-down."""

    action: Literal["route-to-secondary", "route-to-healthy"] = "route-to-secondary"
    notifications: list[Notification] = []


class PowerDnsBackend(_Model):
    api_url: str
    api_key_ref: SecretRef
    server_id: str = "localhost"
    zone: str = Field(pattern=r"^([a-z0-9-]+\.)+$")

    @field_validator("api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value, ("http", "https"))


class Route53Backend(_Model):
    zone_name: str = Field(pattern=r"^([a-z0-9-]+\.)+$")
    hosted_zone_id: str | None = Field(None, pattern=r"^Z[A-Z0-9]{1,32}$")
    health_check_ids: bool = True


class AzureTmBackend(_Model):
    subscription_id_ref: SecretRef = "env:ARM_SUBSCRIPTION_ID"
    resource_group: str = Field(pattern=r"^[-\w._()]{1,90}$")
    profile_name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,61}$")
    relative_dns_name: str = Field(pattern=_DNS_LABEL)


class GcpDnsBackend(_Model):
    project: str = Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
    managed_zone: str = Field(pattern=_DNS_LABEL)


class DnsBackends(_Model):
    route53: Route53Backend | None = None
    azure_tm: AzureTmBackend | None = None
    gcp_dns: GcpDnsBackend | None = None
    powerdns: PowerDnsBackend | None = None

    @property
    def names(self) -> list[str]:
        return [n for n in ("route53", "azure_tm", "gcp_dns", "powerdns") if getattr(self, n)]


class DnsConfig(_Model):
    record_name: str = Field(pattern=r"^([a-z0-9-]+\.)+$", description="FQDN with trailing dot")
    ttl: int = Field(30, ge=1, le=86400)
    # Which core service's strategy the global record follows.
    strategy: DnsLabel = "api-gateway"
    backends: DnsBackends


class RegistryConfig(_Model):
    enabled: bool = True
    rpc_url: str
    chain_id: int = Field(gt=0)
    deployer_key_ref: SecretRef = "env:EDGEFABRIC_DEPLOYER_KEY"
    contract_address: str | None = Field(None, pattern=r"^(0x[0-9a-fA-F]{40})?$")
    service_ttl_s: int = Field(300, ge=10, le=30 * 86400)
    heartbeat_interval_s: int = Field(100, ge=1, le=30 * 86400)
    agent_image: str = "ghcr.io/edgefabric/heartbeat-agent:0.1.0"

    @field_validator("rpc_url")
    @classmethod
    def _url(cls, value: str) -> str:
        # web3 8 has no synchronous websocket provider, so ws(s):// would fail at deploy time.
        return _check_url(value, ("http", "https"))

    @field_validator("agent_image")
    @classmethod
    def _pinned(cls, value: str) -> str:
        return _check_image(value)


# ----------------------------------------------------------------------- the stack


class StackConfig(_Model):
    environment: DnsLabel
    tags: dict[str, str] = {}
    clouds: Clouds = Clouds()
    core: CoreConfig = CoreConfig()
    regions: list[Region] = []
    edge: EdgeConfig = EdgeConfig()
    strategies: dict[DnsLabel, StrategyConfig] = {}
    routing: RoutingConfig = RoutingConfig()
    health_check: HealthCheckConfig = HealthCheckConfig()
    failover: FailoverConfig = FailoverConfig()
    registry: RegistryConfig | None = None
    dns: DnsConfig | None = None

    @property
    def traffic_clouds(self) -> list[Cloud]:
        """Clouds that answer the global name: every enabled one."""
        return self.clouds.enabled


# Top-level keys, in stack-file spelling. `Pulumi.yaml` declares exactly these.
TOP_LEVEL_KEYS: tuple[str, ...] = tuple(
    f.alias or name for name, f in StackConfig.model_fields.items()
)


# ------------------------------------------------------------------------ semantics


@dataclass(frozen=True)
class Problem:
    path: str
    value: Any
    allowed: str

    def __str__(self) -> str:
        return f"{NAMESPACE}:{self.path} = {_show(self.value)}: {self.allowed}"


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # show 30, as the user wrote it, not 30.0
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _dupes(items: Iterable[str]) -> list[tuple[int, str]]:
    seen: set[str] = set()
    out = []
    for i, item in enumerate(items):
        if item in seen:
            out.append((i, item))
        seen.add(item)
    return out


def placement_problems(site: EdgeSite, path: str) -> list[Problem]:
    """The seed's capability check: every service, and all of them together (times their
    replicas), must fit the site's declared node capabilities."""
    problems: list[Problem] = []
    caps = site.capabilities
    used = {"cpu": 0.0, "memoryMb": 0.0, "storageMb": 0.0}
    limits = {"cpu": caps.cpu, "memoryMb": caps.memory_mb, "storageMb": caps.storage_mb}
    for j, svc in enumerate(site.services):
        req = {"cpu": svc.requirements.cpu, "memoryMb": svc.requirements.memory_mb,
               "storageMb": svc.requirements.storage_mb}
        for key, amount in req.items():
            total = amount * svc.replicas
            where = f"{path}.services[{j}].requirements.{key}"
            if total > limits[key] - used[key] + 1e-9:
                free = limits[key] - used[key]
                problems.append(Problem(
                    where, amount,
                    f"service {svc.name!r} ({svc.replicas} replica(s)) needs {total:g} but site "
                    f"{site.name!r} has {free:g} of {limits[key]:g} {key} left; allowed: <= "
                    f"{max(free, 0) / svc.replicas:g} per replica",
                ))
            used[key] += total
    return problems


def semantic_problems(cfg: StackConfig) -> list[Problem]:
    """Cross-field rules that types alone cannot express. Pure; returns every problem."""
    p: list[Problem] = []
    enabled = cfg.clouds.enabled
    provisioned = cfg.clouds.provisioned
    enabled_text = f"an enabled cloud: {', '.join(enabled) or '(none enabled)'}"

    for cloud in provisioned:
        if cloud not in cfg.core.clusters:
            p.append(Problem(f"core.clusters.{cloud}", None,
                             f"cloud {cloud!r} is enabled without an ingress, so it needs a cluster size"))
    for cloud, size in cfg.core.clusters.items():
        if size.min_nodes > size.max_nodes:
            p.append(Problem(f"core.clusters.{cloud}.minNodes", size.min_nodes,
                             f"must be <= maxNodes ({size.max_nodes})"))
        if not size.min_nodes <= size.node_count <= size.max_nodes:
            p.append(Problem(f"core.clusters.{cloud}.nodeCount", size.node_count,
                             f"must be within minNodes..maxNodes ({size.min_nodes}..{size.max_nodes})"))
    for i, name in _dupes(s.name for s in cfg.core.services):
        p.append(Problem(f"core.services[{i}].name", name, "core service names must be unique"))
    for i, svc in enumerate(cfg.core.services):
        p += _workload_problems(svc, f"core.services[{i}]")
        if svc.autoscale and svc.autoscale.min_replicas > svc.autoscale.max_replicas:
            p.append(Problem(f"core.services[{i}].autoscale.minReplicas", svc.autoscale.min_replicas,
                             f"must be <= maxReplicas ({svc.autoscale.max_replicas})"))
        if svc.oauth2_issuer is not None:
            try:
                _check_url(svc.oauth2_issuer, ("https",))
            except ValueError as exc:
                p.append(Problem(f"core.services[{i}].oauth2Issuer", svc.oauth2_issuer, str(exc)))

    for i, name in _dupes(r.name for r in cfg.regions):
        p.append(Problem(f"regions[{i}].name", name, "region names must be unique"))
    for i, region in enumerate(cfg.regions):
        if region.cloud not in provisioned:
            p.append(Problem(f"regions[{i}].cloud", region.cloud,
                             f"a cloud whose core cluster this stack provisions: {', '.join(provisioned) or '(none)'}"))
        for j, name in _dupes(s.name for s in region.services):
            p.append(Problem(f"regions[{i}].services[{j}].name", name, "service names must be unique per region"))
        for j, svc in enumerate(region.services):
            p += _workload_problems(svc, f"regions[{i}].services[{j}]")

    for i, name in _dupes(s.name for s in cfg.edge.sites):
        p.append(Problem(f"edge.sites[{i}].name", name, "edge site names must be unique"))
    for i, site in enumerate(cfg.edge.sites):
        path = f"edge.sites[{i}]"
        for j, name in _dupes(s.name for s in site.services):
            p.append(Problem(f"{path}.services[{j}].name", name, "service names must be unique per site"))
        p += placement_problems(site, path)
        p += _site_access_problems(site, path)

    core_names = {s.name for s in cfg.core.services}
    for name, strat in cfg.strategies.items():
        path = f"strategies.{name}"
        if core_names and name not in core_names:
            p.append(Problem(path, name, f"a core service name: {', '.join(sorted(core_names))}"))
        for role in ("primary", "secondary", "tertiary"):
            cloud = getattr(strat, role)
            if cloud is not None and cloud not in enabled:
                p.append(Problem(f"{path}.{role}", cloud, enabled_text))
        order = strat.order
        if len(set(order)) != len(order):
            p.append(Problem(f"{path}", order, "primary, secondary and tertiary must be different clouds"))
        if strat.tertiary and not strat.secondary:
            p.append(Problem(f"{path}.tertiary", strat.tertiary, "set secondary before tertiary"))

    seen_regions: dict[str, int] = {}
    for i, rule in enumerate(cfg.routing.rules):
        if rule.cloud not in enabled:
            p.append(Problem(f"routing.rules[{i}].cloud", rule.cloud, enabled_text))
        for k, region in enumerate(rule.regions):
            if region in seen_regions:
                p.append(Problem(f"routing.rules[{i}].regions[{k}]", region,
                                 f"each user region in one rule only; already in rules[{seen_regions[region]}]"))
            seen_regions[region] = i
    for i, name in _dupes(r.name for r in cfg.routing.rules):
        p.append(Problem(f"routing.rules[{i}].name", name, "rule names must be unique"))

    hc = cfg.health_check
    if hc.timeout_s >= hc.interval_s:
        p.append(Problem("healthCheck.timeoutS", hc.timeout_s,
                         f"must be < healthCheck.intervalS ({hc.interval_s:g})"))

    if cfg.dns is not None:
        if not cfg.dns.backends.names:
            p.append(Problem("dns.backends", {}, "at least one of route53, azureTm, gcpDns, powerdns"))
        if not enabled:
            p.append(Problem("clouds", "(none enabled)", "dns needs at least one enabled cloud to answer"))
        if cfg.dns.strategy not in cfg.strategies:
            p.append(Problem("dns.strategy", cfg.dns.strategy,
                             f"a key of strategies: {', '.join(sorted(cfg.strategies)) or '(none defined)'}"))
        zone_backends = {"route53": cfg.dns.backends.route53, "powerdns": cfg.dns.backends.powerdns}
        for key, backend in zone_backends.items():
            if backend is not None and not cfg.dns.record_name.endswith("." + backend.zone_name
                                                                           if key == "route53" else
                                                                           "." + backend.zone):
                zone = backend.zone_name if key == "route53" else backend.zone
                p.append(Problem("dns.recordName", cfg.dns.record_name,
                                 f"a name inside the {key} zone {zone!r}"))

    if cfg.registry is not None and cfg.registry.enabled:
        reg = cfg.registry
        if reg.service_ttl_s < 3 * reg.heartbeat_interval_s:
            p.append(Problem("registry.serviceTtlS", reg.service_ttl_s,
                             f">= 3 x registry.heartbeatIntervalS ({3 * reg.heartbeat_interval_s}), so two "
                             "missed heartbeats do not expire a service"))
    return p


def _workload_problems(svc: Workload, path: str) -> list[Problem]:
    p: list[Problem] = []
    if svc.cpu_limit and cpu_cores(svc.cpu_limit) < cpu_cores(svc.cpu):
        p.append(Problem(f"{path}.cpuLimit", svc.cpu_limit, f"must be >= cpu request ({svc.cpu})"))
    if svc.memory_limit and memory_mb(svc.memory_limit) < memory_mb(svc.memory):
        p.append(Problem(f"{path}.memoryLimit", svc.memory_limit, f"must be >= memory request ({svc.memory})"))
    for k, name in _dupes(port.name for port in svc.ports):
        p.append(Problem(f"{path}.ports[{k}].name", name, "port names must be unique per service"))
    return p


def _site_access_problems(site: EdgeSite, path: str) -> list[Problem]:
    runtime = site.capabilities.runtime
    if runtime == "kubernetes":
        if site.kubeconfig_ref is None:
            return [Problem(f"{path}.kubeconfigRef", None,
                            "a secret reference (env:NAME or config:KEY) for runtime 'kubernetes'")]
        return []
    schemes = ("ssh", "tcp") if runtime == "docker" else ("ssh",)
    if site.host is None:
        return [Problem(f"{path}.host", None, f"a {' or '.join(s + '://' for s in schemes)} address for runtime {runtime!r}")]
    try:
        _check_url(site.host, schemes)
    except ValueError as exc:
        return [Problem(f"{path}.host", site.host, str(exc))]
    problems: list[Problem] = []
    if runtime == "native" and site.ssh_key_ref is None:
        # Docker over ssh:// uses the operator's ssh-agent; native units need the key itself.
        problems.append(Problem(f"{path}.sshKeyRef", None,
                                "a secret reference to the SSH private key for runtime 'native'"))
    for j, svc in enumerate(site.services):
        # Outside Kubernetes there is no scheduler to spread replicas or share ports.
        if svc.replicas != 1:
            problems.append(Problem(f"{path}.services[{j}].replicas", svc.replicas,
                                    f"1 for runtime {runtime!r} (only kubernetes sites run replicas)"))
        if runtime == "native" and not svc.exec_start:
            problems.append(Problem(f"{path}.services[{j}].execStart", None,
                                    "the command the systemd unit runs, for runtime 'native'"))
    return problems


# ------------------------------------------------------------------ projections


def failover_spec(cfg: StackConfig, addresses: Mapping[str, Any]) -> dict[str, Any]:
    """The stack's global-traffic settings as WeightedFailover's plain inputs.

    One projection for `GlobalTraffic` (where addresses may be Pulumi Inputs) and for the
    failover controller, so both publish exactly the same plan. `addresses` maps each
    enabled cloud to its ingress address. Backends are included without secrets: those
    stay references.
    """
    if cfg.dns is None:
        raise ConfigError([f"{NAMESPACE}:dns = None: global traffic needs the dns section"])
    strategy = cfg.strategies.get(cfg.dns.strategy)
    if strategy is None:
        raise ConfigError([f"{NAMESPACE}:dns.strategy = {cfg.dns.strategy!r}: a key of strategies"])
    endpoints: dict[str, dict[str, Any]] = {}
    for cloud in cfg.traffic_clouds:
        endpoint: dict[str, Any] = {"address": addresses[cloud]}
        ingress = cfg.clouds.get(cloud).ingress
        if ingress is not None and ingress.health_url:
            endpoint["health_url"] = ingress.health_url
        endpoints[cloud] = endpoint
    hc = cfg.health_check
    return {
        "record_name": cfg.dns.record_name,
        "ttl": cfg.dns.ttl,
        "endpoints": endpoints,
        "health_check": {
            "interval_s": hc.interval_s,
            "timeout_s": hc.timeout_s,
            "failure_threshold": hc.failure_threshold,
            "success_threshold": hc.success_threshold,
            "recovery_hold_down_s": hc.recovery_hold_down_s,
            "check": hc.check.model_dump(),
        },
        "strategy": {"order": list(strategy.order), "replication": strategy.replication,
                     "failover": strategy.failover},
        "routing": {"rules": [r.model_dump() for r in cfg.routing.rules],
                    "default_weight": cfg.routing.default_weight},
        "backends": {k: v for k, v in cfg.dns.backends.model_dump().items() if v is not None},
    }


# ------------------------------------------------------------------------- loading


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("http", "tcp", "custom", "slack", "pagerduty", "email") and out:
            continue  # discriminated-union tags are not keys the user wrote
        else:
            out += ("." if out else "") + str(part)
    return out


def _allowed(err: Mapping[str, Any]) -> str:
    msg = err["msg"]
    ctx = err.get("ctx") or {}
    if err["type"] == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}"
    if err["type"] == "extra_forbidden":
        return "unknown key (check spelling; keys are camelCase)"
    if err["type"] == "literal_error":
        return f"one of {ctx.get('expected')}"
    return msg.removeprefix("Value error, ")


def load_config(raw: Mapping[str, Any]) -> StackConfig:
    """Parse and check one stack's `edgefabric:` keys (namespace already stripped).

    Raises ConfigError listing every problem; nothing is registered before this returns.
    """
    try:
        cfg = StackConfig.model_validate(dict(raw))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = _path(err["loc"])
            value = err.get("input") if err["type"] != "missing" else None
            problems.append(str(Problem(path, value, _allowed(err))))
        raise ConfigError(problems) from None
    sem = semantic_problems(cfg)
    if sem:
        raise ConfigError(str(x) for x in sem)
    return cfg


def raw_from_stack_file(path: Path) -> dict[str, Any]:
    """The `edgefabric:` keys of a stack file, without the secrets (`secure:` values are
    secret config keys that `config:` references point at, not part of the structure)."""
    doc = yaml.safe_load(Path(path).read_text()) or {}
    config = doc.get("config") or {}
    prefix = f"{NAMESPACE}:"
    return {k[len(prefix):]: v for k, v in config.items()
            if k.startswith(prefix) and not (isinstance(v, dict) and set(v) == {"secure"})}


def load_stack_file(path: Path | str) -> StackConfig:
    """Load a `Pulumi.<stack>.yaml` without the engine (controller, render, promote-check)."""
    return load_config(raw_from_stack_file(Path(path)))


def from_pulumi() -> StackConfig:
    """Load the current stack's config through `pulumi.Config`, for `pulumi up` and mocks.

    Only the declared top-level keys are read; secret keys (`config:` references) are
    resolved where they are used, not here.
    """
    import pulumi  # local import: the rest of this module stays engine-free

    conf = pulumi.Config(NAMESPACE)
    raw: dict[str, Any] = {}
    for key in TOP_LEVEL_KEYS:
        text = conf.get(key)
        if text is None:
            continue
        # Structured values arrive as JSON text; plain strings (environment) do not parse.
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        # Pulumi.yaml declares an empty default for every key (declared keys without one are
        # required by the engine); empty means "not set", so the model's default applies.
        if value not in ("", {}, []):
            raw[key] = value
    if "environment" not in raw:
        raw["environment"] = pulumi.get_stack()
    return load_config(raw)


# Forward references: cloud models name TrafficEndpoint before it is defined.
for _model in (AwsCloud, AzureCloud, GcpCloud, Clouds, StackConfig):
    _model.model_rebuild()
