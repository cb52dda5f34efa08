"""Global traffic: one public name answered with health-based weights across the clouds.

`GlobalTraffic` wires each cloud's ingress address (a pulumi Input: the cloud core's
load-balancer address, or the ingress the stack names) into a `WeightedFailover`
dynamic resource, which probes, plans and writes the weighted answers into every
configured DNS backend (Route53, Azure Traffic Manager, Cloud DNS, PowerDNS).

Where a cloud is enabled and its provider is passed in, the cloud's own checkers are
declared too, with the same thresholds, so each fails over on its own even when nobody
runs `pulumi up` or the controller:
- AWS: one `aws.route53.HealthCheck` per cloud endpoint; their ids are attached to the
  Route53 weighted sets (only when the route53 backend is configured: a check with no
  record to steer would cost money and do nothing);
- Azure: the Traffic Manager profile's monitor config, written by the azure_tm backend
  from the same health settings (the profile belongs to the dynamic resource, so there
  is no second resource to declare here);
- GCP: one `gcp.compute.HealthCheck` (global, probing from three source regions) for
  Cloud DNS routing policies (when the gcp_dns backend is set).

Logical names are stable: `<name>-failover`, `<name>-r53-<cloud>`, `<name>-gcp`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp

from edgefabric.config import StackConfig, failover_spec
from edgefabric.tiers.labels import cloud_tags
from edgefabric.tiers.secrets import resolve
from edgefabric.dynamic.failover import WeightedFailover, WeightedFailoverArgs

TIER = "traffic"
GCP_SOURCE_REGIONS = ["us-east1", "europe-west1", "asia-southeast1"]


class GlobalTraffic(pulumi.ComponentResource):
    """The global record. Outputs: `plan`, `health`, `record_ids`, `last_change_at`,
    `route53_health_check_ids`, `gcp_health_check`."""

    plan: pulumi.Output[dict[str, Any]]
    health: pulumi.Output[dict[str, Any]]
    record_ids: pulumi.Output[dict[str, list[str]]]
    last_change_at: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        endpoints: Mapping[str, pulumi.Input[str]],
        providers: Mapping[str, pulumi.ProviderResource] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("edgefabric:traffic:GlobalTraffic", name, None, opts)
        if cfg.dns is None:
            raise ValueError("edgefabric:dns: GlobalTraffic needs the dns section")
        providers = dict(providers or {})
        clouds = [c for c in cfg.traffic_clouds if c in endpoints]
        missing = [c for c in cfg.traffic_clouds if c not in endpoints]
        if missing:
            raise ValueError(f"GlobalTraffic endpoints: no address for enabled cloud(s) {missing}")
        backends = cfg.dns.backends

        r53_ids: dict[str, pulumi.Output[str]] = {}
        if backends.route53 is not None and backends.route53.health_check_ids and "aws" in providers:
            r53_ids = self._route53_checks(name, cfg, clouds, endpoints, providers["aws"])
        gcp_check: pulumi.Output[str] | None = None
        if backends.gcp_dns is not None and "gcp" in providers:
            gcp_check = self._gcp_checks(name, cfg, providers["gcp"])

        spec = failover_spec(cfg, {c: endpoints[c] for c in clouds})
        if "azure_tm" in spec["backends"]:
            spec["backends"]["azure_tm"]["tags"] = cloud_tags(cfg.environment, TIER, "azure", cfg.tags)
        if gcp_check is not None:
            # Cloud DNS probes each weighted item with this check and skips an unhealthy one.
            spec["backends"]["gcp_dns"]["health_check"] = gcp_check
        self.failover = WeightedFailover(
            f"{name}-failover",
            WeightedFailoverArgs(**spec, health_check_ids=r53_ids, secrets=self._secrets(cfg) or None),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.plan = self.failover.plan
        self.health = self.failover.health
        self.record_ids = self.failover.record_ids
        self.last_change_at = self.failover.last_change_at
        self.register_outputs({
            "plan": self.plan,
            "health": self.health,
            "record_ids": self.record_ids,
            "last_change_at": self.last_change_at,
            "route53_health_check_ids": r53_ids,
            "gcp_health_check": gcp_check,
        })  # fmt: skip

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _secrets(cfg: StackConfig) -> dict[str, pulumi.Output[str]]:
        """`config:` references become secret inputs; `env:` ones stay names the provider reads."""
        assert cfg.dns is not None
        refs: dict[str, str] = {}
        b = cfg.dns.backends
        if b.powerdns is not None:
            refs[b.powerdns.api_key_ref] = "dns.backends.powerdns.apiKeyRef"
        if b.azure_tm is not None:
            refs[b.azure_tm.subscription_id_ref] = "dns.backends.azureTm.subscriptionIdRef"
        return {ref: resolve(ref, path) for ref, path in refs.items() if ref.startswith("config:")}

    def _check_port_path(self, cfg: StackConfig) -> tuple[str, int, str]:
        check = cfg.health_check.check
        if check.type == "tcp":
            return "TCP", check.port, "/"
        if check.type == "http":
            return ("HTTPS" if check.scheme == "https" else "HTTP"), check.port, check.path
        # Native checkers cannot run a command; they probe http on 80 as the closest stand-in.
        return "HTTP", 80, "/"

    def _route53_checks(
        self,
        name: str,
        cfg: StackConfig,
        clouds: list[str],
        endpoints: Mapping[str, pulumi.Input[str]],
        provider: pulumi.ProviderResource,
    ) -> dict[str, pulumi.Output[str]]:
        hc = cfg.health_check
        protocol, port, path = self._check_port_path(cfg)
        out: dict[str, pulumi.Output[str]] = {}
        for cloud in clouds:
            check = aws.route53.HealthCheck(
                f"{name}-r53-{cloud}",
                type=protocol,
                ip_address=endpoints[cloud],
                port=port,
                resource_path=path if protocol != "TCP" else None,
                # Route53 offers 10 s (fast) or 30 s (standard) probing only.
                request_interval=10 if hc.interval_s <= 10 else 30,
                failure_threshold=min(max(hc.failure_threshold, 1), 10),
                tags={**cloud_tags(cfg.environment, TIER, cloud, cfg.tags), "Name": f"{name}-{cloud}"},
                opts=pulumi.ResourceOptions(parent=self, provider=provider),
            )
            out[cloud] = check.id
        return out

    def _gcp_checks(self, name: str, cfg: StackConfig, provider: pulumi.ProviderResource) -> pulumi.Output[str]:
        """One global check: Cloud DNS routing policies name the check and list the
        endpoints to probe with it, so the check carries no target of its own."""
        hc = cfg.health_check
        protocol, port, path = self._check_port_path(cfg)
        interval = max(int(hc.interval_s), 5)
        kwargs: dict[str, Any] = {}
        if protocol == "TCP":
            kwargs["tcp_health_check"] = gcp.compute.HealthCheckTcpHealthCheckArgs(port=port)
        elif protocol == "HTTPS":
            kwargs["https_health_check"] = gcp.compute.HealthCheckHttpsHealthCheckArgs(port=port, request_path=path)
        else:
            kwargs["http_health_check"] = gcp.compute.HealthCheckHttpHealthCheckArgs(port=port, request_path=path)
        check = gcp.compute.HealthCheck(
            f"{name}-gcp",
            description=f"edgefabric {cfg.environment} global traffic ingress check",
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
