"""The models of the stack config: one frozen pydantic model per section.

Keys are camelCase in stack files and snake_case in Python. Field constraints that a
type can carry live here; rules that span fields live in `edgefabric.config.rules`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlparse

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel

from edgefabric.config import zones
from edgefabric.config.vocab import CLOUDS, USER_REGIONS, Cloud
from edgefabric.errors import NAMESPACE, ConfigError  # noqa: F401 - re-exported

_DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
DnsLabel = Annotated[str, Field(pattern=_DNS_LABEL)]
# A reference to a secret, never the secret itself: `env:NAME` is read from the process
# environment where it is used; `config:KEY` is the Pulumi secret `edgefabric:KEY`.
SecretRef = Annotated[str, Field(pattern=r"^(env:[A-Za-z_][A-Za-z0-9_]*|config:[A-Za-z][A-Za-z0-9_.-]*)$")]
# Kubernetes quantities: cpu "250m" / "0.5" / "2", memory "256Mi" / "1Gi" / "512M".
CpuQuantity = Annotated[str, Field(pattern=r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$")]
MemQuantity = Annotated[str, Field(pattern=r"^[0-9]+(Ki|Mi|Gi|Ti|K|M|G|T)?$")]


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


# Pinned images and http(s) URLs are checked in several models; one annotated type each.
PinnedImage = Annotated[str, AfterValidator(_check_image)]
HttpUrl = Annotated[str, AfterValidator(lambda v: _check_url(v, ("http", "https")))]


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
    cluster: ExistingCluster | None = None


class AzureCloud(_Model):
    enabled: bool = False
    location: str = Field("westeurope", pattern=r"^[a-z0-9]+$")
    subscription_id_ref: SecretRef = "env:ARM_SUBSCRIPTION_ID"
    ingress: TrafficEndpoint | None = None
    cluster: ExistingCluster | None = None


class GcpCloud(_Model):
    enabled: bool = False
    project: str = Field("edgefabric", pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
    region: str = Field("asia-southeast1", pattern=r"^[a-z]+-[a-z]+[0-9]$")
    ingress: TrafficEndpoint | None = None
    cluster: ExistingCluster | None = None


# A fully qualified DNS name: two or more labels, the last one not all digits (so a
# mistyped IP such as 10.0.0.256 is not taken for a name).
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")


def is_ip_address(value: str) -> bool:
    """True for an IPv4 or IPv6 literal."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class TrafficEndpoint(_Model):
    """An existing ingress for a cloud: an IP address, or the DNS name of a load balancer
    that reports a hostname (AWS). When set, that cloud's core is not provisioned and this
    address answers for it (the local stack's stand-ins, or a cluster you bring).

    A DNS name is resolved to its A records on every probe round and at every apply; see
    README "Hostname ingress". It is stored lower case, without a trailing dot.
    """

    address: str
    health_url: HttpUrl | None = None

    @field_validator("address")
    @classmethod
    def _ip_or_name(cls, value: str) -> str:
        if is_ip_address(value):
            if ipaddress.ip_address(value).version != 4:
                # Every backend publishes A records; an AAAA answer set is not built yet.
                raise ValueError("an IPv6 literal cannot be published (answers are A records); "
                                 "allowed: an IPv4 address or a DNS name")
            return value
        name = value.lower().removesuffix(".")
        if not _HOSTNAME.fullmatch(name):
            raise ValueError("does not appear to be an IPv4 or IPv6 address, nor a fully qualified DNS name "
                             "(e.g. 203.0.113.10 or k8s-api-1a2b3c4d5e.elb.us-east-1.amazonaws.com)")
        return name

    @property
    def is_name(self) -> bool:
        """True when the address is a DNS name (resolved at use), False for an IP literal."""
        return not is_ip_address(self.address)


