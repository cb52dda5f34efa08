"""Global traffic: one public name answered with health-based weights across the clouds.

`GlobalTraffic` wires each cloud's ingress address (a pulumi Input: the cloud core's
load-balancer address, or the ingress the stack names) into a `WeightedFailover`
dynamic resource, which probes, plans and writes the weighted answers into every
configured DNS backend (Route53, Azure Traffic Manager, Cloud DNS, PowerDNS).

The cloud's own checkers are declared too, with the same thresholds, so each fails over on
its own even when nobody runs `pulumi up` or the controller; they and the zones
(`edgefabric.tiers.dns_zones`) go through the core's provider of that cloud, or one of this
component's own where the core has none (an existing cluster, an ingress):
- AWS: one `aws.route53.HealthCheck` per cloud endpoint (`ipAddress` for an IP, `fqdn` for a
  DNS name such as an AWS load balancer's hostname); their ids are attached to the
  Route53 weighted sets (only when the route53 backend is configured: a check with no
  record to steer would cost money and do nothing);
- Azure: the Traffic Manager profile's monitor config, written by the azure_tm backend
  from the same health settings (the profile belongs to the dynamic resource, so there
  is no second resource to declare here);
- GCP: one `gcp.compute.HealthCheck` (global, probing from three source regions) for
  Cloud DNS routing policies (when the gcp_dns backend is set).

Both kinds of checker are configured from ONE mapping of the health check
(`edgefabric.traffic.spec.native_check`), so they probe the same protocol, port and path.

Every published name (`dns.records`, or the one `dns.recordName`) is its own
`WeightedFailover`, following its own strategy; the native checkers probe the clouds' ingresses,
which every name shares, so they are declared once.

The tier sees only its slice of the stack config (`GlobalTrafficArgs`) and turns it into
one typed `FailoverSpec` per name; the addresses, only known as Outputs here, travel as the
resource's own input. Logical names are stable: `<name>-failover` (the first name),
`<name>-failover-<record name with dashes>` (the others), `<name>-r53-<cloud>`, `<name>-gcp`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp

from edgefabric.config import (
    AzureCloud,
    DnsConfig,
    FailoverConfig,
    HealthCheckConfig,
    HttpCheck,
    RoutingConfig,
    StrategyConfig,
    TrafficEndpoint,
)
from edgefabric.dynamic.failover import WeightedFailover, WeightedFailoverArgs
from edgefabric.errors import ConfigError
from edgefabric.tiers import secret_output
from edgefabric.tiers.cloud_providers import CloudSettings, cloud_provider
from edgefabric.tiers.dns_zones import BACKEND_CLOUD, declare_zones
from edgefabric.tiers.failover_controller import CONTROLLER_NAMESPACE, ControllerCluster, deploy_controller
from edgefabric.tiers.labels import cloud_tags
from edgefabric.traffic.spec import PENDING_ADDRESS, FailoverAction, FailoverSpec, is_name, native_check

TIER = "traffic"
GCP_SOURCE_REGIONS = ["us-east1", "europe-west1", "asia-southeast1"]


@dataclass(frozen=True)
class GlobalTrafficArgs:
    """The global-traffic slice of the stack config, each cloud's ingress, and the providers."""

    dns: DnsConfig  # the `dns` section
    strategy: StrategyConfig | None  # `strategies[dns.strategy]`: the one-record form's
    routing: RoutingConfig  # `routing`
    health_check: HealthCheckConfig  # `healthCheck`
    # Every enabled cloud -> its ingress address (an Output when the core is provisioned).
    addresses: Mapping[str, pulumi.Output[str] | str]
    environment: str
    tags: Mapping[str, str] = field(default_factory=dict)
    # Clouds whose ingress names a health URL (`clouds.<cloud>.ingress.healthUrl`).
    health_urls: Mapping[str, str] = field(default_factory=dict)
    # Cloud -> its explicit provider; a cloud's native checkers are declared only with one.
    providers: Mapping[str, pulumi.ProviderResource] = field(default_factory=dict)
    # `strategies`: what each name of `dns.records` follows.
    strategies: Mapping[str, StrategyConfig] = field(default_factory=dict)
    action: FailoverAction = "route-to-secondary"  # `failover.action`
    # `dns.controller.deploy`: the core clusters the failover controller runs in, and the
    # `failover` section it notifies by (edgefabric.tiers.failover_controller).
    clusters: Mapping[str, ControllerCluster] = field(default_factory=dict)
    failover: FailoverConfig | None = None
    # `clouds.<cloud>`: a DNS backend's cloud without a core provider gets one of its own here.
    cloud_settings: Mapping[str, CloudSettings] = field(default_factory=dict)

    def specs(self, azure_tags: Mapping[str, str] | None) -> list[FailoverSpec]:
        """One spec per published name, in the order the stack lists them."""
        out = []
        endpoints = {c: TrafficEndpoint(address=PENDING_ADDRESS, health_url=self.health_urls.get(c))
                     for c in self.addresses}
        others = [r.name for r in self.dns.records or []]
        for record in self.dns.all_records:
            primary = record.name == self.dns.record_name
            strategy = self.strategy if primary else self.strategies.get(record.strategy)
            if strategy is None:
                where = "dns.strategy" if primary else f"dns.records[{others.index(record.name)}].strategy"
                raise ConfigError.one(where, record.strategy, f"a key of strategies: "
                                      f"{', '.join(sorted(self.strategies)) or '(none defined)'}")
            out.append(FailoverSpec.build(self.dns, strategy, self.routing, self.health_check, endpoints,
                                          azure_tags, record_name=record.name, action=self.action))
        return out


