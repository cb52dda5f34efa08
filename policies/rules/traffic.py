"""Global traffic: the health-weighted failover record (dynamic resource
`pulumi-python:dynamic/failover:WeightedFailover`, inputs in snake_case, see
edgefabric/dynamic/failover.py) answers quickly, spans clouds, probes sanely and pages someone."""

from __future__ import annotations

from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs, StackValidationArgs

from .common import (
    config_value,
    get,
    is_unknown,
    plain,
    resource_policy,
    schema,
    show,
    stack_config,
    stack_policy,
)

WEIGHTED_FAILOVER = "pulumi-python:dynamic/failover:WeightedFailover"
GLOBAL_TRAFFIC = "edgefabric:traffic:GlobalTraffic"


def _failover_props(args: ResourceValidationArgs) -> dict[str, Any]:
    if args.resource_type != WEIGHTED_FAILOVER:
        args.not_applicable(f"{args.resource_type} is not the failover record")
    return plain(args.props)


def _ttl(args: ResourceValidationArgs, report: ReportViolation) -> None:
    p = _failover_props(args)
    limit = int(config_value(args, "maxTtl", 60))
    ttl = p.get("ttl")
    if is_unknown(ttl):
        return
    if ttl is None or int(ttl) > limit:
        report(f"failover record '{p.get('record_name', args.name)}' has ttl {show(ttl)}; resolvers would keep a "
               f"failed cloud's answer longer than {limit} s")


failover_ttl = resource_policy(
    "failover-ttl",
    "The failover record's TTL is at most 60 s, so resolvers follow a failover quickly.",
    "Set edgefabric:dns.ttl to 60 or less (30 is the default).",
    _ttl,
    schema(maxTtl={"type": "integer", "minimum": 1}),
)


def _clouds(args: ResourceValidationArgs, report: ReportViolation) -> None:
    p = _failover_props(args)
    endpoints, order = p.get("endpoints"), get(p, "strategy", "order", default=[])
    if is_unknown(endpoints) or is_unknown(order):
        return
    clouds = sorted((endpoints or {}).keys())
    least = int(config_value(args, "minClouds", 2))
    if len(clouds) < least:
        report(f"failover record spans {len(clouds)} cloud(s) ({', '.join(clouds) or 'none'}); at least "
               f"{least} must be enabled so there is somewhere to fail over to")
    secondary = order[1] if len(order) > 1 else None
    if secondary is None:
        report("the failover strategy names no secondary cloud")
    elif secondary not in clouds:
        report(f"the strategy's secondary cloud '{secondary}' is not enabled (enabled: {', '.join(clouds)})")


failover_clouds = resource_policy(
    "failover-clouds",
    "At least two clouds answer the global name, and the strategy's secondary is one of them.",
    "Enable a second cloud in edgefabric:clouds and name it as secondary in "
    "edgefabric:strategies.<dns.strategy>.",
    _clouds,
    schema(minClouds={"type": "integer", "minimum": 1}),
)


def _timing(args: ResourceValidationArgs, report: ReportViolation) -> None:
    hc = _failover_props(args).get("health_check") or {}
    interval, timeout = hc.get("interval_s", 30), hc.get("timeout_s", 5)
    if is_unknown(interval) or is_unknown(timeout):
        return
    if not float(timeout) < float(interval):
        report(f"health check timeout {show(timeout)} s is not below its interval {show(interval)} s; probes would overlap")


health_check_timing = resource_policy(
    "health-check-timing",
    "Health check timeout is shorter than the interval.",
    "Lower edgefabric:healthCheck.timeoutS below intervalS (seed: 5 s timeout, 30 s interval).",
    _timing,
)


def _thresholds(args: ResourceValidationArgs, report: ReportViolation) -> None:
    hc = _failover_props(args).get("health_check") or {}
    for key in ("failure_threshold", "success_threshold"):
        value = hc.get(key)
        if is_unknown(value):
            continue
        if value is None or int(value) < 1:
            report(f"health check {key} is {show(value)}; it must be >= 1 or a single probe flips the weights")


health_check_thresholds = resource_policy(
    "health-check-thresholds",
    "Health check failure and success thresholds are at least 1.",
    "Set edgefabric:healthCheck.failureThreshold and successThreshold to 1 or more (seed: 3 and 2).",
    _thresholds,
)


