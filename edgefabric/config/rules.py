"""Cross-field rules of the stack config: what types alone cannot express.

Pure functions over a parsed `StackConfig`; each problem names its key path, the bad
value and what is allowed. `load_config` runs them after the models have parsed.
"""

from __future__ import annotations

from collections.abc import Iterable

from edgefabric.config.models import (
    CustomCheck,
    EdgeSite,
    StackConfig,
    Workload,
    _check_url,
    cpu_cores,
    memory_mb,
)
from edgefabric.config.vocab import CLOUDS
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

    for cloud in cfg.clouds.created:
        if cloud not in cfg.core.clusters:
            p.append(Problem(f"core.clusters.{cloud}", None,
                             f"cloud {cloud!r} is enabled without an ingress or an existing cluster "
                             f"(clouds.{cloud}.cluster), so it needs a cluster size"))
    p += existing_cluster_problems(cfg)
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
                             f"a cloud whose core this stack deploys (a cluster it creates, or an existing "
                             f"clouds.<cloud>.cluster): {', '.join(provisioned) or '(none)'}"))
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
    p += health_check_problems(cfg)

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


def existing_cluster_problems(cfg: StackConfig) -> list[Problem]:
    """A cloud brings an existing cluster (`clouds.<cloud>.cluster`) or an existing ingress,
    not both; and a cluster size for a cloud whose cluster is not created here is a mistake
    (it would be silently ignored)."""
    p: list[Problem] = []
    for cloud in CLOUDS:
        settings = cfg.clouds.get(cloud)
        if settings.cluster is None:
            continue
        if settings.ingress is not None:
            p.append(Problem(f"clouds.{cloud}.cluster", settings.cluster.model_dump(by_alias=True),
                             f"clouds.{cloud}.cluster (deploy the core onto an existing cluster) or "
                             f"clouds.{cloud}.ingress (answer at an existing address, no core), not both"))
        if cloud in cfg.core.clusters:
            p.append(Problem(f"core.clusters.{cloud}", cfg.core.clusters[cloud].model_dump(by_alias=True),
                             f"no cluster size: clouds.{cloud}.cluster deploys onto an existing cluster, "
                             "which this stack does not create or size; remove this entry"))
    return p


def health_check_problems(cfg: StackConfig) -> list[Problem]:
    """Each check's own timeout fits the interval, and what the checks probe is served.

    The global record points at each provisioned cloud's ingress: the LoadBalancer Service of
    the first `api-gateway` core service (see `edgefabric.tiers.cloud_core`), which exposes
    exactly that service's ports. A check on any other port fails on every cloud, so DNS would
    fail open. Skipped when a cloud brings its own `ingress` (its ports are not ours to know),
    when no core services are declared, and without a `dns` section (nothing is probed).
    """
    hc = cfg.health_check
    p: list[Problem] = []
    for i, check in enumerate(hc.all_checks):
        if check.timeout_s is not None and check.timeout_s >= hc.interval_s:
            p.append(Problem(f"{hc.check_path(i)}.timeoutS", check.timeout_s,
                             f"must be < healthCheck.intervalS ({hc.interval_s:g})"))
    if cfg.dns is None or not cfg.core.services or any(cfg.clouds.get(c).ingress for c in cfg.clouds.enabled):
        return p
    gateways = [(j, s) for j, s in enumerate(cfg.core.services) if s.kind == "api-gateway"]
    for i, check in enumerate(hc.all_checks):
        if isinstance(check, CustomCheck):
            continue
        where = f"{hc.check_path(i)}.port"
        if not gateways:
            p.append(Problem(where, check.port, "a port of the api-gateway core service, the clouds' ingress; "
                                                "core.services declares no service of kind api-gateway"))
            continue
        j, gateway = gateways[0]
        ports = [port.port for port in gateway.ports]
        if check.port not in ports:
            p.append(Problem(where, check.port,
                             f"not a port of core.services[{j}] ({gateway.name}): {', '.join(map(str, ports))}; "
                             f"that service is the ingress the record points at: add the port to "
                             f"core.services[{j}].ports or probe one of these"))
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

