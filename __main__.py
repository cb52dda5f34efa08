"""edgefabric: load the typed stack config, build the tiers, export the outputs.

Config is parsed and checked in full before the first resource is registered, so a bad
stack file fails with key-path errors and leaves nothing half-created.
"""

import pulumi

from components.cloud_core import CloudCore
from components.config import from_pulumi
from components.edge_nodes import EdgeSiteComponent
from components.regional_edge import RegionalEdge

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
