"""edgefabric: load the typed stack config, build the tiers, export the outputs.

Config is parsed and checked in full before the first resource is registered, so a bad
stack file fails with key-path errors and leaves nothing half-created.
"""

import pulumi

from edgefabric.config import CLOUDS
from edgefabric.tiers.brokers import DataFlowPlan, DataFlowPlanArgs
from edgefabric.tiers.cloud_core import CloudCore, CloudCoreArgs, in_location
from edgefabric.tiers.edge_sites import EdgeSite, EdgeSiteArgs
from edgefabric.tiers.failover_controller import ControllerCluster
from edgefabric.tiers.ledger import GraphRecorder, config_hash, start_ledger
from edgefabric.tiers.regional_edge import RegionalEdge, RegionalEdgeArgs
from edgefabric.tiers.registry import (
    AgentLedger,
    BlockchainRegistry,
    BlockchainRegistryArgs,
    ServiceSpec,
    check_unique_names,
    edge_services,
    image_version,
    regional_services,
)
from edgefabric.tiers.stack import read_stack_config
from edgefabric.tiers.traffic import GlobalTraffic, GlobalTrafficArgs

cfg = read_stack_config()
if cfg.registry is not None and cfg.registry.enabled:  # before any resource: a clash is a ConfigError
    check_unique_names([svc.name for svc in cfg.core.services]
                       + [s.name for s in regional_services(cfg.regions, cfg.environment)
                          + edge_services(cfg.edge.sites, cfg.environment)])
# The deployment ledger hashes the resource graph: watch every registration from here on.
graph = GraphRecorder().start()

# Each tier gets only its slice of the config. Component names are the logical names they
# always had (the cloud, the region, the site): URNs do not change. A cloud that brings its
# cluster (`clouds.<cloud>.cluster`) has no size: its core deploys onto that cluster.
cores = {
    cloud: CloudCore(cloud, CloudCoreArgs(
        cloud=cloud, size=cfg.core.clusters.get(cloud), services=cfg.core.services,
        settings=cfg.clouds.get(cloud), environment=cfg.environment, tags=cfg.tags))
    for cloud in cfg.clouds.provisioned
}
# A region not where its cloud's core runs gets a cluster of its own there: created
# (`regions[].cluster`: the same builders, in the region's location, with no core services, and
# address ranges of its own, its number among its cloud's far regions after the core's 0), or
# one the team runs there (`regions[].kubeconfigRef`).
number = {r.name: 1 + k for cloud in CLOUDS
          for k, r in enumerate(r for r in cfg.regions if r.cloud == cloud and r.cluster is not None)}
region_cores = {
    region.name: CloudCore(region.name, CloudCoreArgs(
        cloud=region.cloud, size=region.cluster, services=[],
        settings=in_location(cfg.clouds.get(region.cloud), region.location, region.kubeconfig_ref),
        environment=cfg.environment, tags=cfg.tags, region=region.name,
        network_index=number.get(region.name, 0)))
    for region in cfg.regions if region.cluster is not None or region.kubeconfig_ref is not None
}
# `dataFlows`: MQTT bridges edge -> region -> core. The brokers are the regions' and sites'
# own services; the plan's transformations mount the configs it renders into them.
flows = DataFlowPlan(DataFlowPlanArgs(data_flows=cfg.data_flows, environment=cfg.environment,
                                      regions=cfg.regions, sites=cfg.edge.sites))
regions = {
    region.name: RegionalEdge(
        region.name,
        RegionalEdgeArgs(region=region, environment=cfg.environment,
                         k8s_provider=region_cores.get(region.name, cores[region.cloud]).k8s_provider),
        opts=pulumi.ResourceOptions(depends_on=[region_cores.get(region.name, cores[region.cloud])],
                                    transformations=flows.region(region)))
    for region in cfg.regions
}
dataflows = flows.deploy({cloud: core.k8s_provider for cloud, core in cores.items()},
                         {r.name: region_cores.get(r.name, cores[r.cloud]).k8s_provider for r in cfg.regions})
sites = {
    site.name: EdgeSite(site.name, EdgeSiteArgs(
        site=site, index=i, environment=cfg.environment,
        node_selector=cfg.edge.node_selector, toleration_key=cfg.edge.toleration_key),
        opts=pulumi.ResourceOptions(transformations=flows.site(site)))
    for i, site in enumerate(cfg.edge.sites)
}
flows.attach_sites()

# Each cloud answers the global name at its core ingress, or at the ingress the stack names.
ingress = {cloud: (pulumi.Output.from_input(cfg.clouds.get(cloud).ingress.address)
                   if cfg.clouds.get(cloud).ingress else cores[cloud].ingress_address)
           for cloud in cfg.clouds.enabled}

