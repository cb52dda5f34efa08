"""edgefabric: load the typed stack config, build the tiers, export the outputs.

Config is parsed and checked in full before the first resource is registered, so a bad
stack file fails with key-path errors and leaves nothing half-created.
"""

import pulumi

from edgefabric.tiers.cloud_core import CloudCore
from edgefabric.config import from_pulumi
from edgefabric.tiers.edge_sites import EdgeSiteComponent
from edgefabric.tiers.regional_edge import RegionalEdge
from edgefabric.tiers.registry import BlockchainRegistry, ServiceSpec
from edgefabric.tiers.secrets import env_name, resolve
from edgefabric.tiers.traffic import GlobalTraffic

cfg = from_pulumi()

cores = {cloud: CloudCore(cloud, cfg) for cloud in cfg.clouds.provisioned}
regions = {region.name: RegionalEdge(region, cfg.environment, cores[region.cloud].k8s_provider,
                                     opts=pulumi.ResourceOptions(depends_on=[cores[region.cloud]]))
           for region in cfg.regions}
sites = {site.name: EdgeSiteComponent(site, i, cfg.edge, cfg.environment)
         for i, site in enumerate(cfg.edge.sites)}

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
    ref = cfg.registry.deployer_key_ref
    registry = BlockchainRegistry(
        "registry", cfg.registry, services, environment=cfg.environment,
        deployer_key=None if env_name(ref) else resolve(ref, "registry.deployerKeyRef"),
        k8s_providers={cloud: core.k8s_provider for cloud, core in cores.items()},
    )
    pulumi.export("contractAddress", registry.contract_address)
    pulumi.export("chainId", registry.chain_id)
    pulumi.export("serviceIds", registry.service_ids)

if cfg.dns is not None:
    traffic = GlobalTraffic("global", cfg, ingress,
                            providers={cloud: core.provider for cloud, core in cores.items()})
    pulumi.export("dnsRecord", cfg.dns.record_name)
    pulumi.export("dnsWeights", traffic.plan)
    pulumi.export("dnsHealth", traffic.health)
    pulumi.export("dnsRecordIds", traffic.record_ids)
