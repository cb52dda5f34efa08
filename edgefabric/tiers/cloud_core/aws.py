"""The AWS cloud core's cluster: EKS in its own VPC, with a managed node group.

The VPC follows the EKS reference layout: in each of two availability zones a public subnet
(tagged `kubernetes.io/role/elb`, where internet-facing load balancers go) routed to an
internet gateway, and a private subnet (`kubernetes.io/role/internal-elb`, the nodes)
routed to that zone's NAT gateway, so nodes pull images without public addresses.

Destroy order is part of the design: the cluster and the node group depend on their IAM
policy attachments (and the nodes on their NAT routes), so `pulumi destroy` removes the
node group and cluster, which lets EKS delete the load balancers it made, before it takes
away the permissions and routes they need.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from edgefabric.config import AwsCloud
from edgefabric.tiers.cloud_core import CloudCoreArgs, Cluster, autoscaler, exec_kubeconfig
from edgefabric.tiers.cloud_core.addresses import AwsRanges, aws_ranges

NODE_POLICIES = ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly")
CLUSTER_POLICIES = ("AmazonEKSClusterPolicy", "AmazonEKSVPCResourceController")
# eks-pod-identity-agent: how the autoscaler's pod gets its IAM role (autoscaler.py).
ADDONS = ("vpc-cni", "kube-proxy", "coredns", "metrics-server", "eks-pod-identity-agent")
ZONES = ("a", "b")  # EKS needs subnets in at least two availability zones.


@dataclass(frozen=True)
class Network:
    vpc: aws.ec2.Vpc
    public: list[aws.ec2.Subnet]
    private: list[aws.ec2.Subnet]
    node_routes: list[pulumi.Resource]  # what nodes need before they can join (NAT routes)


def network(name: str, region: str, tags: dict[str, str], opts: pulumi.ResourceOptions, p: str,
            ranges: AwsRanges) -> Network:
    """The VPC of cluster `name`; `p` prefixes the logical names (the cloud, or a region);
    `ranges` its addresses (`addresses.aws_ranges`)."""
    vpc = aws.ec2.Vpc(f"{p}-vpc", cidr_block=ranges.vpc, enable_dns_hostnames=True,
                      enable_dns_support=True, tags={**tags, "Name": name}, opts=opts)
    shared = {f"kubernetes.io/cluster/{name}": "shared"}
    # The private subnets keep the names and ranges they had, so existing stacks update in place.
    private = [
        aws.ec2.Subnet(f"{p}-subnet-{i}", vpc_id=vpc.id, cidr_block=ranges.private[i],
                       availability_zone=f"{region}{zone}",
                       tags={**tags, **shared, "Name": f"{name}-private-{zone}",
                             "kubernetes.io/role/internal-elb": "1"}, opts=opts)
        for i, zone in enumerate(ZONES)
    ]
    public = [
        aws.ec2.Subnet(f"{p}-public-{i}", vpc_id=vpc.id, cidr_block=ranges.public[i],
                       availability_zone=f"{region}{zone}", map_public_ip_on_launch=False,
                       tags={**tags, **shared, "Name": f"{name}-public-{zone}", "kubernetes.io/role/elb": "1"},
                       opts=opts)
        for i, zone in enumerate(ZONES)
    ]
    igw = aws.ec2.InternetGateway(f"{p}-igw", vpc_id=vpc.id, tags={**tags, "Name": name}, opts=opts)
    public_rt = aws.ec2.RouteTable(f"{p}-public-rt", vpc_id=vpc.id, tags={**tags, "Name": f"{name}-public"},
                                   opts=opts)
    aws.ec2.Route(f"{p}-public-default", route_table_id=public_rt.id, destination_cidr_block="0.0.0.0/0",
                  gateway_id=igw.id, opts=opts)
    node_routes: list[pulumi.Resource] = []
    for i, zone in enumerate(ZONES):
        aws.ec2.RouteTableAssociation(f"{p}-public-{i}", subnet_id=public[i].id, route_table_id=public_rt.id,
                                      opts=opts)
        # One NAT gateway per zone: a zone's nodes keep egress when the other zone fails.
        eip = aws.ec2.Eip(f"{p}-nat-{i}", domain="vpc", tags={**tags, "Name": f"{name}-nat-{zone}"},
                          opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[igw])))
        nat = aws.ec2.NatGateway(f"{p}-nat-{i}", allocation_id=eip.id, subnet_id=public[i].id,
                                 tags={**tags, "Name": f"{name}-nat-{zone}"},
                                 opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[igw])))
        rt = aws.ec2.RouteTable(f"{p}-private-rt-{i}", vpc_id=vpc.id,
                                tags={**tags, "Name": f"{name}-private-{zone}"}, opts=opts)
        route = aws.ec2.Route(f"{p}-private-default-{i}", route_table_id=rt.id,
                              destination_cidr_block="0.0.0.0/0", nat_gateway_id=nat.id, opts=opts)
        assoc = aws.ec2.RouteTableAssociation(f"{p}-private-{i}", subnet_id=private[i].id, route_table_id=rt.id,
                                              opts=opts)
        node_routes += [route, assoc]
    return Network(vpc=vpc, public=public, private=private, node_routes=node_routes)


def eks(args: CloudCoreArgs, tags: dict[str, str], parent: pulumi.Resource,
        provider: pulumi.ProviderResource) -> Cluster:
    settings, size = args.settings, args.cluster
    assert isinstance(settings, AwsCloud)  # CloudCoreArgs checks the settings match the cloud
    opts = pulumi.ResourceOptions(parent=parent, provider=provider)
    name, p = args.cluster_name, args.prefix
    net = network(name, settings.region, tags, opts, p, aws_ranges(args.network_index, len(ZONES)))
    cluster_role = aws.iam.Role(
        f"{p}-cluster-role", assume_role_policy=_assume("eks.amazonaws.com"), tags=tags, opts=opts)
    cluster_attachments = [
        aws.iam.RolePolicyAttachment(
            # The first keeps its old logical name: renaming it would replace the attachment.
            f"{p}-cluster-policy" if policy == "AmazonEKSClusterPolicy" else f"{p}-cluster-{policy}",
            role=cluster_role.name, policy_arn=f"arn:aws:iam::aws:policy/{policy}", opts=opts)
        for policy in CLUSTER_POLICIES
    ]
    node_role = aws.iam.Role(
        f"{p}-node-role", assume_role_policy=_assume("ec2.amazonaws.com"), tags=tags, opts=opts)
    node_attachments = [
        aws.iam.RolePolicyAttachment(
            f"{p}-node-{policy}", role=node_role.name,
            policy_arn=f"arn:aws:iam::aws:policy/{policy}", opts=opts)
        for policy in NODE_POLICIES
    ]
    public = bool(size.api_allowed_cidrs)
    cluster = aws.eks.Cluster(
        f"{p}-cluster", name=name, role_arn=cluster_role.arn, version=size.kubernetes_version,
        vpc_config={
            "subnet_ids": [s.id for s in net.private],
            "endpoint_private_access": True,
            "endpoint_public_access": public,
            "public_access_cidrs": size.api_allowed_cidrs or None,
        },
        # Access entries, not the aws-auth ConfigMap: the creating identity (the deployer's
        # role, which the kubeconfig below also uses) is the cluster admin.
        access_config={"authentication_mode": "API_AND_CONFIG_MAP",
                       "bootstrap_cluster_creator_admin_permissions": True},
        tags=tags,
        # Destroyed before its permissions, so EKS can still clean up what it created.
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=cluster_attachments)))
    nodes = aws.eks.NodeGroup(
        f"{p}-nodes", cluster_name=cluster.name, node_role_arn=node_role.arn,
        # Nodes follow the control plane's version: an upgrade moves the cluster, then them.
        version=cluster.version,
        subnet_ids=[s.id for s in net.private], instance_types=[size.machine_type],
        scaling_config={"desired_size": size.node_count, "min_size": size.min_nodes,
                        "max_size": size.max_nodes},
        tags=tags,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            depends_on=[*node_attachments, *net.node_routes],
            # The autoscaler owns the desired size once the group exists.
            ignore_changes=["scalingConfig.desiredSize"])))
    # Managed add-ons: networking and DNS under EKS's upgrades, and the metrics-server the
    # HorizontalPodAutoscalers read (EKS ships none). After the nodes, which they run on.
    for addon in ADDONS:
        aws.eks.Addon(f"{p}-addon-{addon}", cluster_name=cluster.name, addon_name=addon,
                      resolve_conflicts_on_create="OVERWRITE", resolve_conflicts_on_update="OVERWRITE",
                      tags=tags, opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[nodes])))
    # The node autoscaler: EKS moves a node group's desired size only when told to. Its role
    # may change this cluster's groups only, and reaches its pod through Pod Identity.
    scaler_role = aws.iam.Role(f"{p}-autoscaler-role", assume_role_policy=autoscaler.trust_policy(), tags=tags,
                               opts=opts)
    scaler_policy = aws.iam.RolePolicy(f"{p}-autoscaler", role=scaler_role.id,
                                       policy=cluster.name.apply(autoscaler.iam_policy), opts=opts)
    aws.eks.PodIdentityAssociation(
        f"{p}-autoscaler", cluster_name=cluster.name, namespace=autoscaler.NAMESPACE,
        service_account=autoscaler.NAME, role_arn=scaler_role.arn, tags=tags,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[scaler_policy])))
    region = settings.region
    token_args = ["eks", "get-token", "--cluster-name", "{name}", "--region", region]
    if settings.role_arn:
        # The same identity as the provider's, not whatever the shell's credentials are.
        token_args += ["--role-arn", settings.role_arn]
    kubeconfig = pulumi.Output.all(cluster.endpoint, cluster.certificate_authority.data, cluster.name).apply(
        lambda a: exec_kubeconfig(a[0], a[1], a[2], {
            "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws",
            "args": [t.replace("{name}", a[2]) for t in token_args],
        }))
    version = size.kubernetes_version

    def in_cluster(k8s_provider: k8s.Provider, labels: dict[str, str]) -> None:
        autoscaler.deploy(name, version, region, labels, k8s_provider, parent, p)

    return Cluster(cluster.name, kubeconfig, in_cluster)


def _assume(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})
