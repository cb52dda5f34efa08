"""Cross-field rules of the stack config: what types alone cannot express.

Pure functions over a parsed `StackConfig`; each problem names its key path, the bad
value and what is allowed. `load_config` runs them after the models have parsed.
"""

from __future__ import annotations

from collections.abc import Iterable

from edgefabric.config.models import (
    EdgeSite,
    StackConfig,
    Workload,
    _check_url,
    cpu_cores,
    memory_mb,
)
from edgefabric.errors import Problem


def _dupes(items: Iterable[str]) -> list[tuple[int, str]]:
    seen: set[str] = set()
    out = []
    for i, item in enumerate(items):
        if item in seen:
            out.append((i, item))
        seen.add(item)
    return out


def placement_problems(site: EdgeSite, path: str) -> list[Problem]:
    """The seed's capability check: every service, and all of them together (times their
    replicas), must fit the site's declared node capabilities."""
    problems: list[Problem] = []
    caps = site.capabilities
    used = {"cpu": 0.0, "memoryMb": 0.0, "storageMb": 0.0}
    limits = {"cpu": caps.cpu, "memoryMb": caps.memory_mb, "storageMb": caps.storage_mb}
    for j, svc in enumerate(site.services):
        req = {"cpu": svc.requirements.cpu, "memoryMb": svc.requirements.memory_mb,
               "storageMb": svc.requirements.storage_mb}
        for key, amount in req.items():
            total = amount * svc.replicas
            where = f"{path}.services[{j}].requirements.{key}"
            if total > limits[key] - used[key] + 1e-9:
                free = limits[key] - used[key]
                problems.append(Problem(
                    where, amount,
                    f"service {svc.name!r} ({svc.replicas} replica(s)) needs {total:g} but site "
                    f"{site.name!r} has {free:g} of {limits[key]:g} {key} left; allowed: <= "
                    f"{max(free, 0) / svc.replicas:g} per replica",
                ))
            used[key] += total
    return problems


def semantic_problems(cfg: StackConfig) -> list[Problem]:
    """Cross-field rules that types alone cannot express. Pure; returns every problem."""
    p: list[Problem] = []
    enabled = cfg.clouds.enabled
    provisioned = cfg.clouds.provisioned
    enabled_text = f"an enabled cloud: {', '.join(enabled) or '(none enabled)'}"

    for cloud in provisioned:
        if cloud not in cfg.core.clusters:
            p.append(Problem(f"core.clusters.{cloud}", None,
                             f"cloud {cloud!r} is enabled without an ingress, so it needs a cluster size"))
    for cloud, size in cfg.core.clusters.items():
        if size.min_nodes > size.max_nodes:
            p.append(Problem(f"core.clusters.{cloud}.minNodes", size.min_nodes,
                             f"must be <= maxNodes ({size.max_nodes})"))
        if not size.min_nodes <= size.node_count <= size.max_nodes:
            p.append(Problem(f"core.clusters.{cloud}.nodeCount", size.node_count,
                             f"must be within minNodes..maxNodes ({size.min_nodes}..{size.max_nodes})"))
    for i, name in _dupes(s.name for s in cfg.core.services):
        p.append(Problem(f"core.services[{i}].name", name, "core service names must be unique"))
    for i, svc in enumerate(cfg.core.services):
        p += _workload_problems(svc, f"core.services[{i}]")
        if svc.autoscale and svc.autoscale.min_replicas > svc.autoscale.max_replicas:
            p.append(Problem(f"core.services[{i}].autoscale.minReplicas", svc.autoscale.min_replicas,
                             f"must be <= maxReplicas ({svc.autoscale.max_replicas})"))
        if svc.oauth2_issuer is not None:
            try:
                _check_url(svc.oauth2_issuer, ("https",))
            except ValueError as exc:
                p.append(Problem(f"core.services[{i}].oauth2Issuer", svc.oauth2_issuer, str(exc)))

    for i, name in _dupes(r.name for r in cfg.regions):
        p.append(Problem(f"regions[{i}].name", name, "region names must be unique"))
    for i, region in enumerate(cfg.regions):
        if region.cloud not in provisioned:
            p.append(Problem(f"regions[{i}].cloud", region.cloud,
                             f"a cloud whose core cluster this stack provisions: {', '.join(provisioned) or '(none)'}"))
        for j, name in _dupes(s.name for s in region.services):
            p.append(Problem(f"regions[{i}].services[{j}].name", name, "service names must be unique per region"))
        for j, regional in enumerate(region.services):
            p += _workload_problems(regional, f"regions[{i}].services[{j}]")

    for i, name in _dupes(s.name for s in cfg.edge.sites):
        p.append(Problem(f"edge.sites[{i}].name", name, "edge site names must be unique"))
    for i, site in enumerate(cfg.edge.sites):
        path = f"edge.sites[{i}]"
        for j, name in _dupes(s.name for s in site.services):
            p.append(Problem(f"{path}.services[{j}].name", name, "service names must be unique per site"))
        p += placement_problems(site, path)
        p += _site_access_problems(site, path)

    core_names = {s.name for s in cfg.core.services}
    for name, strat in cfg.strategies.items():
        path = f"strategies.{name}"
        if core_names and name not in core_names:
            p.append(Problem(path, name, f"a core service name: {', '.join(sorted(core_names))}"))
        for role in ("primary", "secondary", "tertiary"):
            cloud = getattr(strat, role)
            if cloud is not None and cloud not in enabled:
                p.append(Problem(f"{path}.{role}", cloud, enabled_text))
        order = strat.order
        if len(set(order)) != len(order):
            p.append(Problem(f"{path}", order, "primary, secondary and tertiary must be different clouds"))
        if strat.tertiary and not strat.secondary:
            p.append(Problem(f"{path}.tertiary", strat.tertiary, "set secondary before tertiary"))

    seen_regions: dict[str, int] = {}
    for i, rule in enumerate(cfg.routing.rules):
        if rule.cloud not in enabled:
            p.append(Problem(f"routing.rules[{i}].cloud", rule.cloud, enabled_text))
        for k, user_region in enumerate(rule.regions):
            if user_region in seen_regions:
                p.append(Problem(f"routing.rules[{i}].regions[{k}]", user_region,
                                 f"each user region in one rule only; already in rules[{seen_regions[user_region]}]"))
            seen_regions[user_region] = i
    for i, name in _dupes(r.name for r in cfg.routing.rules):
        p.append(Problem(f"routing.rules[{i}].name", name, "rule names must be unique"))

    hc = cfg.health_check
    if hc.timeout_s >= hc.interval_s:
        p.append(Problem("healthCheck.timeoutS", hc.timeout_s,
                         f"must be < healthCheck.intervalS ({hc.interval_s:g})"))

    if cfg.dns is not None:
        if not cfg.dns.backends.names:
            p.append(Problem("dns.backends", {}, "at least one of route53, azureTm, gcpDns, powerdns"))
        if not enabled:
            p.append(Problem("clouds", "(none enabled)", "dns needs at least one enabled cloud to answer"))
        if cfg.dns.strategy not in cfg.strategies:
            p.append(Problem("dns.strategy", cfg.dns.strategy,
                             f"a key of strategies: {', '.join(sorted(cfg.strategies)) or '(none defined)'}"))
        backends = cfg.dns.backends
        zones = {"route53": backends.route53.zone_name if backends.route53 else None,
                 "powerdns": backends.powerdns.zone if backends.powerdns else None}
        for key, zone in zones.items():
            if zone is not None and not cfg.dns.record_name.endswith("." + zone):
                p.append(Problem("dns.recordName", cfg.dns.record_name,
                                 f"a name inside the {key} zone {zone!r}"))

    if cfg.registry is not None and cfg.registry.enabled:
        reg = cfg.registry
        if reg.service_ttl_s < 3 * reg.heartbeat_interval_s:
            p.append(Problem("registry.serviceTtlS", reg.service_ttl_s,
                             f">= 3 x registry.heartbeatIntervalS ({3 * reg.heartbeat_interval_s}), so two "
                             "missed heartbeats do not expire a service"))
    return p