class ExistingCluster(_Model):
    """A Kubernetes cluster the team already runs (`clouds.<cloud>.cluster`): the cloud's core
    services are deployed onto it, through a kubeconfig, instead of onto a managed cluster
    this stack creates (EKS, AKS, GKE). No cloud resources are made for such a cloud, and it
    needs no `core.clusters.<cloud>` size; regions may deploy onto it. The global record
    follows its api-gateway Service's load-balancer address, as for a created cluster.

    `kubeconfigRef` is a secret reference (`env:NAME` holding the kubeconfig's contents, or
    `config:KEY`, a Pulumi secret): the kubeconfig never appears in the stack file."""

    kubeconfig_ref: SecretRef


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
        """Enabled clouds with a core this stack deploys: onto a cluster it creates, or onto
        the existing one the cloud brings (`cluster`). Clouds with an `ingress` have none."""
        return [c for c in self.enabled if self.get(c).ingress is None]

    @property
    def existing(self) -> list[Cloud]:
        """Provisioned clouds that bring their own cluster (`clouds.<cloud>.cluster`)."""
        return [c for c in self.provisioned if self.get(c).cluster is not None]

    @property
    def created(self) -> list[Cloud]:
        """Provisioned clouds whose managed cluster (EKS, AKS, GKE) this stack creates."""
        return [c for c in self.provisioned if self.get(c).cluster is None]


# -------------------------------------------------------------------------- services


class Port(_Model):
    name: DnsLabel
    # What the Service exposes (and a load balancer in front of it).
    port: int = Field(ge=1, le=65535)
    protocol: Literal["http", "http2", "grpc", "websocket", "tcp", "mqtt"] = "http"
    # What the container listens on, when it differs: containers run as non-root and cannot
    # bind ports below 1024, so a Service's 443 goes to e.g. 8443 in the pod.
    target_port: int | None = Field(None, ge=1024, le=65535)

    @property
    def container_port(self) -> int:
        return self.target_port or self.port


class Autoscale(_Model):
    min_replicas: int = Field(ge=1)
    max_replicas: int = Field(ge=1, le=1000)
    cpu_percent: int = Field(70, ge=10, le=100)


class Workload(_Model):
    """A containerised service: what every tier deploys."""

    name: DnsLabel
    image: PinnedImage
    replicas: int = Field(1, ge=1, le=1000)
    cpu: CpuQuantity = "250m"
    memory: MemQuantity = "256Mi"
    # Limits default to twice the request: headroom for bursts without starving neighbours.
    cpu_limit: CpuQuantity | None = None
    memory_limit: MemQuantity | None = None
    ports: list[Port] = Field(min_length=1)
    health_path: str = Field("/healthz", pattern=r"^/")
    env: dict[str, str] = {}


class Database(_Model):
    """A PostgreSQL database a service stores its state in (user management's realms): a
    managed one per cloud (RDS, Azure Database for PostgreSQL, Cloud SQL) reachable from the
    cluster. The password stays behind its secret reference."""

    host: str = Field(min_length=1)
    port: int = Field(5432, ge=1, le=65535)
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    username: str = Field(min_length=1)
    password_ref: SecretRef


class CoreService(Workload):
    kind: Literal["api-gateway", "data-analytics", "user-management", "business-logic"]
    autoscale: Autoscale | None = None
    # OAuth2 issuer for user management; other kinds ignore it.
    oauth2_issuer: str | None = None
    # User management's database (Keycloak's `start` refuses its dev-file store).
    database: Database | None = None


class ClusterSize(_Model):
    node_count: int = Field(3, ge=1, le=1000)
    min_nodes: int = Field(1, ge=1, le=1000)
    max_nodes: int = Field(10, ge=1, le=1000)
    machine_type: str = Field(min_length=1)
    kubernetes_version: str = Field("1.34", pattern=r"^1\.[0-9]{2}$")
    # Who may reach the API server. Empty means private endpoint only.
    api_allowed_cidrs: list[str] = []
    # How the deployer reaches the API server: `runner` (pulumi runs on a runner inside the
    # cluster's network, README "Running on the clouds"), or `public` (a public endpoint
    # restricted to apiAllowedCidrs). A private endpoint without a runner is unreachable.
    api_access: Literal["runner", "public"] | None = None

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
    # Who may reach the region's MQTT broker over the internet. Empty: its load balancer is
    # internal (edge sites reach it over their private link to the cloud); a plain-text
    # broker is never open to the whole internet.
    device_source_ranges: list[str] = []
    # The region's own cluster, in `location`, when that is not where its cloud's core runs
    # (`clouds.<cloud>.region`/`location`): sized like `core.clusters.<cloud>`. A region in
    # its core's location runs on the core cluster, in a namespace of its own.
    cluster: ClusterSize | None = None
    # Or a cluster the team already runs there (a secret reference to its kubeconfig, as
    # `clouds.<cloud>.cluster.kubeconfigRef`): the region deploys onto it and nothing is created.
    kubeconfig_ref: SecretRef | None = None

    @field_validator("device_source_ranges")
    @classmethod
    def _ranges(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr)
        return value


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
    image: PinnedImage
    replicas: int = Field(1, ge=1, le=100)
    requirements: Requirements
    ports: list[Port] = Field(min_length=1)
    health_path: str = Field("/healthz", pattern=r"^/")
    # For the native runtime: the command the systemd unit runs.
    exec_start: str | None = None