pulumi.export("environment", cfg.environment)
pulumi.export("clusters", {name: core.cluster_name for name, core in {**cores, **region_cores}.items()})
pulumi.export("kubeconfigs", pulumi.Output.secret({name: core.kubeconfig
                                                   for name, core in {**cores, **region_cores}.items()}))
pulumi.export("ingress", ingress)
pulumi.export("regions", {name: region.gateway_service for name, region in regions.items()})
pulumi.export("edgeSites", {name: site.services for name, site in sites.items()})
if dataflows is not None:
    pulumi.export("dataFlows", {"caCert": dataflows.ca_cert_pem, "brokers": dataflows.endpoints})

# The deployment ledger's contract comes first (its entry is recorded last, below): the heartbeat
# agents get its address and the hash of the typed config they are deployed with.
config_digest = config_hash(cfg)
ledger = start_ledger("ledger", cfg.registry, config_digest)

if cfg.registry is not None and cfg.registry.enabled:
    # Every core service is registered once, with one endpoint per cloud that answers for it.
    services = [
        ServiceSpec(
            name=svc.name,
            version=image_version(svc.image),
            endpoints=[pulumi.Output.concat("http://", ingress[cloud], f":{svc.ports[0].port}/{svc.name}")
                       for cloud in cfg.clouds.enabled],
            metadata=f'{{"kind":"{svc.kind}","environment":"{cfg.environment}"}}',
        )
        for svc in cfg.core.services
    ]
    # Regional and edge services too, each under `<region|site>-<service>`.
    services += regional_services(cfg.regions, cfg.environment) + edge_services(cfg.edge.sites, cfg.environment)
    registry = BlockchainRegistry("registry", BlockchainRegistryArgs(
        registry=cfg.registry, services=services, environment=cfg.environment,
        k8s_providers={cloud: core.k8s_provider for cloud, core in cores.items()},
        ledger=AgentLedger(address=ledger.address, stack=pulumi.get_stack(), config_hash=config_digest,
                           from_block=ledger.block_number) if ledger is not None else None,
    ))
    pulumi.export("contractAddress", registry.contract_address)
    pulumi.export("chainId", registry.chain_id)
    pulumi.export("serviceIds", registry.service_ids)
    # What consumers pass to discovery: only entries these addresses own are ours.
    pulumi.export("registryPublishers", registry.publishers)

if cfg.dns is not None:
    traffic = GlobalTraffic("global", GlobalTrafficArgs(
        dns=cfg.dns, strategy=cfg.strategies.get(cfg.dns.strategy), routing=cfg.routing,
        strategies=cfg.strategies, action=cfg.failover.action,
        health_check=cfg.health_check, addresses=ingress, environment=cfg.environment, tags=cfg.tags,
        health_urls={cloud: ep.health_url for cloud in cfg.clouds.enabled
                     if (ep := cfg.clouds.get(cloud).ingress) is not None and ep.health_url},
        # Clouds on an existing cluster have no cloud provider (and so no native checkers).
        providers={cloud: core.provider for cloud, core in cores.items() if core.provider is not None},
        # `dns.controller.deploy`: the failover controller runs in every core cluster.
        clusters={cloud: ControllerCluster(core.k8s_provider, core.kubeconfig) for cloud, core in cores.items()},
        failover=cfg.failover, cloud_settings={cloud: cfg.clouds.get(cloud) for cloud in CLOUDS},
    ))
    pulumi.export("dnsRecord", cfg.dns.record_name)
    pulumi.export("dnsWeights", traffic.plan)
    # Every published name -> its plan (weights per answer), each following its own strategy.
    pulumi.export("dnsRecordWeights", traffic.plans)
    pulumi.export("dnsHealth", traffic.health)
    pulumi.export("dnsRecordIds", traffic.record_ids)
    # Where each backend answers for each name: the authority's zone, the secondaries' standby
    # names, the Traffic Manager aliases (README "DNS zones").
    pulumi.export("dnsNames", traffic.names)

# Last, so the graph it hashes is complete: one ledger entry per `up` that changed the code's
# commit, the typed config or the resource graph (`edgefabric audit --stack S` checks it).
# The entry records the hash of the whole typed config; the ledger gets the hash, not the config.
ledger_entry = ledger.record(graph) if ledger is not None else None
if ledger_entry is not None:
    pulumi.export("ledgerEntry", {"seq": ledger_entry.seq, "entryHash": ledger_entry.entry_hash})