def _workload_problems(svc: Workload, path: str) -> list[Problem]:
    p: list[Problem] = []
    if svc.cpu_limit and cpu_cores(svc.cpu_limit) < cpu_cores(svc.cpu):
        p.append(Problem(f"{path}.cpuLimit", svc.cpu_limit, f"must be >= cpu request ({svc.cpu})"))
    if svc.memory_limit and memory_mb(svc.memory_limit) < memory_mb(svc.memory):
        p.append(Problem(f"{path}.memoryLimit", svc.memory_limit, f"must be >= memory request ({svc.memory})"))
    for k, name in _dupes(port.name for port in svc.ports):
        p.append(Problem(f"{path}.ports[{k}].name", name, "port names must be unique per service"))
    return p


def _site_access_problems(site: EdgeSite, path: str) -> list[Problem]:
    runtime = site.capabilities.runtime
    if runtime == "kubernetes":
        if site.kubeconfig_ref is None:
            return [Problem(f"{path}.kubeconfigRef", None,
                            "a secret reference (env:NAME or config:KEY) for runtime 'kubernetes'")]
        return []
    schemes = ("ssh", "tcp") if runtime == "docker" else ("ssh",)
    if site.host is None:
        return [Problem(f"{path}.host", None, f"a {' or '.join(s + '://' for s in schemes)} address for runtime {runtime!r}")]
    try:
        _check_url(site.host, schemes)
    except ValueError as exc:
        return [Problem(f"{path}.host", site.host, str(exc))]
    problems: list[Problem] = []
    if runtime == "native" and site.ssh_key_ref is None:
        # Docker over ssh:// uses the operator's ssh-agent; native units need the key itself.
        problems.append(Problem(f"{path}.sshKeyRef", None,
                                "a secret reference to the SSH private key for runtime 'native'"))
    for j, svc in enumerate(site.services):
        # Outside Kubernetes there is no scheduler to spread replicas or share ports.
        if svc.replicas != 1:
            problems.append(Problem(f"{path}.services[{j}].replicas", svc.replicas,
                                    f"1 for runtime {runtime!r} (only kubernetes sites run replicas)"))
        if runtime == "native" and not svc.exec_start:
            problems.append(Problem(f"{path}.services[{j}].execStart", None,
                                    "the command the systemd unit runs, for runtime 'native'"))
    return problems

