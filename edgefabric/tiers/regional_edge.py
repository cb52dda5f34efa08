"""Tier 2, the regional edge: per region, the regional services on that cloud's core cluster.

Each region lives in one cloud and gets its own namespace on that cloud's core cluster:
a regional gateway, a content cache, local analytics and device management (an MQTT
broker, e.g. eclipse-mosquitto). The cluster is reached through the explicit provider the
`CloudCore` exposes; nothing here uses an ambient provider.

A regional edge sees only its region's config and the environment (`RegionalEdgeArgs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from edgefabric.config import Region
from edgefabric.tiers.labels import k8s_labels
from edgefabric.tiers.network_policies import listeners, namespace_policies
from edgefabric.tiers.workloads import PodShape, default_limits, deploy_service, lb_annotations

TIER = "regional-edge"


@dataclass(frozen=True)
class RegionalEdgeArgs:
    """One region's slice of the stack config, and the cluster it deploys onto."""

    region: Region  # `regions[i]`
    environment: str
    k8s_provider: k8s.Provider  # the `CloudCore.k8s_provider` of the region's cloud


class RegionalEdge(pulumi.ComponentResource):
    """The regional services of one region. Output: `gateway_service` (in-cluster DNS name)."""

    gateway_service: pulumi.Output[str]

    def __init__(self, name: str, args: RegionalEdgeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edgefabric:edge:RegionalEdge", name, None, opts)
        region, k8s_provider = args.region, args.k8s_provider
        labels = {**k8s_labels(args.environment, TIER, region.cloud), "edgefabric.io/region": region.name}
        child = pulumi.ResourceOptions(parent=self, provider=k8s_provider)
        namespace = f"region-{region.name}"
        ns = k8s.core.v1.Namespace(
            f"{region.name}-ns", metadata=k8s.meta.v1.ObjectMetaArgs(name=namespace, labels=labels), opts=child)
        gateway = ""
        # A cache's origin is the region's first gateway (config rules require one).
        origin = next((f"{s.name}.{namespace}.svc.cluster.local:{s.ports[0].port}"
                       for s in region.services if s.kind == "regional-gateway"), None)
        for svc in region.services:
            cpu_limit, memory_limit = default_limits(svc)
            deployed = deploy_service(
                f"{region.name}-{svc.name}", svc, namespace=namespace, namespace_resource=ns,
                shape=PodShape(labels=labels, cpu_limit=cpu_limit, memory_limit=memory_limit),
                provider=k8s_provider, parent=self,
                # Devices connect to the broker from outside the cluster.
                service_type="LoadBalancer" if svc.kind in ("regional-gateway", "device-management")
                else "ClusterIP",
                backend=origin if svc.kind == "content-cache" else None,
                # The broker speaks plain MQTT: public only to the declared ranges, else internal.
                service_annotations=lb_annotations(
                    region.cloud, internal=svc.kind == "device-management" and not region.device_source_ranges)
                if svc.kind in ("regional-gateway", "device-management") else None,
                source_ranges=region.device_source_ranges if svc.kind == "device-management" else None,
            )
            if svc.kind == "regional-gateway" and not gateway:
                gateway = svc.name
                self.gateway_service = pulumi.Output.concat(
                    deployed.service.metadata.name, f".{namespace}.svc")
        # The gateway and the broker are load-balanced (as above); the rest only in-region.
        namespace_policies(region.name, namespace, listeners(region.services, exposed=[
            s.name for s in region.services if s.kind in ("regional-gateway", "device-management")]),
            labels=labels, provider=k8s_provider, namespace_resource=ns, parent=self)
        if not gateway:
            self.gateway_service = pulumi.Output.from_input("")
        self.register_outputs({"gateway_service": self.gateway_service})
