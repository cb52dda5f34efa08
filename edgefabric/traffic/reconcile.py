"""Probe -> plan -> apply, shared by the WeightedFailover provider and the controller.

Engine-free: never imports pulumi. Inputs arrive as a plain property dict (the
provider's inputs, or built from the typed stack config by the controller) and
are parsed once into `FailoverSpec`.

Secrets are references (`env:NAME` or `config:KEY`); they are resolved only
here, when a backend is built for one call:
- `env:NAME`   -> os.environ[NAME];
- `config:KEY` -> the value passed in `secrets` (a Pulumi secret input keyed by
  the reference), else the environment variable `EDGEFABRIC_SECRET_<KEY>`
  (KEY upper-cased, non-alphanumerics as `_`) so the controller, which runs
  without the engine, can receive it from its environment.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from edgefabric.traffic.dns.base import (
    BackendOutcome,
    DnsBackend,
    HealthSettings,
    Published,
    RecordSpec,
    apply_all,
    published_view,
    read_all,
)
from edgefabric.traffic.health import (
    CustomProbe,
    HealthTracker,
    HttpProbe,
    Probe,
    TcpProbe,
    Thresholds,
    Transition,
    assess,
    probe_many_sync,
)
from edgefabric.traffic.planner import Plan, PlanInput, RegionRule, Strategy, plan

CLOUDS = ("aws", "azure", "gcp")
BACKEND_NAMES = ("route53", "azure_tm", "gcp_dns", "powerdns")


class FailoverInputError(ValueError):
    """An input of WeightedFailover / the controller is invalid."""


# ------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class CheckSpec:
    type: str = "http"
    path: str = "/health"
    expected_status: int = 200
    method: str = "GET"
    port: int | None = 80
    scheme: str = "http"
    command: tuple[str, ...] = ()


@dataclass(frozen=True)
class FailoverSpec:
    record_name: str
    ttl: int
    endpoints: dict[str, dict[str, str]]  # cloud -> {"address", "health_url"?}
    interval_s: float
    timeout_s: float
    thresholds: Thresholds
    check: CheckSpec
    strategy: Strategy
    rules: tuple[RegionRule, ...]
    default_weight: int
    backends: dict[str, dict[str, Any]]
    probe_round_gap_s: float = 1.0
    health_check_ids: dict[str, str] = field(default_factory=dict)

    # ---- parsing
    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> FailoverSpec:
        def need(key: str) -> Any:
            if props.get(key) is None:
                raise FailoverInputError(f"{key}: missing; allowed: see WeightedFailoverArgs")
            return props[key]

        name = str(need("record_name"))
        if not re.fullmatch(r"([a-z0-9-]+\.)+", name):
            raise FailoverInputError(
                f"record_name: {name!r} is invalid; allowed: a lower-case FQDN with trailing dot"
            )
        ttl = int(need("ttl"))
        if not 1 <= ttl <= 86400:
            raise FailoverInputError(f"ttl: {ttl!r} is invalid; allowed: 1..86400")
        endpoints = {str(c): dict(v) for c, v in dict(need("endpoints")).items()}
        for cloud, ep in endpoints.items():
            if cloud not in CLOUDS:
                raise FailoverInputError(f"endpoints.{cloud}: unknown cloud; allowed: {', '.join(CLOUDS)}")
            if not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", str(ep.get("address", ""))):
                raise FailoverInputError(
                    f"endpoints.{cloud}.address: {ep.get('address')!r} is invalid; allowed: an IPv4 literal"
                )
        if not endpoints:
            raise FailoverInputError("endpoints: empty; allowed: at least one of aws, azure, gcp")
        hc = dict(need("health_check"))
        check_raw = dict(hc.get("check") or {"type": "http"})
        check = CheckSpec(
            type=str(check_raw.get("type", "http")),
            path=str(check_raw.get("path", "/health")),
            expected_status=int(check_raw.get("expected_status", 200)),
            method=str(check_raw.get("method", "GET")),
            port=None if check_raw.get("port") is None else int(check_raw["port"]),
            scheme=str(check_raw.get("scheme", "http")),
            command=tuple(str(x) for x in check_raw.get("command") or ()),
        )
        if check.type not in ("http", "tcp", "custom"):
            raise FailoverInputError(f"health_check.check.type: {check.type!r}; allowed: http, tcp, custom")
        if check.type == "custom" and not check.command:
            raise FailoverInputError("health_check.check.command: empty; allowed: a non-empty argv list")
        if check.type == "tcp" and check.port is None:
            raise FailoverInputError("health_check.check.port: missing; allowed: 1..65535 for tcp checks")
        thresholds = Thresholds(
            failure_threshold=int(hc.get("failure_threshold", 3)),
            success_threshold=int(hc.get("success_threshold", 2)),
            recovery_hold_down_s=float(hc.get("recovery_hold_down_s", 300)),
        )
        interval = float(hc.get("interval_s", 30))
        timeout = float(hc.get("timeout_s", 5))
        if not 0 < timeout < interval:
            raise FailoverInputError(
                f"health_check.timeout_s: {timeout!r} is invalid; allowed: > 0 and < interval_s ({interval})"
            )
        st = dict(need("strategy"))
        order = tuple(str(c) for c in st.get("order") or ())
        missing = [c for c in order if c not in endpoints]
        if missing:
            raise FailoverInputError(
                f"strategy.order: {missing!r} have no endpoint; allowed: {sorted(endpoints)}"
            )
        # Enabled clouds the strategy does not rank still serve, after the ranked ones.
        order = order + tuple(c for c in CLOUDS if c in endpoints and c not in order)
        strategy = Strategy(
            order=order,
            replication=st.get("replication", "active-active"),
            failover=st.get("failover", "automatic"),
        )
        if strategy.replication not in ("active-active", "active-passive"):
            raise FailoverInputError(
                f"strategy.replication: {strategy.replication!r}; allowed: active-active, active-passive"
            )
        if strategy.failover not in ("automatic", "manual"):
            raise FailoverInputError(f"strategy.failover: {strategy.failover!r}; allowed: automatic, manual")
        routing = dict(props.get("routing") or {})
        rules = tuple(
            RegionRule(str(r["name"]), tuple(r.get("regions") or ()), str(r["cloud"]), int(r["weight"]))
            for r in routing.get("rules") or ()
        )
        backends = {str(k): dict(v) for k, v in dict(need("backends")).items() if v is not None}
        unknown = [b for b in backends if b not in BACKEND_NAMES]
        if unknown or not backends:
            raise FailoverInputError(
                f"backends: {sorted(backends)!r} is invalid; allowed: one or more of {', '.join(BACKEND_NAMES)}"
            )
        gap = props.get("probe_round_gap_s")
        spec = cls(
            record_name=name,
            ttl=ttl,
            endpoints=endpoints,
            interval_s=interval,
            timeout_s=timeout,
            thresholds=thresholds,
            check=check,
            strategy=strategy,
            rules=rules,
            default_weight=int(routing.get("default_weight", 100)),
            backends=backends,
            probe_round_gap_s=float(gap) if gap is not None else min(1.0, interval),
            health_check_ids={str(k): str(v) for k, v in dict(props.get("health_check_ids") or {}).items()},
        )
        plan(spec.plan_input({}))  # validates routing against the strategy (raises PlanConfigError)
        return spec

    # ---- derived
    def plan_input(self, health: Mapping[str, bool]) -> PlanInput:
        return PlanInput(
            strategy=self.strategy, rules=self.rules, default_weight=self.default_weight, health=dict(health)
        )

    def probes(self) -> dict[str, Probe]:
        out: dict[str, Probe] = {}
        for cloud, ep in self.endpoints.items():
            address = ep["address"]
            if self.check.type == "custom":
                # The command gets the target as its last argument so one command serves all clouds.
                out[cloud] = CustomProbe((*self.check.command, address))
            elif self.check.type == "tcp":
                out[cloud] = TcpProbe(address, int(self.check.port or 0))
            else:
                url = ep.get("health_url") or (
                    f"{self.check.scheme}://{address}:{self.check.port or 80}{self.check.path}"
                )
                out[cloud] = HttpProbe(url, self.check.method, self.check.expected_status)
        return out

    def health_settings(self) -> HealthSettings:
        if self.check.type == "tcp":
            protocol, port, path = "TCP", int(self.check.port or 80), "/"
        else:
            # Custom checks have no native equivalent; native checkers fall back to http on the check port.
            protocol = "HTTPS" if self.check.scheme == "https" else "HTTP"
            port, path = int(self.check.port or 80), self.check.path
        return HealthSettings(protocol, port, path, self.interval_s, self.timeout_s, self.thresholds)

    def record_spec(self) -> RecordSpec:
        return RecordSpec(
            name=self.record_name,
            ttl=self.ttl,
            endpoints={c: ep["address"] for c, ep in self.endpoints.items()},
            health=self.health_settings(),
            health_check_ids=dict(self.health_check_ids),
        )


# ---------------------------------------------------------------- credentials


def secret_env_name(key: str) -> str:
    return "EDGEFABRIC_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", key).upper()


def resolve_secret(ref: str, secrets: Mapping[str, str] | None, where: str) -> str:
    """Resolve a SecretRef; errors name the input and the reference, never a value."""
    if ref.startswith("env:"):
        name = ref[4:]
        value = os.environ.get(name)
        if not value:
            raise FailoverInputError(
                f"{where}: {ref!r} refers to environment variable {name}, which is not set"
            )
        return value
    if ref.startswith("config:"):
        if secrets and secrets.get(ref):
            return str(secrets[ref])
        env = secret_env_name(ref[7:])
        value = os.environ.get(env)
        if not value:
            raise FailoverInputError(
                f"{where}: {ref!r} was not passed as a secret and {env} is not set; "
                "allowed: pass it via the `secrets` input or set the environment variable"
            )
        return value
    raise FailoverInputError(f"{where}: {ref!r} is invalid; allowed: env:NAME or config:KEY")


def _loopback_http(url: str | None, what: str) -> str | None:
    if url and url.startswith("http://") and urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise FailoverInputError(
            f"{what}: {url!r} uses plain http off loopback; allowed: https, or http on loopback"
        )
    return url


def build_backends(
    spec: FailoverSpec, secrets: Mapping[str, str] | None = None, only: Sequence[str] | None = None
) -> list[DnsBackend]:
    """Construct backends for ONE call. Never stored on anything that is pickled."""
    out: list[DnsBackend] = []
    for name in BACKEND_NAMES:
        settings = spec.backends.get(name)
        if settings is None or (only is not None and name not in only):
            continue
        if name == "powerdns":
            from edgefabric.traffic.dns.powerdns import PowerDnsBackend

            out.append(
                PowerDnsBackend(
                    api_url=str(settings["api_url"]),
                    api_key=resolve_secret(
                        str(settings["api_key_ref"]), secrets, "backends.powerdns.api_key_ref"
                    ),
                    zone=str(settings["zone"]),
                    server_id=str(settings.get("server_id") or "localhost"),
                )
            )
        elif name == "route53":
            from edgefabric.traffic.dns.route53 import Route53Backend

            out.append(
                Route53Backend(
                    zone_name=str(settings["zone_name"]),
                    hosted_zone_id=settings.get("hosted_zone_id") or None,
                    use_health_check_ids=bool(settings.get("health_check_ids", True)),
                    # boto3 honours these on its own (service id "Route 53"); read here so
                    # the loopback-only rule for plain http applies to them too.
                    endpoint_url=_loopback_http(
                        os.environ.get("AWS_ENDPOINT_URL_ROUTE_53") or os.environ.get("AWS_ENDPOINT_URL"),
                        "AWS_ENDPOINT_URL_ROUTE_53",
                    ),
                )
            )
        elif name == "azure_tm":
            from edgefabric.traffic.dns.azure_tm import AzureTmBackend

            token = os.environ.get("EDGEFABRIC_AZURE_TOKEN")
            out.append(
                AzureTmBackend(
                    subscription_id=resolve_secret(
                        str(settings.get("subscription_id_ref") or "env:ARM_SUBSCRIPTION_ID"),
                        secrets,
                        "backends.azure_tm.subscription_id_ref",
                    ),
                    resource_group=str(settings["resource_group"]),
                    profile_name=str(settings["profile_name"]),
                    relative_dns_name=str(settings["relative_dns_name"]),
                    credential=StaticTokenCredential(token) if token else None,
                    base_url=_loopback_http(
                        os.environ.get("EDGEFABRIC_AZURE_BASE_URL"), "EDGEFABRIC_AZURE_BASE_URL"
                    ),
                    tags={str(k): str(v) for k, v in dict(settings.get("tags") or {}).items()},
                )
            )
        elif name == "gcp_dns":
            from edgefabric.traffic.dns.gcp_dns import GcpDnsBackend

            token = os.environ.get("EDGEFABRIC_GCP_ACCESS_TOKEN")
            credentials = None
            if token:
                from google.oauth2.credentials import Credentials

                credentials = Credentials(token=token)
            out.append(
                GcpDnsBackend(
                    project=str(settings["project"]),
                    managed_zone=str(settings["managed_zone"]),
                    credentials=credentials,
                    health_check=settings.get("health_check") or None,
                    api_endpoint=_loopback_http(
                        os.environ.get("EDGEFABRIC_GCP_DNS_ENDPOINT"), "EDGEFABRIC_GCP_DNS_ENDPOINT"
                    ),
                )
            )
    return out


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


# ----------------------------------------------------------------- one round


@dataclass
class Reconciled:
    plan: Plan
    health: dict[str, dict[str, object]]
    outcomes: list[BackendOutcome]
    transitions: list[Transition]

    @property
    def changed(self) -> bool:
        return any(o.changed for o in self.outcomes)

    @property
    def failed(self) -> list[BackendOutcome]:
        return [o for o in self.outcomes if not o.ok]


def plan_from_health(spec: FailoverSpec, tracker: HealthTracker, scale: int = 100) -> Plan:
    health = {c: tracker.states[c].healthy if c in tracker.states else True for c in spec.endpoints}
    return plan(spec.plan_input(health), scale)


def apply_plan(
    spec: FailoverSpec, tracker: HealthTracker, backends: Sequence[DnsBackend], transitions: list[Transition]
) -> Reconciled:
    rs = spec.record_spec()
    outcomes = apply_all(backends, rs, lambda scale: plan_from_health(spec, tracker, scale))
    return Reconciled(plan_from_health(spec, tracker), tracker.evidence(), outcomes, transitions)


def assess_health(
    spec: FailoverSpec,
    evidence: Mapping[str, Mapping[str, object]] | None,
    sleep: Callable[[float], None] = time.sleep,
) -> HealthTracker:
    """Deploy-time verdict (see edgefabric.traffic.health.assess)."""
    return assess(
        spec.probes(),
        spec.thresholds,
        spec.timeout_s,
        evidence=evidence,
        round_gap_s=spec.probe_round_gap_s,
        sleep=sleep,
    )


def probe_round(spec: FailoverSpec, tracker: HealthTracker, concurrency: int = 100) -> list[Transition]:
    """One controller tick: a single probe per target through the hysteresis."""
    return tracker.observe(probe_many_sync(spec.probes(), spec.timeout_s, concurrency))


def expected_published(
    spec: FailoverSpec, tracker_plan: Callable[[int], Plan], backends: Sequence[DnsBackend]
) -> dict[str, Published]:
    return {b.name: published_view(tracker_plan(b.scale), b.supports_regions) for b in backends}


def read_published(spec: FailoverSpec, backends: Sequence[DnsBackend]) -> dict[str, Published | str | None]:
    return read_all(backends, spec.record_spec())


def normalise_published(p: Published | str | None) -> Published | str | None:
    if not isinstance(p, dict):
        return p
    return {a: {c: w for c, w in sorted(ws.items()) if w > 0} for a, ws in sorted(p.items())}
