"""edgefabric: load the typed stack config, build the tiers, export the outputs.

Config is parsed and checked in full before the first resource is registered, so a bad
stack file fails with key-path errors and leaves nothing half-created.
"""

import pulumi

from components.cloud_core import CloudCore
from components.config import from_pulumi
from components.edge_nodes import EdgeSiteComponent
from components.providers import cloud_providers
from components.regional_edge import RegionalEdge

cfg = from_pulumi()
providers = cloud_providers(cfg)

cores = {cloud: CloudCore(cloud, cfg, providers) for cloud in cfg.clouds.provisioned}
regions = [RegionalEdge(region, cfg.environment, cores[region.cloud].k8s_provider,
                        opts=pulumi.ResourceOptions(depends_on=[cores[region.cloud]]))
           for region in cfg.regions]
sites = [EdgeSiteComponent(site, i, cfg.edge, cfg.environment) for i, site in enumerate(cfg.edge.sites)]

# Each cloud answers the global name at its core ingress, or at the ingress the stack names.
ingress = {cloud: (pulumi.Output.from_input(cfg.clouds.get(cloud).ingress.address)
                   if cfg.clouds.get(cloud).ingress else cores[cloud].ingress_address)
           for cloud in cfg.clouds.enabled}

pulumi.export("environment", cfg.environment)
pulumi.export("clusters", {cloud: core.cluster_name for cloud, core in cores.items()})
pulumi.export("kubeconfigs", pulumi.Output.secret({cloud: core.kubeconfig for cloud, core in cores.items()}))
pulumi.export("ingress", ingress)
pulumi.export("regions", {r.name: comp.gateway_service for r, comp in zip(cfg.regions, regions)})
pulumi.export("edgeSites", {s.name: comp.services for s, comp in zip(cfg.edge.sites, sites)})
