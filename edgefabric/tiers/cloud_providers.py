"""Explicit cloud providers, one per enabled cloud, each owned by that cloud's CloudCore.

Every cloud resource is created through one of these, never through the ambient default
provider, so a stack can never deploy into whatever account a laptop happens to be
logged into. Credentials are not in config: AWS and GCP read theirs from the environment
(OIDC in CI, a profile or ADC on a laptop); the Azure subscription id is a secret
reference.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pulumi_azure_native as azure_native
import pulumi_gcp as gcp

from edgefabric.config import StackConfig
from edgefabric.tiers.labels import cloud_tags
from edgefabric.tiers.secrets import resolve


def cloud_provider(cloud: str, cfg: StackConfig, parent: pulumi.Resource) -> pulumi.ProviderResource:
    clouds = cfg.clouds
    opts = pulumi.ResourceOptions(parent=parent)
    tags = cloud_tags(cfg.environment, "core", cloud, cfg.tags)
    if cloud == "aws":
        return aws.Provider(
            "aws", region=clouds.aws.region,
            assume_roles=[{"role_arn": clouds.aws.role_arn}] if clouds.aws.role_arn else None,
            # Tags on every taggable AWS resource, even one a component forgets.
            default_tags={"tags": tags}, opts=opts)
    if cloud == "azure":
        return azure_native.Provider(
            "azure", location=clouds.azure.location,
            subscription_id=resolve(clouds.azure.subscription_id_ref, "clouds.azure.subscriptionIdRef"),
            opts=opts)
    if cloud == "gcp":
        return gcp.Provider("gcp", project=clouds.gcp.project, region=clouds.gcp.region,
                            default_labels=tags, opts=opts)
    raise ValueError(f"unknown cloud {cloud!r}")