class DockerTls(_Model):
    """A tcp:// Docker host's TLS (port 2376): Docker verifies both ends, so the client needs
    the daemon's CA and its own certificate and key (PEM), each a secret reference."""

    ca_ref: SecretRef
    cert_ref: SecretRef
    key_ref: SecretRef


class EdgeSite(_Model):
    name: DnsLabel
    location: str = Field(min_length=1)
    capabilities: Capabilities
    # kubernetes runtime: the kubeconfig, as a secret reference.
    kubeconfig_ref: SecretRef | None = None
    # docker runtime: ssh://user@host or tcp://host:2376; native runtime: ssh://user@host[:port].
    host: str | None = None
    ssh_key_ref: SecretRef | None = None
    # docker runtime: the host address the services' ports are published on. Loopback unless
    # the site names the interface its devices reach (Docker's own default, every interface,
    # would put redis and the broker on whatever network the host is on).
    publish_address: str = Field("127.0.0.1", description="docker runtime: the host address ports are published on")
    # docker runtime over tcp://: the TLS material; a plain daemon socket is root on the host.
    docker_tls: DockerTls | None = None
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
    # performance-based only: the weight of a new latency sample in the smoothed latency
    # (1: no smoothing), and the band in percentage points within which shares do not move.
    latency_smoothing: float = Field(0.3, gt=0, le=1)
    weight_band_pct: float = Field(5, ge=0, le=50)

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


# A check's own timeout; unset, `healthCheck.timeoutS` applies.
CheckTimeout = Annotated[float | None, Field(gt=0, le=600)]
# A DNS name without the trailing dot: what a check's Host header and TLS SNI carry.
_HOST_HEADER = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


class HttpCheck(_Model):
    """An HTTP or HTTPS request to the cloud's ingress address; healthy iff the status is
    `expectedStatus`. Host header and TLS SNI are the record name (`dns.recordName` without
    the dot) unless `hostHeader` is set; the connection goes to the ingress address. With
    `scheme: https` the certificate is verified for that name against the system CAs, or
    against `caBundleRef` (a reference to a PEM bundle). Redirects are not followed."""

    type: Literal["http"] = "http"
    path: str = Field("/health", pattern=r"^/")
    expected_status: int = Field(200, ge=100, le=599)
    method: Literal["GET", "HEAD"] = "GET"
    port: int = Field(80, ge=1, le=65535)
    scheme: Literal["http", "https"] = "http"
    timeout_s: CheckTimeout = None
    host_header: str | None = Field(None, pattern=_HOST_HEADER)
    ca_bundle_ref: SecretRef | None = None

    @field_validator("ca_bundle_ref")
    @classmethod
    def _https_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("scheme") != "https":
            raise ValueError("caBundleRef verifies a TLS certificate: set scheme https, or drop it")
        return value


class TcpCheck(_Model):
    """Healthy iff a TCP connection to the ingress address and `port` completes."""

    type: Literal["tcp"]
    port: int = Field(ge=1, le=65535)
    timeout_s: CheckTimeout = None


class CustomCheck(_Model):
    """A command (argv, no shell) run by our probes, with the ingress address appended as its
    last argument and PATH as its only environment; healthy iff it exits 0. The clouds'
    native checkers cannot run it (see `healthCheck`)."""

    type: Literal["custom"]
    command: list[str] = Field(min_length=1)
    timeout_s: CheckTimeout = None


Check = Annotated[Union[HttpCheck, TcpCheck, CustomCheck], Field(discriminator="type")]


