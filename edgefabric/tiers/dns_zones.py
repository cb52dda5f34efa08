"""The DNS zones global traffic publishes in: created or explicitly adopted, one authoritative.

`dns.authority` names the zone that answers for the published names
(`edgefabric.config.zones`). Declared here, under the GlobalTraffic component:

- each cloud zone (Route53 hosted zone, Cloud DNS managed zone): created, or with
  `adopt: true` read through the cloud's lookup (it must exist; it is never deleted);
- an NS delegation in the authority's zone for every other zone (a secondary), carrying the
  name servers the secondary's zone reports;
- the Traffic Manager resource group (created, or adopted), and for every published name a
  CNAME in the authority's zone, `<first label>.tm.<parent>` -> the profile's
  `<relativeDnsName>.trafficmanager.net`.

The WeightedFailover resources depend on all of it, so `up` creates the zones before it
writes into them, and `destroy` removes the weighted records before the zones that hold them.
PowerDNS zones belong to the server (the local env creates its zone); nothing here for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_azure_native as azure_native
import pulumi_gcp as gcp

from edgefabric.config import DnsConfig, zones
from edgefabric.config.models import GcpDnsBackend, Route53Backend
from edgefabric.tiers.labels import cloud_tags

# Each zone backend's cloud: its provider creates or reads the zone.
BACKEND_CLOUD = {"route53": "aws", "gcp_dns": "gcp", "azure_tm": "azure"}
# The TTL of delegations (NS) and aliases (CNAME): they change only when a zone is recreated.
DELEGATION_TTL_S = 3600


@dataclass
class Zone:
    """A cloud zone as the program knows it: the handle records are written with (Route53's
    zone id, Cloud DNS's managed-zone name), and the name servers it reports."""

    backend: str
    dns_name: str  # FQDN with trailing dot
    handle: pulumi.Output[str]
    name_servers: pulumi.Output[Sequence[str]]
    project: str | None = None  # Cloud DNS: the zone's project


@dataclass
class DnsZones:
    """What was declared: the resources the failovers wait for, and where each backend
    publishes each name (`names[record][backend]`)."""

    resources: list[pulumi.Resource] = field(default_factory=list)
    names: dict[str, dict[str, str]] = field(default_factory=dict)


def published_names(dns: DnsConfig, records: Sequence[str], tm_targets: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """record -> backend (as `dns.backends` spells it) -> the name it answers at: the record itself at the
    authority, `<first label>.<zone>` at a secondary, the CNAME alias for Traffic Manager
    (`tm_targets`: record -> its profile's relative DNS name)."""
    authority = dns.authority_backend
    out: dict[str, dict[str, str]] = {}
    for record in records:
        names: dict[str, str] = {}
        for backend in dns.backends.names:
            if backend == "azure_tm":
                if authority is not None and record in tm_targets:
                    names[backend] = zones.tm_alias(record)
            elif backend == authority or authority is None:
                names[backend] = record
            elif backend in dns.zones:
                names[backend] = zones.secondary_name(record, dns.zones[backend])
        out[record] = {zones.CONFIG_KEYS[k]: v for k, v in names.items()}
    return out


def declare_zones(
    parent: pulumi.Resource,
    name: str,
    dns: DnsConfig,
    records: Sequence[str],
    tm_targets: Mapping[str, str],
    providers: Mapping[str, pulumi.ProviderResource],
    environment: str,
    tags: Mapping[str, str],
    azure_location: str,
) -> DnsZones:
    """Zones, delegations, the Traffic Manager resource group and aliases (module docstring),
    each through its cloud's provider in `providers` (GlobalTraffic makes one for a DNS
    backend's cloud whose core has none)."""
    out = DnsZones(names=published_names(dns, records, tm_targets))
    authority = dns.authority_backend
    if authority is None:
        return out  # several zone backends and none named: a spec built outside a stack's rules
    b = dns.backends
    cloud_zones: dict[str, Zone] = {}
    if b.route53 is not None and "aws" in providers:
        cloud_zones["route53"] = _route53_zone(parent, name, b.route53, providers["aws"], environment, tags, out)
    if b.gcp_dns is not None and b.gcp_dns.dns_name and "gcp" in providers:
        cloud_zones["gcp_dns"] = _gcp_zone(parent, name, b.gcp_dns, providers["gcp"], environment, tags, out)
    top = cloud_zones.get(authority)
    if top is None:
        return out
    provider = providers[BACKEND_CLOUD[top.backend]]
    for zone in cloud_zones.values():
        if zone is not top:
            out.resources.append(_record(parent, f"{name}-delegate-{BACKEND_CLOUD[zone.backend]}", top, provider, zone.dns_name,
                                         "NS", zone.name_servers))
    if b.azure_tm is not None:
        if not b.azure_tm.adopt and "azure" in providers:
            out.resources.append(azure_native.resources.ResourceGroup(
                f"{name}-tm-rg", resource_group_name=b.azure_tm.resource_group, location=azure_location,
                tags=cloud_tags(environment, "traffic", "azure", dict(tags)),
                opts=pulumi.ResourceOptions(parent=parent, provider=providers["azure"])))
        for i, (record, relative) in enumerate(tm_targets.items()):
            suffix = "" if i == 0 else f"-{zones.first_label(record)}"
            out.resources.append(_record(parent, f"{name}-tm-alias{suffix}", top, provider, zones.tm_alias(record),
                                         "CNAME", pulumi.Output.from_input([zones.tm_target(relative)])))
    return out


def _route53_zone(parent: pulumi.Resource, name: str, s: Route53Backend, provider: pulumi.ProviderResource,
                  environment: str, tags: Mapping[str, str], out: DnsZones) -> Zone:
    if s.adopt:
        found = aws.route53.get_zone_output(zone_id=s.hosted_zone_id, name=None if s.hosted_zone_id else
                                            s.zone_name.rstrip("."), private_zone=False,
                                            opts=pulumi.InvokeOptions(provider=provider, parent=parent))
        return Zone("route53", s.zone_name, found.zone_id, found.name_servers)
    zone = aws.route53.Zone(
        f"{name}-zone-route53", name=s.zone_name.rstrip("."), comment=f"edgefabric {environment} global traffic",
        tags=cloud_tags(environment, "traffic", "aws", dict(tags)),
        opts=pulumi.ResourceOptions(parent=parent, provider=provider))
    out.resources.append(zone)
    return Zone("route53", s.zone_name, zone.zone_id, zone.name_servers)


def _gcp_zone(parent: pulumi.Resource, name: str, s: GcpDnsBackend, provider: pulumi.ProviderResource,
              environment: str, tags: Mapping[str, str], out: DnsZones) -> Zone:
    if s.adopt:
        found = gcp.dns.get_managed_zone_output(name=s.managed_zone, project=s.project,
                                                opts=pulumi.InvokeOptions(provider=provider, parent=parent))
        return Zone("gcp_dns", s.dns_name or "", found.name, found.name_servers, s.project)
    zone = gcp.dns.ManagedZone(
        f"{name}-zone-gcp", name=s.managed_zone, dns_name=s.dns_name, project=s.project, visibility="public",
        description=f"edgefabric {environment} global traffic",
        labels=cloud_tags(environment, "traffic", "gcp", dict(tags)),
        opts=pulumi.ResourceOptions(parent=parent, provider=provider))
    out.resources.append(zone)
    return Zone("gcp_dns", s.dns_name or "", zone.name, zone.name_servers, s.project)


def _record(parent: pulumi.Resource, logical: str, zone: Zone, provider: pulumi.ProviderResource, record: str,
            kind: str, values: pulumi.Output[Sequence[str]]) -> pulumi.Resource:
    """One record set in the authority's zone (an NS delegation or a CNAME alias)."""
    opts = pulumi.ResourceOptions(parent=parent, provider=provider)
    if zone.backend == "route53":
        return aws.route53.Record(logical, zone_id=zone.handle, name=record.rstrip("."), type=kind,
                                  ttl=DELEGATION_TTL_S, records=values, opts=opts)
    # Cloud DNS takes names and targets as FQDNs; Route53 reports its name servers without the dot.
    fqdns = values.apply(lambda vs: [v if v.endswith(".") else v + "." for v in vs])
    return gcp.dns.RecordSet(logical, managed_zone=zone.handle, project=zone.project, name=record, type=kind,
                             ttl=DELEGATION_TTL_S, rrdatas=fqdns, opts=opts)
