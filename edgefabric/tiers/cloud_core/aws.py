"""The AWS cloud core's cluster: EKS in its own VPC, with a managed node group."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from edgefabric.config import AwsCloud
from edgefabric.tiers.cloud_core import CloudCoreArgs, Cluster, exec_kubeconfig

NODE_POLICIES = ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly")


def eks(args: CloudCoreArgs, tags: dict[str, str], parent: pulumi.Resource,
        provider: pulumi.ProviderResource) -> Cluster:
    settings, size = args.settings, args.cluster
    assert isinstance(settings, AwsCloud)  # CloudCoreArgs checks the settings match the cloud
    opts = pulumi.ResourceOptions(parent=parent, provider=provider)
    name = args.cluster_name
    vpc = aws.ec2.Vpc("aws-vpc", cidr_block="10.40.0.0/16", enable_dns_hostnames=True,
                      enable_dns_support=True, tags={**tags, "Name": name}, opts=opts)
    # EKS needs subnets in at least two availability zones.
    subnets = [
        aws.ec2.Subnet(f"aws-subnet-{i}", vpc_id=vpc.id, cidr_block=f"10.40.{i * 16}.0/20",
                       availability_zone=f"{settings.region}{zone}",
                       tags={**tags, "kubernetes.io/role/internal-elb": "1"}, opts=opts)
        for i, zone in enumerate(("a", "b"))
    ]
    cluster_role = aws.iam.Role(
        "aws-cluster-role", assume_role_policy=_assume("eks.amazonaws.com"), tags=tags, opts=opts)
    aws.iam.RolePolicyAttachment(
        "aws-cluster-policy", role=cluster_role.name,
        policy_arn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy", opts=opts)
    node_role = aws.iam.Role(
        "aws-node-role", assume_role_policy=_assume("ec2.amazonaws.com"), tags=tags, opts=opts)
    for policy in NODE_POLICIES:
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
        tags=tags, opts=opts)
    aws.eks.NodeGroup(
        "aws-nodes", cluster_name=cluster.name, node_role_arn=node_role.arn,
        subnet_ids=[s.id for s in subnets], instance_types=[size.machine_type],
        scaling_config={"desired_size": size.node_count, "min_size": size.min_nodes,
                        "max_size": size.max_nodes},
        tags=tags, opts=opts)
    region = settings.region
    kubeconfig = pulumi.Output.all(cluster.endpoint, cluster.certificate_authority.data, cluster.name).apply(
        lambda a: exec_kubeconfig(a[0], a[1], a[2], {
            "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws",
            "args": ["eks", "get-token", "--cluster-name", a[2], "--region", region],
        }))
    return Cluster(cluster.name, kubeconfig)


def _assume(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})