class HealthCheckConfig(_Model):
    """How each cloud's ingress is probed. `checks` is a list: a cloud passes a round when
    every check passes, each within its own `timeoutS` (default: this `timeoutS`). The
    single `check` is a one-item list; set one or the other, not both; neither is one
    default `http` check. The clouds' native checkers (Route53, Traffic Manager, Cloud DNS)
    take one check: the first `http`/`tcp` one of the list; a list of only `custom` checks
    gives them a TCP connect to port 80, and `pulumi preview` says so."""

    interval_s: float = Field(30, gt=0, le=3600)
    timeout_s: float = Field(5, gt=0, le=600)
    failure_threshold: int = Field(3, ge=1, le=100)
    success_threshold: int = Field(2, ge=1, le=100)
    recovery_hold_down_s: float = Field(300, ge=0, le=86400)
    check: Check | None = None
    checks: list[Check] | None = Field(None, min_length=1, max_length=16)

    @field_validator("checks")
    @classmethod
    def _one_form(cls, value: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        if value is not None and info.data.get("check") is not None:
            raise ValueError("set healthCheck.check or healthCheck.checks, not both")
        return value

    @property
    def all_checks(self) -> tuple[HttpCheck | TcpCheck | CustomCheck, ...]:
        """Every check, in order: `checks`, or `check` as a one-item list, or the default."""
        if self.checks is not None:
            return tuple(self.checks)
        return (self.check if self.check is not None else HttpCheck(),)

    def check_path(self, index: int) -> str:
        """The key path of `all_checks[index]`, as the stack file spells it."""
        return f"healthCheck.checks[{index}]" if self.checks is not None else "healthCheck.check"


class SlackNotification(_Model):
    type: Literal["slack"]
    url_ref: SecretRef


class PagerDutyNotification(_Model):
    type: Literal["pagerduty"]
    routing_key_ref: SecretRef
    events_url: HttpUrl = "https://events.pagerduty.com/v2/enqueue"


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
    api_url: HttpUrl
    api_key_ref: SecretRef
    server_id: str = "localhost"
    zone: str = Field(pattern=r"^([a-z0-9-]+\.)+$")


# `adopt` on a zone or resource group: false (the default), the stack creates it and deletes
# it on `destroy`; true, it exists already (shared with other stacks, say), the stack only
# reads it and never deletes it. Either way it is said, never assumed (README "DNS zones").


class Route53Backend(_Model):
    zone_name: str = Field(pattern=r"^([a-z0-9-]+\.)+$")
    hosted_zone_id: str | None = Field(None, pattern=r"^Z[A-Z0-9]{1,32}$")
    health_check_ids: bool = True
    adopt: bool = False


class AzureTmBackend(_Model):
    subscription_id_ref: SecretRef = "env:ARM_SUBSCRIPTION_ID"
    resource_group: str = Field(pattern=r"^[-\w._()]{1,90}$")
    profile_name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,61}$")
    relative_dns_name: str = Field(pattern=_DNS_LABEL)
    # The resource group the profiles live in.
    adopt: bool = False


class GcpDnsBackend(_Model):
    project: str = Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
    managed_zone: str = Field(pattern=_DNS_LABEL)
    # The managed zone's DNS name (required in a stack: the rules check the names against it).
    dns_name: str | None = Field(None, pattern=r"^([a-z0-9-]+\.)+$")
    adopt: bool = False


class DnsBackends(_Model):
    route53: Route53Backend | None = None
    azure_tm: AzureTmBackend | None = None
    gcp_dns: GcpDnsBackend | None = None
    powerdns: PowerDnsBackend | None = None

    @property
    def names(self) -> list[str]:
        return [n for n in ("route53", "azure_tm", "gcp_dns", "powerdns") if getattr(self, n)]


class DnsRecord(_Model):
    """One public name that follows one service's strategy (`strategies.<strategy>`)."""

    name: str = Field(pattern=r"^([a-z0-9-]+\.)+$", description="FQDN with trailing dot")
    strategy: DnsLabel


class FailoverControllerConfig(_Model):
    """`dns.controller`: the failover controller run inside each core cluster (`deploy`), one
    replica per cloud, so failover keeps working when no deployer and no laptop is up. The
    replicas share one lease held as a majority of Lease objects, one per core cluster: one
    writes at a time, and another takes over when its cloud is lost (README "Where the
    controller runs")."""

    deploy: bool = False
    # Its own image (the package, the daemon as entrypoint), pinned like every other.
    image: PinnedImage = "ghcr.io/edgefabric/failover-controller:0.1.0"
    # Whole seconds (a Lease's leaseDurationSeconds): how long a silent leader blocks a takeover.
    lease_duration_s: int = Field(30, ge=2, le=3600)
    metrics_port: int = Field(9464, ge=1024, le=65535)
    cpu: CpuQuantity = "50m"
    memory: MemQuantity = "128Mi"


