"""Who talks to whom: the brokers of a stack and the bridges between them.

    devices ──► edge broker (site S) ══TLS══► region broker (R) ══TLS══► core broker (cloud of R)
                 up/S/#  ─────────────────────►  up/S/#, regionalUp/R/# ─────►
                 down/# (retained) ◄───────────  down/# (retained) ◄──────────  published here

Every broker has a server certificate (common name = its key) and, except the core, a
bridge client certificate (`bridge-<key>`). Local clients authenticate with the tier's own
client certificate: `site-<S>` at an edge broker, `region-<R>` at a region, `core-<cloud>`
at a core. The common name is the MQTT user name the ACLs are written for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from edgefabric.config import DataFlowsConfig, StackConfig, TierBuffer

Tier = Literal["edge", "region", "core"]


@dataclass(frozen=True)
class Broker:
    """One Mosquitto broker. `key` is unique in the stack and is its server certificate's
    common name; `upstream` is the key of the broker it bridges to (None at the core)."""

    tier: Tier
    name: str  # the site, region or cloud
    upstream: str | None
    buffer: TierBuffer

    @property
    def key(self) -> str:
        return f"{self.tier}-{self.name}"

    @property
    def bridge_identity(self) -> str | None:
        """The common name of the client certificate this broker's bridge presents upstream."""
        return f"bridge-{self.key}" if self.upstream else None

    @property
    def local_identity(self) -> str:
        """The common name local clients of this broker present (devices, regional services, operators)."""
        return {"edge": "site", "region": "region", "core": "core"}[self.tier] + f"-{self.name}"


@dataclass(frozen=True)
class Topology:
    flows: DataFlowsConfig
    brokers: tuple[Broker, ...]

    def broker(self, key: str) -> Broker:
        for broker in self.brokers:
            if broker.key == key:
                return broker
        raise KeyError(f"no broker {key!r}; brokers: {', '.join(b.key for b in self.brokers)}")

    def of_tier(self, tier: Tier) -> list[Broker]:
        return [b for b in self.brokers if b.tier == tier]

    def downstream(self, key: str) -> list[Broker]:
        """The brokers that bridge to `key`."""
        return [b for b in self.brokers if b.upstream == key]

    def sites_under(self, key: str) -> list[str]:
        """The edge sites whose data passes through broker `key` (its own, for an edge broker)."""
        broker = self.broker(key)
        if broker.tier == "edge":
            return [broker.name]
        return [site for child in self.downstream(key) for site in self.sites_under(child.key)]

    def regions_under(self, key: str) -> list[str]:
        broker = self.broker(key)
        if broker.tier == "region":
            return [broker.name]
        return [b.name for b in self.downstream(key) if b.tier == "region"]

    def client_identities(self) -> list[str]:
        """Every client certificate the stack issues: one per broker for its local clients,
        and one per bridge."""
        out = [b.local_identity for b in self.brokers]
        return out + [b.bridge_identity for b in self.brokers if b.bridge_identity]


def topology_of(flows: DataFlowsConfig, region_clouds: Mapping[str, str]) -> Topology:
    """The brokers for `flows.sites` (site → region) and `region_clouds` (region → cloud).
    Config validation has already checked that every site names a known region."""
    brokers: list[Broker] = []
    for cloud in sorted(set(region_clouds.values())):
        brokers.append(Broker("core", cloud, None, flows.buffers.core))
    for region, cloud in region_clouds.items():
        brokers.append(Broker("region", region, f"core-{cloud}", flows.buffers.region))
    for site, region in flows.sites.items():
        brokers.append(Broker("edge", site, f"region-{region}", flows.buffers.edge))
    return Topology(flows, tuple(brokers))


def topology(cfg: StackConfig) -> Topology | None:
    """The stack's brokers, or None when `dataFlows` is absent or disabled."""
    if cfg.data_flows is None or not cfg.data_flows.enabled:
        return None
    return topology_of(cfg.data_flows, {r.name: r.cloud for r in cfg.regions})
