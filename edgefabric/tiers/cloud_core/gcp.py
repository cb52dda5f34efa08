"""The GCP cloud core's cluster: a private GKE cluster in its own network, with a node pool
of our own.

- The network and subnetwork are named explicitly (a project need not have a `default`
  VPC), with secondary ranges for pods and services; Cloud Router + Cloud NAT give the
  private nodes egress to pull images.
- Nodes run as a dedicated service account holding only the logging/monitoring and
  Artifact Registry read roles, and Workload Identity (GKE_METADATA) stops pods from
  borrowing the node's token: no project-wide `cloud-platform` identity for every pod.
- The pool is regional: GKE counts per zone, so the pool sets the location-wide totals
  (`total_min/max_node_count`) and no `node_count` beside the autoscaler (which would
  reset the autoscaler's choice on every `up`).
"""

from __future__ import annotations

import math

import pulumi
import pulumi_gcp as gcp

from edgefabric.config import GcpCloud
from edgefabric.tiers.cloud_core import CloudCoreArgs, Cluster, exec_kubeconfig
from edgefabric.tiers.cloud_core.addresses import gcp_ranges

PODS, SERVICES = "pods", "services"  # the subnetwork's secondary range names
REGION_ZONES = 3  # a regional pool spreads over the region's three zones
NODE_ROLES = ("roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/monitoring.viewer",
              "roles/stackdriver.resourceMetadata.writer", "roles/artifactregistry.reader")


def gke(args: CloudCoreArgs, tags: dict[str, str], parent: pulumi.Resource,
        provider: pulumi.ProviderResource) -> Cluster:
    settings, size = args.settings, args.cluster
    assert isinstance(settings, GcpCloud)  # CloudCoreArgs checks the settings match the cloud
    opts = pulumi.ResourceOptions(parent=parent, provider=provider)
    p = args.prefix  # of the logical names: the cloud, or a region with its own cluster
    name = args.cluster_name
    ranges = gcp_ranges(args.network_index)
    network = gcp.compute.Network(f"{p}-network", name=name, auto_create_subnetworks=False, opts=opts)
    subnet = gcp.compute.Subnetwork(
        f"{p}-subnet", name=f"{name}-nodes", network=network.id, region=settings.region,
        ip_cidr_range=ranges.nodes, private_ip_google_access=True,
        secondary_ip_ranges=[{"range_name": r, "ip_cidr_range": c} for r, c in ((PODS, ranges.pods), (SERVICES, ranges.services))],
        opts=opts)
    router = gcp.compute.Router(f"{p}-router", name=name, network=network.id, region=settings.region, opts=opts)
    nat = gcp.compute.RouterNat(
        f"{p}-nat", name=name, router=router.name, region=settings.region,
        nat_ip_allocate_option="AUTO_ONLY", source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES",
        log_config={"enable": True, "filter": "ERRORS_ONLY"}, opts=opts)
    node_sa = gcp.serviceaccount.Account(
        f"{p}-nodes-sa", account_id=f"{name}-nodes"[:30], display_name=f"{name} GKE nodes", opts=opts)
    grants = [
        gcp.projects.IAMMember(f"{p}-nodes-{role.split('/')[1]}", project=settings.project, role=role,
                               member=node_sa.email.apply(lambda e: f"serviceAccount:{e}"), opts=opts)
        for role in NODE_ROLES
    ]
    # The default pool cannot be tuned; replace it with one we own and can scale.
    cluster = gcp.container.Cluster(
        f"{p}-cluster", name=name, location=settings.region,
        network=network.id, subnetwork=subnet.id,
        remove_default_node_pool=True, initial_node_count=1,
        min_master_version=size.kubernetes_version, deletion_protection=args.environment == "prod",
        private_cluster_config={"enable_private_nodes": True,
                                "enable_private_endpoint": not size.api_allowed_cidrs,
                                "master_ipv4_cidr_block": ranges.master},
        master_authorized_networks_config={"cidr_blocks": [
            {"cidr_block": c, "display_name": f"allowed-{i}"} for i, c in enumerate(size.api_allowed_cidrs)
        ]},
        ip_allocation_policy={"cluster_secondary_range_name": PODS,
                              "services_secondary_range_name": SERVICES},
        workload_identity_config={"workload_pool": f"{settings.project}.svc.id.goog"},
        # The temporary default pool also runs as the dedicated account, not the compute default.
        node_config={"service_account": node_sa.email,
                     "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"]},
        resource_labels=tags,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=grants)))
    gcp.container.NodePool(
        f"{p}-nodes", cluster=cluster.name, location=settings.region,
        # Nodes follow the control plane's version.
        version=cluster.master_version,
        # Per zone at creation; the autoscaler owns the count afterwards.
        initial_node_count=math.ceil(size.node_count / REGION_ZONES),
        autoscaling={"total_min_node_count": size.min_nodes, "total_max_node_count": size.max_nodes,
                     "location_policy": "BALANCED"},
        # `labels` are Kubernetes node labels; `resource_labels` tag the VMs themselves.
        node_config={"machine_type": size.machine_type, "labels": tags,
                     "resource_labels": tags,
                     "service_account": node_sa.email,
                     # With a dedicated account, IAM (its roles) bounds access, not scopes.
                     "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                     "workload_metadata_config": {"mode": "GKE_METADATA"}},
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            depends_on=[nat, *grants], ignore_changes=["initialNodeCount"])))
    kubeconfig = pulumi.Output.all(cluster.endpoint, cluster.master_auth.cluster_ca_certificate,
                                   cluster.name).apply(
        lambda a: exec_kubeconfig(f"https://{a[0]}", a[1], a[2], {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "gke-gcloud-auth-plugin", "provideClusterInfo": True,
            # The plugin ignores Application Default Credentials (what CI's workload identity
            # federation provides) unless told to use them.
            "args": ["--use_application_default_credentials"],
        }))
    return Cluster(cluster.name, kubeconfig)