class DnsConfig(_Model):
    # Published names: `recordName` follows `strategy` (the one-record form); `records` adds
    # names, each following its own service's strategy. Either may be left out, not both.
    record_name: str | None = Field(None, pattern=r"^([a-z0-9-]+\.)+$", description="FQDN with trailing dot")
    records: list[DnsRecord] | None = Field(None, min_length=1, max_length=100)
    ttl: int = Field(30, ge=1, le=86400)
    # Which core service's strategy the global record follows.
    strategy: DnsLabel = "api-gateway"
    backends: DnsBackends
    # The backend whose zone answers for the published names (`edgefabric.config.zones`); the
    # other zone backends publish `<first label>.<their zone>` in subzones delegated from it.
    # Unset: the only zone backend; required when there are several.
    authority: Literal["route53", "gcpDns", "powerdns"] | None = None
    # The controller's deadline for one backend call (apply or read), in seconds. Backends are
    # called in parallel; one that does not answer in time is reported and retried on the next
    # tick, and never holds up the others or the probes.
    apply_timeout_s: float = Field(20, gt=0, le=600)
    controller: FailoverControllerConfig = FailoverControllerConfig()

    @property
    def all_records(self) -> list[DnsRecord]:
        """Every published name with its strategy: `recordName` following `strategy` first,
        then `records`."""
        first = [DnsRecord(name=self.record_name, strategy=self.strategy)] if self.record_name else []
        return first + list(self.records or [])

    @property
    def zones(self) -> dict[str, str]:
        """Each configured zone backend (a field of `backends`) -> its zone's DNS name, where known."""
        b = self.backends
        named = {"route53": b.route53.zone_name if b.route53 else None,
                 "gcp_dns": b.gcp_dns.dns_name if b.gcp_dns else None,
                 "powerdns": b.powerdns.zone if b.powerdns else None}
        return {k: v for k, v in named.items() if v is not None}

    @property
    def authority_backend(self) -> str | None:
        """The field of `backends` whose zone is authoritative: `authority`, or the only zone backend."""
        if self.authority is not None:
            return {zones.CONFIG_KEYS[k]: k for k in zones.ZONE_BACKENDS}[self.authority]
        hosting = [n for n in zones.ZONE_BACKENDS if getattr(self.backends, n) is not None]
        return hosting[0] if len(hosting) == 1 else None


# Chain ids of local development chains: anvil/hardhat (31337), ganache/geth --dev (1337).
DEV_CHAIN_IDS = frozenset({31337, 1337})


class RegistryConfig(_Model):
    enabled: bool = True
    # http(s) only: web3 8 has no synchronous websocket provider. Without credentials: a hosted
    # node's URL carrying an API key goes in a secret named by rpc_url_ref instead.
    rpc_url: HttpUrl | None = None
    # Secret reference (env:/config:/file:) to the RPC URL; kept secret in state, the agents'
    # pods and every message. Exactly one of rpc_url and rpc_url_ref.
    rpc_url_ref: SecretRef | None = None
    chain_id: int = Field(gt=0)
    deployer_key_ref: SecretRef = "env:EDGEFABRIC_DEPLOYER_KEY"
    contract_address: str | None = Field(None, pattern=r"^(0x[0-9a-fA-F]{40})?$")
    service_ttl_s: int = Field(300, ge=10, le=30 * 86400)
    heartbeat_interval_s: int = Field(100, ge=1, le=30 * 86400)
    agent_image: PinnedImage = "ghcr.io/edgefabric/heartbeat-agent:0.1.0"
    # Blocks a write must be deep before a create returns. None: 1 on dev chains (anvil, hardhat,
    # ganache), 3 elsewhere, where a block or two can be reorged away.
    confirmations: int | None = Field(None, ge=1, le=64)
    # Cap on maxFeePerGas, in gwei; a stuck transaction is re-sent with a bumped fee up to it.
    max_fee_gwei: float | None = Field(None, gt=0, le=100_000)
    # Each cluster's heartbeat agent signs with its own delegate key (it can heartbeat and
    # nothing else), generated by the stack and topped up to this much native currency.
    agent_funding_eth: float = Field(0.01, ge=0, le=100)
    # Change (any new string) to rotate every agent's delegate key on the next `up`.
    agent_key_rotation: str = Field("1", min_length=1, max_length=64)

    def effective_confirmations(self) -> int:
        if self.confirmations is not None:
            return self.confirmations
        return 1 if self.chain_id in DEV_CHAIN_IDS else 3


# ---------------------------------------------------------------------- data flows