def _notifications(args: StackValidationArgs, report: ReportViolation) -> None:
    holders = [r for r in args.resources if r.resource_type in (GLOBAL_TRAFFIC, WEIGHTED_FAILOVER)]
    if not holders:
        args.not_applicable("this stack publishes no failover record")
    channels: list[Any] = []
    for r in holders:
        found = plain(r.props).get("notifications")
        if isinstance(found, list):
            channels += found
    if not channels:
        # Channels are configuration the controller and providers read, not resources.
        failover = stack_config("failover")
        found = failover.get("notifications") if isinstance(failover, dict) else None
        channels = list(found) if isinstance(found, list) else []
    if not channels:
        report("failover transitions notify nobody: no notification channel (slack, pagerduty, email) is "
               "configured in edgefabric:failover.notifications", holders[0].urn)


failover_notifications = stack_policy(
    "failover-notifications",
    "Failover transitions notify at least one channel (staging and prod).",
    "Add a slack, pagerduty or email channel under edgefabric:failover.notifications, with its "
    "secret as an env:/config: reference.",
    _notifications,
)

# The zone backends of a failover record (Traffic Manager answers only under its own domain).
ZONE_BACKENDS = ("route53", "gcp_dns", "powerdns")
ROUTE53_RECORD = "aws:route53/record:Record"
CLOUD_DNS_RECORD = "gcp:dns/recordSet:RecordSet"
TM_DOMAIN = "trafficmanager.net."


def _fqdn(name: Any) -> str:
    text = str(name).lower()
    return text if text.endswith(".") else text + "."


def _dns_records(args: StackValidationArgs) -> list[tuple[str, str, list[str]]]:
    """(type, FQDN, values) of every Route53 record and Cloud DNS record set the stack declares;
    values still unknown in a preview are left out."""
    out = []
    for r in args.resources:
        if r.resource_type not in (ROUTE53_RECORD, CLOUD_DNS_RECORD):
            continue
        p = plain(r.props)
        values = p.get("records" if r.resource_type == ROUTE53_RECORD else "rrdatas")
        if is_unknown(p.get("name")) or is_unknown(p.get("type")):
            continue
        known = [_fqdn(v) for v in values if not is_unknown(v)] if isinstance(values, list) else []
        out.append((str(p.get("type")), _fqdn(p.get("name")), known))
    return out


def _one_zone(args: StackValidationArgs, report: ReportViolation) -> None:
    failovers = [r for r in args.resources if r.resource_type == WEIGHTED_FAILOVER]
    if not failovers:
        args.not_applicable("this stack publishes no failover record")
    records = _dns_records(args)
    for f in failovers:
        p = plain(f.props)
        name, backends = p.get("record_name", f.name), p.get("backends") or {}
        if is_unknown(backends) or not isinstance(backends, dict):
            continue
        settings = {b: (backends.get(b) or {}) for b in ZONE_BACKENDS if b in backends}
        own = sorted(b for b, s in settings.items() if not s.get("secondary_zone"))
        if len(own) > 1:
            report(f"'{name}' is published under the same name by {' and '.join(own)}: two authoritative zones "
                   "answer it, and a failover written to one is not seen in the other", f.urn)
        for backend, s in settings.items():
            zone = s.get("secondary_zone")
            if zone and not any(t == "NS" and n == _fqdn(zone) for t, n, _ in records):
                report(f"{backend} publishes '{name}' in its zone '{zone}', but no NS record in the stack "
                       "delegates that zone: its standby name resolves nowhere", f.urn)
        tm = backends.get("azure_tm") or {}
        relative = tm.get("relative_dns_name") if isinstance(tm, dict) else None
        if relative and not is_unknown(relative):
            target = f"{relative}.{TM_DOMAIN}"
            if not any(t == "CNAME" and target in values for t, _, values in records):
                report(f"nothing CNAMEs to the Traffic Manager profile '{target}' of '{name}': no name of the "
                       "stack reaches it", f.urn)


one_authoritative_zone = stack_policy(
    "one-authoritative-zone",
    "Each published name is answered by one authoritative zone; every other zone backend publishes in a "
    "subzone delegated from it, and a CNAME leads to each Traffic Manager profile.",
    "Set edgefabric:dns.authority, give the other zone backends subzones of its zone "
    "(gcpDns.dnsName, route53.zoneName), and let GlobalTraffic write the delegations and aliases.",
    _one_zone,
)


POLICIES = [failover_ttl, failover_clouds, health_check_timing, health_check_thresholds, failover_notifications,
            one_authoritative_zone]