class GlobalTraffic(pulumi.ComponentResource):
    """The global records. Outputs: `plan`, `health`, `record_ids`, `last_change_at` (the
    first name's), `plans` (every name -> its plan), `route53_health_check_ids`,
    `gcp_health_check`."""

    plan: pulumi.Output[dict[str, Any]]
    plans: pulumi.Output[dict[str, Any]]
    health: pulumi.Output[dict[str, Any]]
    record_ids: pulumi.Output[dict[str, list[str]]]
    last_change_at: pulumi.Output[str]

    def __init__(self, name: str, args: GlobalTrafficArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edgefabric:traffic:GlobalTraffic", name, None, opts)
        backends = args.dns.backends
        providers = self._dns_providers(args)
        specs = args.specs(cloud_tags(args.environment, TIER, "azure", dict(args.tags)) if backends.azure_tm else None)

        r53_ids: dict[str, pulumi.Output[str]] = {}
        if backends.route53 is not None and backends.route53.health_check_ids and "aws" in providers:
            r53_ids = self._route53_checks(name, args, providers["aws"])
        gcp_check: pulumi.Output[str] | None = None
        if backends.gcp_dns is not None and "gcp" in providers:
            gcp_check = self._gcp_checks(name, args, providers["gcp"])
        if r53_ids or gcp_check is not None or backends.azure_tm is not None:
            # The native checkers take one check: what they do not run is said in the preview.
            for note in native_check(args.health_check).notes:
                pulumi.log.warn(note, resource=self)

        # The zones it publishes in, created or adopted, one authoritative (edgefabric.tiers.dns_zones).
        tm_targets = {s.record_name: s.backends.azure_tm.relative_dns_name for s in specs if s.backends.azure_tm}
        azure = args.cloud_settings.get("azure")
        self.zones = declare_zones(self, name, args.dns, [s.record_name for s in specs], tm_targets, providers,
                                   args.environment, args.tags,
                                   azure.location if isinstance(azure, AzureCloud) else "westeurope")
        self.names = self.zones.names
        self.failovers: dict[str, WeightedFailover] = {}
        # With the controller in the clusters, `up` reads its Leases there and follows a live one.
        leases = dict(args.clusters) if args.dns.controller.deploy else {}
        for i, spec in enumerate(specs):
            suffix = "" if i == 0 else "-" + spec.record_name.rstrip(".").replace(".", "-")
            self.failovers[spec.record_name] = WeightedFailover(
                f"{name}-failover{suffix}",
                WeightedFailoverArgs(
                    spec, addresses=args.addresses, health_check_ids=r53_ids,
                    # Cloud DNS probes each weighted item with this check and skips an unhealthy one.
                    gcp_health_check=gcp_check, secrets=self._secrets(spec) or None,
                    lease_kubeconfigs={cloud: c.kubeconfig for cloud, c in leases.items()} or None,
                    lease_namespace=CONTROLLER_NAMESPACE if leases else None,
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=self.zones.resources),
            )  # fmt: skip
        self.failover = self.failovers[specs[0].record_name]
        self.plan = self.failover.plan
        self.plans = pulumi.Output.all(**{record: f.plan for record, f in self.failovers.items()})
        self.health = self.failover.health
        self.record_ids = self.failover.record_ids
        self.last_change_at = self.failover.last_change_at
        self.controllers = deploy_controller(self, name, args)
        self.register_outputs({
            "plans": self.plans,
            "plan": self.plan,
            "health": self.health,
            "record_ids": self.record_ids,
            "last_change_at": self.last_change_at,
            "route53_health_check_ids": r53_ids,
            "gcp_health_check": gcp_check,
            "names": self.names,
        })  # fmt: skip

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _secrets(spec: FailoverSpec) -> dict[str, pulumi.Output[str]]:
        """`config:` references become secret inputs; `env:` ones stay names the provider reads."""
        refs: dict[str, str] = {}
        b = spec.backends
        if b.powerdns is not None:
            refs[b.powerdns.api_key_ref] = "dns.backends.powerdns.apiKeyRef"
        if b.azure_tm is not None:
            refs[b.azure_tm.subscription_id_ref] = "dns.backends.azureTm.subscriptionIdRef"
        hc = spec.health_check
        for i, check in enumerate(hc.all_checks):  # the probes' CA bundles, like the backends' keys
            if isinstance(check, HttpCheck) and check.ca_bundle_ref:
                refs[check.ca_bundle_ref] = f"{hc.check_path(i)}.caBundleRef"
        return {ref: secret_output(ref, path) for ref, path in refs.items() if ref.startswith("config:")}

    def _dns_providers(self, args: GlobalTrafficArgs) -> dict[str, pulumi.ProviderResource]:
        """The cores' providers, plus one of its own (a child of this component) for each DNS
        backend's cloud whose core has none (an existing cluster, an ingress, or no core)."""
        out = dict(args.providers)
        for backend, cloud in BACKEND_CLOUD.items():
            settings = args.cloud_settings.get(cloud)
            if getattr(args.dns.backends, backend) is not None and cloud not in out and settings is not None:
                out[cloud] = cloud_provider(settings, cloud_tags(args.environment, TIER, cloud, dict(args.tags)), self)
        return out

    def _route53_checks(self, name: str, args: GlobalTrafficArgs,
                        provider: pulumi.ProviderResource) -> dict[str, pulumi.Output[str]]:
        hc = args.health_check
        native = native_check(hc)
        out: dict[str, pulumi.Output[str]] = {}
        for cloud, address in args.addresses.items():
            # An ingress is an IP or a DNS name (an AWS load balancer reports only a hostname):
            # Route53 probes an IP as given and resolves a name itself at every check.
            target = pulumi.Output.from_input(address)
            check = aws.route53.HealthCheck(
                f"{name}-r53-{cloud}",
                type=native.protocol,
                ip_address=target.apply(lambda a: None if is_name(a) else a),
                fqdn=target.apply(lambda a: a if is_name(a) else None),
                port=native.port,
                resource_path=native.path,
                # Route53 offers 10 s (fast) or 30 s (standard) probing only.
                request_interval=10 if hc.interval_s <= 10 else 30,
                failure_threshold=min(max(hc.failure_threshold, 1), 10),
                tags={**cloud_tags(args.environment, TIER, cloud, dict(args.tags)), "Name": f"{name}-{cloud}"},
                opts=pulumi.ResourceOptions(parent=self, provider=provider),
            )
            out[cloud] = check.id
        return out

    def _gcp_checks(self, name: str, args: GlobalTrafficArgs, provider: pulumi.ProviderResource) -> pulumi.Output[str]:
        """One global check: Cloud DNS routing policies name the check and list the
        endpoints to probe with it, so the check carries no target of its own."""
        hc = args.health_check
        native = native_check(hc)
        interval = max(int(hc.interval_s), 5)
        kwargs: dict[str, Any] = {}
        if native.protocol == "TCP":
            kwargs["tcp_health_check"] = gcp.compute.HealthCheckTcpHealthCheckArgs(port=native.port)
        elif native.protocol == "HTTPS":
            kwargs["https_health_check"] = gcp.compute.HealthCheckHttpsHealthCheckArgs(
                port=native.port, request_path=native.path)
        else:
            kwargs["http_health_check"] = gcp.compute.HealthCheckHttpHealthCheckArgs(
                port=native.port, request_path=native.path)
        check = gcp.compute.HealthCheck(
            f"{name}-gcp",
            description=f"edgefabric {args.environment} global traffic ingress check",
            check_interval_sec=interval,
            timeout_sec=min(max(int(hc.timeout_s), 1), interval),
            healthy_threshold=hc.success_threshold,
            unhealthy_threshold=hc.failure_threshold,
            # Health checks for Cloud DNS routing policies probe from exactly three regions.
            source_regions=GCP_SOURCE_REGIONS,
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
            **kwargs,
        )
        return check.self_link
