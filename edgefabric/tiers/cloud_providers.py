"""Explicit cloud providers, one per provisioned cloud, each owned by that cloud's CloudCore.

Every cloud resource is created through one of these, never through the ambient default
provider, so a stack can never deploy into whatever account a laptop happens to be
logged into. Credentials are not in config: AWS and GCP read theirs from the environment
(OIDC in CI, a profile or ADC on a laptop); the Azure subscription id is a secret
reference.
"""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_aws as aws
import pulumi_azure_native as azure_native
import pulumi_gcp as gcp

from edgefabric.config import AwsCloud, AzureCloud, GcpCloud
from edgefabric.tiers import secret_output

# One cloud's slice of `clouds`: region/location/project and credential references.
CloudSettings = AwsCloud | AzureCloud | GcpCloud


def cloud_provider(settings: CloudSettings, tags: Mapping[str, str], parent: pulumi.Resource,
                   name: str | None = None) -> pulumi.ProviderResource:
    """The explicit provider for the cloud `settings` describe, a child of `parent`, named
    `name` (default: the cloud; a region with its own cluster passes its name).

    `tags` are the core tier's standard tags: AWS applies them as default tags and GCP as
    default labels, so even a resource a component forgets to tag carries them.
    """
    opts = pulumi.ResourceOptions(parent=parent)
    if isinstance(settings, AwsCloud):
        return aws.Provider(
            name or "aws", region=settings.region,
            assume_roles=[{"role_arn": settings.role_arn}] if settings.role_arn else None,
            # Tags on every taggable AWS resource, even one a component forgets.
            default_tags={"tags": dict(tags)}, opts=opts)
    if isinstance(settings, AzureCloud):
        return azure_native.Provider(
            name or "azure", location=settings.location,
            subscription_id=secret_output(settings.subscription_id_ref, "clouds.azure.subscriptionIdRef"),
            opts=opts)
    if isinstance(settings, GcpCloud):
        return gcp.Provider(name or "gcp", project=settings.project, region=settings.region,
                            default_labels=dict(tags), opts=opts)
    raise TypeError(f"not the settings of a cloud: {type(settings).__name__}")
