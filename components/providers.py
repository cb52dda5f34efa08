"""The explicit cloud providers of a stack, one per enabled cloud.

Every cloud resource is created through one of these, never through the ambient default
provider, so a stack can never deploy into whatever account a laptop happens to be
logged into. Credentials are not in config: AWS and GCP read theirs from the
environment (OIDC in CI, a profile or ADC on a laptop); the Azure subscription id is a
secret reference.
"""

from __future__ import annotations

import pulumi_aws as aws
import pulumi_azure_native as azure_native
import pulumi_gcp as gcp

from components.cloud_core import CloudProviders
from components.config import StackConfig
from components.labels import cloud_tags
from components.secrets import resolve


def cloud_providers(cfg: StackConfig) -> CloudProviders:
    clouds = cfg.clouds
    provisioned = clouds.provisioned
    aws_p = azure_p = gcp_p = None
    if "aws" in provisioned:
        aws_p = aws.Provider(
            "aws", region=clouds.aws.region,
            assume_roles=[{"role_arn": clouds.aws.role_arn}] if clouds.aws.role_arn else None,
            # Tags on every taggable AWS resource, even ones a component forgets.
            default_tags={"tags": cloud_tags(cfg.environment, "core", "aws", cfg.tags)})
    if "azure" in provisioned:
        azure_p = azure_native.Provider(
            "azure", location=clouds.azure.location,
            subscription_id=resolve(clouds.azure.subscription_id_ref, "clouds.azure.subscriptionIdRef"))
    if "gcp" in provisioned:
        gcp_p = gcp.Provider(
            "gcp", project=clouds.gcp.project, region=clouds.gcp.region,
            default_labels=cloud_tags(cfg.environment, "core", "gcp", cfg.tags))
    return CloudProviders(aws=aws_p, azure=azure_p, gcp=gcp_p)


__all__ = ["cloud_providers"]
