"""The GCP cloud core's cluster: a private GKE cluster with a node pool of our own."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from edgefabric.config import GcpCloud
from edgefabric.tiers.cloud_core import CloudCoreArgs, Cluster, exec_kubeconfig


def gke(args: CloudCoreArgs, tags: dict[str, str], parent: pulumi.Resource,
        provider: pulumi.ProviderResource) -> Cluster:
    settings, size = args.settings, args.cluster
    assert isinstance(settings, GcpCloud)  # CloudCoreArgs checks the settings match the cloud
    opts = pulumi.ResourceOptions(parent=parent, provider=provider)
    # The default pool cannot be tuned; replace it with one we own and can scale.
    cluster = gcp.container.Cluster(
        "gcp-cluster", name=args.cluster_name, location=settings.region,
        remove_default_node_pool=True, initial_node_count=1,
        min_master_version=size.kubernetes_version, deletion_protection=args.environment == "prod",
        private_cluster_config={"enable_private_nodes": True,
                                "enable_private_endpoint": not size.api_allowed_cidrs,
                                "master_ipv4_cidr_block": "172.16.0.32/28"},
        master_authorized_networks_config={"cidr_blocks": [
            {"cidr_block": c, "display_name": f"allowed-{i}"} for i, c in enumerate(size.api_allowed_cidrs)
        ]},
        ip_allocation_policy={},
        resource_labels=tags, opts=opts)
    gcp.container.NodePool(
        "gcp-nodes", cluster=cluster.name, location=settings.region,
        node_count=size.node_count,
        autoscaling={"min_node_count": size.min_nodes, "max_node_count": size.max_nodes},
        # `labels` are Kubernetes node labels; `resource_labels` tag the VMs themselves.
        node_config={"machine_type": size.machine_type, "labels": tags,
                     "resource_labels": tags,
                     "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"]},
        opts=opts)
    kubeconfig = pulumi.Output.all(cluster.endpoint, cluster.master_auth.cluster_ca_certificate,
                                   cluster.name).apply(
        lambda a: exec_kubeconfig(f"https://{a[0]}", a[1], a[2], {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "gke-gcloud-auth-plugin", "provideClusterInfo": True,
        }))
    return Cluster(cluster.name, kubeconfig)
