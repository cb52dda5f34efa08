"""The Azure cloud core's cluster: AKS in its own resource group."""

from __future__ import annotations

import base64

import pulumi
import pulumi_azure_native as azure_native

from edgefabric.config import AzureCloud
from edgefabric.tiers.cloud_core import CloudCoreArgs, Cluster


def aks(args: CloudCoreArgs, tags: dict[str, str], parent: pulumi.Resource,
        provider: pulumi.ProviderResource) -> Cluster:
    settings, size = args.settings, args.cluster
    assert isinstance(settings, AzureCloud)  # CloudCoreArgs checks the settings match the cloud
    opts = pulumi.ResourceOptions(parent=parent, provider=provider)
    p = args.prefix  # of the logical names: the cloud, or a region with its own cluster
    group = azure_native.resources.ResourceGroup(
        f"{p}-rg", resource_group_name=args.cluster_name,
        location=settings.location, tags=tags, opts=opts)
    cs = azure_native.containerservice
    cluster = cs.ManagedCluster(
        f"{p}-cluster",
        resource_group_name=group.name,
        location=settings.location,
        dns_prefix=args.cluster_name,
        kubernetes_version=size.kubernetes_version,
        identity=cs.ManagedClusterIdentityArgs(type=cs.ResourceIdentityType.SYSTEM_ASSIGNED),
        agent_pool_profiles=[cs.ManagedClusterAgentPoolProfileArgs(
            name="system", mode="System", vm_size=size.machine_type,
            count=size.node_count, enable_auto_scaling=True,
            min_count=size.min_nodes, max_count=size.max_nodes, os_type="Linux",
            # The pool follows the control plane's version.
            orchestrator_version=size.kubernetes_version,
        )],
        # No local admin account (whose client certificate would sit in state and outputs):
        # Entra ID sign-in, authorised by Azure RBAC.
        disable_local_accounts=True,
        aad_profile=cs.ManagedClusterAADProfileArgs(managed=True, enable_azure_rbac=True),
        api_server_access_profile=cs.ManagedClusterAPIServerAccessProfileArgs(
            enable_private_cluster=not size.api_allowed_cidrs,
            authorized_ip_ranges=size.api_allowed_cidrs or None,
        ),
        tags=tags, opts=opts)
    # AKS hands out a ready kubeconfig (base64) rather than an endpoint and a CA; `exec` makes
    # it sign in through kubelogin (Entra ID) instead of carrying a credential.
    creds = azure_native.containerservice.list_managed_cluster_user_credentials_output(
        resource_group_name=group.name, resource_name=cluster.name, format="exec",
        opts=pulumi.InvokeOutputOptions(parent=parent, provider=provider))
    kubeconfig = creds.kubeconfigs[0].value.apply(lambda v: base64.b64decode(v).decode())
    return Cluster(cluster.name, kubeconfig)
