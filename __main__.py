"""edgefabric: load the typed stack config, build the tiers, export the outputs.

Config is parsed and checked in full before the first resource is registered, so a bad
stack file fails with key-path errors and leaves nothing half-created.
"""

import pulumi

from edgefabric.tiers.cloud_core import CloudCore, CloudCoreArgs
from edgefabric.tiers.edge_sites import EdgeSite, EdgeSiteArgs
from edgefabric.tiers.regional_edge import RegionalEdge, RegionalEdgeArgs
from edgefabric.tiers.registry import BlockchainRegistry, BlockchainRegistryArgs, ServiceSpec
from edgefabric.tiers.stack import read_stack_config
from edgefabric.tiers.traffic import GlobalTraffic, GlobalTrafficArgs

cfg = read_stack_config()

# Each tier gets only its slice of the config. Component names are the logical names they
# always had (the cloud, the region, the site): URNs do not change. A cloud that brings its
# cluster (`clouds.<cloud>.cluster`) has no size: its core deploys onto that cluster.
cores = {
    cloud: CloudCore(cloud, CloudCoreArgs(
        cloud=cloud, size=cfg.core.clusters.get(cloud), services=cfg.core.services,
        settings=cfg.clouds.get(cloud), environment=cfg.environment, tags=cfg.tags))
    for cloud in cfg.clouds.provisioned
}
regions = {
    region.name: RegionalEdge(
        region.name,
        RegionalEdgeArgs(region=region, environment=cfg.environment,
                         k8s_provider=cores[region.cloud].k8s_provider),
        opts=pulumi.ResourceOptions(depends_on=[cores[region.cloud]]))
    for region in cfg.regions
}
sites = {
    site.name: EdgeSite(site.name, EdgeSiteArgs(
        site=site, index=i, environment=cfg.environment,
        node_selector=cfg.edge.node_selector, toleration_key=cfg.edge.toleration_key))
    for i, site in enumerate(cfg.edge.sites)
}

# Each cloud answers the global name at its core ingress, or at the ingress the stack names.
ingress = {cloud: (pulumi.Output.from_input(cfg.clouds.get(cloud).ingress.address)
                   if cfg.clouds.get(cloud).ingress else cores[cloud].ingress_address)
           for cloud in cfg.clouds.enabled}

pulumi.export("environment", cfg.environment)
pulumi.export("clusters", {cloud: core.cluster_name for cloud, core in cores.items()})
pulumi.export("kubeconfigs", pulumi.Output.secret({cloud: core.kubeconfig for cloud, core in cores.items()}))
pulumi.export("ingress", ingress)
pulumi.export("regions", {name: region.gateway_service for name, region in regions.items()})
pulumi.export("edgeSites", {name: site.services for name, site in sites.items()})

if cfg.registry is not None and cfg.registry.enabled:
    # Every core service is registered once, with one endpoint per cloud that answers for it.
    services = [
        ServiceSpec(
            name=svc.name,
            version=svc.image.rsplit(":", 1)[-1],
            endpoints=[pulumi.Output.concat("http://", ingress[cloud], f":{svc.ports[0].port}/{svc.name}")
                       for cloud in cfg.clouds.enabled],
            metadata=f'{{"kind":"{svc.kind}","environment":"{cfg.environment}"}}',
        )
        for svc in cfg.core.services
    ]
    registry = BlockchainRegistry("registry", BlockchainRegistryArgs(
        registry=cfg.registry, services=services, environment=cfg.environment,
        k8s_providers={cloud: core.k8s_provider for cloud, core in cores.items()},
    ))
    pulumi.export("contractAddress", registry.contract_address)
    pulumi.export("chainId", registry.chain_id)
    pulumi.export("serviceIds", registry.service_ids)

if cfg.dns is not None:
    traffic = GlobalTraffic("global", GlobalTrafficArgs(
        dns=cfg.dns, strategy=cfg.strategies[cfg.dns.strategy], routing=cfg.routing,
        health_check=cfg.health_check, addresses=ingress, environment=cfg.environment, tags=cfg.tags,
        health_urls={cloud: ep.health_url for cloud in cfg.clouds.enabled
                     if (ep := cfg.clouds.get(cloud).ingress) is not None and ep.health_url},
        # Clouds on an existing cluster have no cloud provider (and so no native checkers).
        providers={cloud: core.provider for cloud, core in cores.items() if core.provider is not None},
    ))
    pulumi.export("dnsRecord", cfg.dns.record_name)
    pulumi.export("dnsWeights", traffic.plan)
    pulumi.export("dnsHealth", traffic.health)
    pulumi.export("dnsRecordIds", traffic.record_ids)
