"""Tier 1, the cloud core: one managed Kubernetes cluster per cloud, running the core services.

One `CloudCore` per enabled cloud (EKS, AKS or GKE). Each builds its cluster, turns the
cluster's outputs into a kubeconfig (a secret), makes its own `kubernetes.Provider` from
it, and deploys the core services through that provider: the global API gateway behind a
LoadBalancer Service, data analytics, user management and business logic.

Logical names are stable (`<cloud>-vpc`, `<cloud>-cluster`, `<cloud>-<service>`). Renaming
one, or moving it to another parent, needs an `aliases=` entry or the engine replaces it.
"""

from __future__ import annotations

import base64
import json

import pulumi
import pulumi_aws as aws
import pulumi_azure_native as azure_native
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from edgefabric.config import ClusterSize, CoreService, StackConfig
from edgefabric.tiers.labels import cloud_tags, k8s_labels
from edgefabric.tiers.cloud_providers import cloud_provider
from edgefabric.tiers.workloads import PodShape, default_limits, deploy_service

TIER = "core"
CORE_NAMESPACE = "edgefabric-core"


class CloudCore(pulumi.ComponentResource):
    """A managed cluster in one cloud and the core services on it.

    Outputs: `cluster_name`, `kubeconfig` (secret), `ingress_address` (the API gateway's
    load-balancer address), and `k8s_provider` for other tiers that deploy onto this cluster.
    """

    cluster_name: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    ingress_address: pulumi.Output[str]

    def __init__(self, cloud: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edgefabric:core:CloudCore", cloud, None, opts)
        self.cloud = cloud
        self._env = cfg.environment
        self._tags = cloud_tags(cfg.environment, TIER, cloud, cfg.tags)
        size = cfg.core.clusters[cloud]
        build = {"aws": self._eks, "azure": self._aks, "gcp": self._gke}[cloud]
        # The cloud's provider belongs to this component, like the cluster it creates.
        self.provider = cloud_provider(cloud, cfg, self)
        cluster_name, kubeconfig = build(cfg, size, self.provider)
        self.cluster_name = cluster_name
        self.kubeconfig = pulumi.Output.secret(kubeconfig)
        self.k8s_provider = k8s.Provider(
            f"{cloud}-k8s", kubeconfig=self.kubeconfig, opts=pulumi.ResourceOptions(parent=self),
        )
        self.ingress_address = self._core_services(cfg.core.services)
        self.register_outputs({
            "cluster_name": self.cluster_name,
            "kubeconfig": self.kubeconfig,
            "ingress_address": self.ingress_address,
        })

    # ------------------------------------------------------------------ clusters

    def _eks(self, cfg: StackConfig, size: ClusterSize, provider: pulumi.ProviderResource
             ) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        opts = pulumi.ResourceOptions(parent=self, provider=provider)
        name = f"edgefabric-{cfg.environment}"
        vpc = aws.ec2.Vpc("aws-vpc", cidr_block="10.40.0.0/16", enable_dns_hostnames=True,
                          enable_dns_support=True, tags={**self._tags, "Name": name}, opts=opts)
        # EKS needs subnets in at least two availability zones.
        subnets = [
            aws.ec2.Subnet(f"aws-subnet-{i}", vpc_id=vpc.id, cidr_block=f"10.40.{i * 16}.0/20",
                           availability_zone=f"{cfg.clouds.aws.region}{zone}",
                           tags={**self._tags, "kubernetes.io/role/internal-elb": "1"}, opts=opts)
            for i, zone in enumerate(("a", "b"))
        ]
        cluster_role = aws.iam.Role(
            "aws-cluster-role", assume_role_policy=_assume("eks.amazonaws.com"), tags=self._tags, opts=opts)
        aws.iam.RolePolicyAttachment(
            "aws-cluster-policy", role=cluster_role.name,
            policy_arn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy", opts=opts)
        node_role = aws.iam.Role(
            "aws-node-role", assume_role_policy=_assume("ec2.amazonaws.com"), tags=self._tags, opts=opts)
        for policy in ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy",
                       "AmazonEC2ContainerRegistryReadOnly"):
            aws.iam.RolePolicyAttachment(
                f"aws-node-{policy}", role=node_role.name,
                policy_arn=f"arn:aws:iam::aws:policy/{policy}", opts=opts)
        public = bool(size.api_allowed_cidrs)
        cluster = aws.eks.Cluster(
            "aws-cluster", name=name, role_arn=cluster_role.arn, version=size.kubernetes_version,
            vpc_config={
                "subnet_ids": [s.id for s in subnets],
                "endpoint_private_access": True,
                "endpoint_public_access": public,
                "public_access_cidrs": size.api_allowed_cidrs or None,
            },
            tags=self._tags, opts=opts)
        aws.eks.NodeGroup(
            "aws-nodes", cluster_name=cluster.name, node_role_arn=node_role.arn,
            subnet_ids=[s.id for s in subnets], instance_types=[size.machine_type],
            scaling_config={"desired_size": size.node_count, "min_size": size.min_nodes,
                            "max_size": size.max_nodes},
            tags=self._tags, opts=opts)
        kubeconfig = pulumi.Output.all(cluster.endpoint, cluster.certificate_authority.data, cluster.name).apply(
            lambda a: _kubeconfig(a[0], a[1], a[2], {
                "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws",
                "args": ["eks", "get-token", "--cluster-name", a[2], "--region", cfg.clouds.aws.region],
            }))
        return cluster.name, kubeconfig

    def _aks(self, cfg: StackConfig, size: ClusterSize, provider: pulumi.ProviderResource
             ) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        opts = pulumi.ResourceOptions(parent=self, provider=provider)
        group = azure_native.resources.ResourceGroup(
            "azure-rg", resource_group_name=f"edgefabric-{cfg.environment}",
            location=cfg.clouds.azure.location, tags=self._tags, opts=opts)
        cluster = azure_native.containerservice.ManagedCluster(
            "azure-cluster",
            resource_group_name=group.name,
            location=cfg.clouds.azure.location,
            dns_prefix=f"edgefabric-{cfg.environment}",
            kubernetes_version=size.kubernetes_version,
            identity={"type": "SystemAssigned"},
            agent_pool_profiles=[{
                "name": "system", "mode": "System", "vm_size": size.machine_type,
                "count": size.node_count, "enable_auto_scaling": True,
                "min_count": size.min_nodes, "max_count": size.max_nodes, "os_type": "Linux",
            }],
            api_server_access_profile={
                "enable_private_cluster": not size.api_allowed_cidrs,
                "authorized_ip_ranges": size.api_allowed_cidrs or None,
            },
            tags=self._tags, opts=opts)
        creds = azure_native.containerservice.list_managed_cluster_user_credentials_output(
            resource_group_name=group.name, resource_name=cluster.name,
            opts=pulumi.InvokeOutputOptions(parent=self, provider=provider))
        kubeconfig = creds.kubeconfigs[0].value.apply(lambda v: base64.b64decode(v).decode())
        return cluster.name, kubeconfig

    def _gke(self, cfg: StackConfig, size: ClusterSize, provider: pulumi.ProviderResource
             ) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        opts = pulumi.ResourceOptions(parent=self, provider=provider)
        name = f"edgefabric-{cfg.environment}"
        # The default pool cannot be tuned; replace it with one we own and can scale.
        cluster = gcp.container.Cluster(
            "gcp-cluster", name=name, location=cfg.clouds.gcp.region,
            remove_default_node_pool=True, initial_node_count=1,
            min_master_version=size.kubernetes_version, deletion_protection=cfg.environment == "prod",
            private_cluster_config={"enable_private_nodes": True,
                                    "enable_private_endpoint": not size.api_allowed_cidrs,
                                    "master_ipv4_cidr_block": "172.16.0.32/28"},
            master_authorized_networks_config={"cidr_blocks": [
                {"cidr_block": c, "display_name": f"allowed-{i}"} for i, c in enumerate(size.api_allowed_cidrs)
            ]},
            ip_allocation_policy={},
            resource_labels=self._tags, opts=opts)
        gcp.container.NodePool(
            "gcp-nodes", cluster=cluster.name, location=cfg.clouds.gcp.region,
            node_count=size.node_count,
            autoscaling={"min_node_count": size.min_nodes, "max_node_count": size.max_nodes},
            # `labels` are Kubernetes node labels; `resource_labels` tag the VMs themselves.
            node_config={"machine_type": size.machine_type, "labels": self._tags,
                         "resource_labels": self._tags,
                         "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"]},
            opts=opts)
        kubeconfig = pulumi.Output.all(cluster.endpoint, cluster.master_auth.cluster_ca_certificate,
                                       cluster.name).apply(
            lambda a: _kubeconfig(f"https://{a[0]}", a[1], a[2], {
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "command": "gke-gcloud-auth-plugin", "provideClusterInfo": True,
            }))
        return cluster.name, kubeconfig

    # ------------------------------------------------------------------ services

    def _core_services(self, services: list[CoreService]) -> pulumi.Output[str]:
        labels = k8s_labels(self._env, TIER, self.cloud)
        ns = k8s.core.v1.Namespace(
            f"{self.cloud}-core-ns",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=CORE_NAMESPACE, labels=labels),
            opts=pulumi.ResourceOptions(parent=self, provider=self.k8s_provider))
        ingress: pulumi.Output[str] | None = None
        for svc in services:
            cpu_limit, memory_limit = default_limits(svc)
            env = dict(svc.env)
            if svc.oauth2_issuer:
                env["OAUTH2_ISSUER"] = svc.oauth2_issuer
            deployed = deploy_service(
                f"{self.cloud}-{svc.name}", svc.model_copy(update={"env": env}),
                namespace=CORE_NAMESPACE, namespace_resource=ns,
                shape=PodShape(labels=labels, cpu_limit=cpu_limit, memory_limit=memory_limit),
                provider=self.k8s_provider, parent=self,
                service_type="LoadBalancer" if svc.kind == "api-gateway" else "ClusterIP",
                autoscale=svc.autoscale,
            )
            if svc.kind == "api-gateway" and ingress is None:
                # Clouds answer with an IP (Azure, GCP) or a hostname (AWS NLB).
                ingress = deployed.service.status.apply(_lb_address)
        return ingress if ingress is not None else pulumi.Output.from_input("")


def _lb_address(status: object) -> str:
    try:
        point = status.load_balancer.ingress[0]  # type: ignore[attr-defined]
    except (AttributeError, IndexError, TypeError):
        return ""
    return point.ip or point.hostname or ""


def _assume(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})


def _kubeconfig(server: str, ca_data: str, name: str, exec_spec: dict) -> str:
    """A kubeconfig that authenticates with the cloud's exec plugin: no static token in state."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "users": [{"name": name, "user": {"exec": exec_spec}}],
    })
