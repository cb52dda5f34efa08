"""DNS backends behind one interface (see `edgefabric.traffic.dns.base`), built by name.

`FACTORIES` maps each backend name (a field of `BackendSettings`, i.e. a key of
`edgefabric:dns.backends`) to the function that builds that backend from its typed
settings. `build_backends` builds the configured ones for ONE call: nothing built here is
ever stored on an object that is pickled into Pulumi state.

Settings are the stack config's models (`edgefabric.config.models`), plus what the program
adds to them: the tags on the Traffic Manager profiles and the self-link of the compute
health check Cloud DNS steers with.

Secrets stay references until a backend is built; then they are resolved by the one
resolver, `edgefabric.secrets.resolve`: `env:NAME` from this process's environment,
`config:KEY` from the resource's `secrets` input (a Pulumi secret keyed by the reference)
or, outside the engine, from `EDGEFABRIC_SECRET_<KEY>`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from edgefabric.config import models, zones
from edgefabric.errors import ConfigError
from edgefabric.secrets import resolve
from edgefabric.traffic.dns.azure_tm import AzureTmBackend
from edgefabric.traffic.dns.base import ApplyResult, DnsBackend, Published, RecordSpec
from edgefabric.traffic.dns.gcp_dns import GcpDnsBackend
from edgefabric.traffic.dns.powerdns import PowerDnsBackend
from edgefabric.traffic.dns.route53 import Route53Backend
from edgefabric.traffic.planner import Plan

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class AzureTmSettings(models.AzureTmBackend):
    """`dns.backends.azureTm`, plus the tags the program puts on the profiles."""

    tags: dict[str, str] = {}


# `secondary_zone` (set by `FailoverSpec.build` from `dns.authority`): this backend's zone is
# a subzone delegated from the authority's, and it publishes each name as
# `<first label>.<secondary_zone>` (`edgefabric.config.zones`). None: it publishes the names
# themselves (the authority, or specs saved before `dns.authority` existed).


class Route53Settings(models.Route53Backend):
    """`dns.backends.route53`, plus its role."""

    secondary_zone: str | None = None


class PowerDnsSettings(models.PowerDnsBackend):
    """`dns.backends.powerdns`, plus its role."""

    secondary_zone: str | None = None


class GcpDnsSettings(models.GcpDnsBackend):
    """`dns.backends.gcpDns`, plus its role and the self-link of the compute HealthCheck (a
    program Output)."""

    health_check: str | None = None
    secondary_zone: str | None = None


class BackendSettings(models.DnsBackends):
    """`dns.backends` as the backends take it: one optional settings model per backend name."""

    route53: Route53Settings | None = None
    azure_tm: AzureTmSettings | None = None
    gcp_dns: GcpDnsSettings | None = None
    powerdns: PowerDnsSettings | None = None


class Secondary:
    """A backend whose zone is delegated from the authority's: the same answers, published as
    `<first label>.<zone>` (`edgefabric.config.zones.secondary_name`). Every call renames the
    spec and passes it on, so reads, batches and deletes all see the one name."""

    def __init__(self, inner: DnsBackend, zone: str) -> None:
        self.inner, self.zone = inner, zone
        self.name, self.scale, self.supports_regions = inner.name, inner.scale, inner.supports_regions

    @property
    def call_timeout_s(self) -> float | None:
        """The inner backend's per-request bound (the controller sets it to its deadline)."""
        return getattr(self.inner, "call_timeout_s", None)

    @call_timeout_s.setter
    def call_timeout_s(self, value: float | None) -> None:
        if hasattr(self.inner, "call_timeout_s"):
            setattr(self.inner, "call_timeout_s", value)  # noqa: B010 - not part of the DnsBackend protocol

    def local(self, spec: RecordSpec) -> RecordSpec:
        return dataclasses.replace(spec, name=zones.secondary_name(spec.name, self.zone))

    def read(self, spec: RecordSpec) -> Published | None:
        return self.inner.read(self.local(spec))

    def apply(self, spec: RecordSpec, plan: Plan) -> ApplyResult:
        return self.inner.apply(self.local(spec), plan)

    def apply_many(self, items: Sequence[tuple[RecordSpec, Plan]]) -> ApplyResult:
        many = getattr(self.inner, "apply_many", None)
        local = [(self.local(spec), plan) for spec, plan in items]
        if callable(many):
            result: ApplyResult = many(local)
            return result
        results = [self.inner.apply(spec, plan) for spec, plan in local]
        return ApplyResult(any(r.changed for r in results), [i for r in results for i in r.record_ids])

    def delete(self, spec: RecordSpec) -> None:
        self.inner.delete(self.local(spec))

    def __repr__(self) -> str:
        return f"Secondary({self.inner!r}, zone={self.zone!r})"