# An MQTT topic root: one level, no wildcards, so `<root>/<site>/#` is a prefix one site owns.
TopicRoot = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,31}$")]


class FlowTopic(_Model):
    """A topic root that flows up: an edge site publishes under `<root>/<site>/#` (a region
    under `<root>/<region>/#`), and the bridges carry it to the region and on to the core."""

    root: TopicRoot
    qos: Literal[0, 1, 2] = 1


class DownTopic(FlowTopic):
    """A topic root published at the core (`<root>/#`) and carried to every region and edge
    site. Retained, a broker started later still receives the latest message of each topic."""

    retained: bool = True


class TierBuffer(_Model):
    """Store and forward at one tier's broker: how much it queues for a bridge (or a client)
    whose other end is away. Past either limit, new QoS 1/2 messages are dropped."""

    max_queued_messages: int = Field(100_000, ge=100, le=10_000_000)
    # 0 means no byte limit: the message count alone bounds the queue.
    max_queued_mb: int = Field(64, ge=0, le=65_536)
    max_inflight_messages: int = Field(100, ge=1, le=65_535)


class FlowBuffers(_Model):
    edge: TierBuffer = TierBuffer()
    region: TierBuffer = TierBuffer()
    core: TierBuffer = TierBuffer()


class FlowRetention(_Model):
    """What a broker keeps across restarts and absences."""

    # Persistence writes sessions, queues and retained messages to disk: without it a broker
    # restart loses what it had accepted but not yet forwarded.
    persistence: bool = True
    autosave_interval_s: int = Field(30, ge=1, le=3600)
    # A bridge or client away longer than this loses its session and queue.
    session_expiry_h: int = Field(168, ge=1, le=8760)


class DataFlowsConfig(_Model):
    """MQTT bridges between the tiers: edge site → region → core for `up` and `regionalUp`,
    core → region → edge (retained) for `down`. Every bridge is TLS with a client certificate
    from the stack's CA; every site publishes only under its own prefix."""

    enabled: bool = True
    # Which region each edge site bridges to: `{site: region}`, every site exactly once.
    sites: dict[DnsLabel, DnsLabel] = {}
    up: list[FlowTopic] = Field(
        [FlowTopic(root="telemetry"), FlowTopic(root="alerts")], min_length=1, max_length=16)
    regional_up: list[FlowTopic] = Field([FlowTopic(root="aggregates")], max_length=16)
    down: list[DownTopic] = Field(
        [DownTopic(root="config"), DownTopic(root="models")], max_length=16)
    # The core broker's TLS listener, and the port of each region's `mqtt-bridge` load balancer
    # that edge bridges dial. Region and site brokers listen on their service's mqtt port.
    port: int = Field(8883, ge=1024, le=65535)
    retention: FlowRetention = FlowRetention()
    buffers: FlowBuffers = FlowBuffers()
    # The core broker's image; edge and regional brokers are their sensor-ingest and
    # device-management services.
    core_image: PinnedImage = "eclipse-mosquitto:2.0.20"


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
    data_flows: DataFlowsConfig | None = None

    @property
    def traffic_clouds(self) -> list[Cloud]:
        """Clouds that answer the global name: every enabled one."""
        return self.clouds.enabled

    def core_location(self, cloud: Cloud) -> str:
        """Where the cloud's core cluster runs: the AWS or GCP region, the Azure location."""
        settings = self.clouds.get(cloud)
        return settings.location if isinstance(settings, AzureCloud) else settings.region

    @property
    def cluster_sizes(self) -> list[tuple[str, Cloud, ClusterSize]]:
        """Every cluster this stack sizes, with its key path: the cores' (`core.clusters.<cloud>`)
        and the regions' own (`regions[i].cluster`)."""
        out: list[tuple[str, Cloud, ClusterSize]] = [(f"core.clusters.{c}", c, s) for c, s in self.core.clusters.items()]
        out += [(f"regions[{i}].cluster", r.cloud, r.cluster) for i, r in enumerate(self.regions) if r.cluster]
        return out


# Top-level keys, in stack-file spelling. `Pulumi.yaml` declares exactly these.
TOP_LEVEL_KEYS: tuple[str, ...] = tuple(
    f.alias or name for name, f in StackConfig.model_fields.items()
)


# Forward references: cloud models name TrafficEndpoint and ExistingCluster before they are defined.
for _model in (AwsCloud, AzureCloud, GcpCloud, Clouds, StackConfig):
    _model.model_rebuild()