# A backend's secret, by reference: (reference, key path of the reference) -> value.
SecretOf = Callable[[str, str], str]


class StaticTokenCredential:
    """An azure-core TokenCredential for a pre-issued bearer token
    (`EDGEFABRIC_AZURE_TOKEN`, e.g. from `az account get-access-token`)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + 3000)

    def __repr__(self) -> str:
        return "StaticTokenCredential(***)"


def _loopback_http(variable: str) -> str | None:
    """The endpoint override in environment variable `variable`; plain http only on loopback."""
    url = os.environ.get(variable) or None
    if url and url.startswith("http://") and urlsplit(url).hostname not in _LOOPBACK:
        raise ConfigError.one(variable, url, "https, or plain http on loopback only", namespace="")
    return url


def _route53(s: models.Route53Backend, _secret: SecretOf) -> DnsBackend:
    # boto3 honours these endpoint variables on its own (service id "Route 53"); read here so
    # the loopback-only rule for plain http applies to them too.
    endpoint = _loopback_http("AWS_ENDPOINT_URL_ROUTE_53") or _loopback_http("AWS_ENDPOINT_URL")
    return Route53Backend(zone_name=s.zone_name, hosted_zone_id=s.hosted_zone_id,
                          use_health_check_ids=s.health_check_ids, endpoint_url=endpoint)


def _azure_tm(s: AzureTmSettings, secret: SecretOf) -> DnsBackend:
    token = os.environ.get("EDGEFABRIC_AZURE_TOKEN")
    return AzureTmBackend(
        subscription_id=secret(s.subscription_id_ref, "dns.backends.azureTm.subscriptionIdRef"),
        resource_group=s.resource_group,
        profile_name=s.profile_name,
        relative_dns_name=s.relative_dns_name,
        credential=StaticTokenCredential(token) if token else None,
        base_url=_loopback_http("EDGEFABRIC_AZURE_BASE_URL"),
        tags=dict(s.tags),
    )


def _gcp_dns(s: GcpDnsSettings, _secret: SecretOf) -> DnsBackend:
    token = os.environ.get("EDGEFABRIC_GCP_ACCESS_TOKEN")
    credentials = None
    if token:
        from google.oauth2.credentials import Credentials

        credentials = Credentials(token=token)
    return GcpDnsBackend(project=s.project, managed_zone=s.managed_zone, credentials=credentials,
                         health_check=s.health_check, api_endpoint=_loopback_http("EDGEFABRIC_GCP_DNS_ENDPOINT"))


def _powerdns(s: PowerDnsSettings, secret: SecretOf) -> DnsBackend:
    return PowerDnsBackend(api_url=s.api_url, api_key=secret(s.api_key_ref, "dns.backends.powerdns.apiKeyRef"),
                           zone=s.zone, server_id=s.server_id)


# One entry per field of BackendSettings (a unit test holds them equal).
FACTORIES: dict[str, Callable[[Any, SecretOf], DnsBackend]] = {
    "route53": _route53,
    "azure_tm": _azure_tm,
    "gcp_dns": _gcp_dns,
    "powerdns": _powerdns,
}


def build_backends(
    settings: BackendSettings, secrets: Mapping[str, str] | None = None, only: Sequence[str] | None = None
) -> list[DnsBackend]:
    """The configured backends (or `only` those), built for ONE call.

    `secrets` maps a `config:KEY` reference to its value (the resource's secret input);
    a reference it lacks falls back to the environment (see `edgefabric.secrets`).
    """
    values = dict(secrets or {})

    def secret(ref: str, where: str) -> str:
        return str(resolve(ref, where, lookup=lambda key: values.get(f"config:{key}")))

    built = []
    for name in settings.names:
        if only is not None and name not in only:
            continue
        one = getattr(settings, name)
        backend = FACTORIES[name](one, secret)
        zone = getattr(one, "secondary_zone", None)
        built.append(Secondary(backend, zone) if zone else backend)
    return built
