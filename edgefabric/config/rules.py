"""Cross-field rules of the stack config: what types alone cannot express.

Pure functions over a parsed `StackConfig`; each problem names its key path, the bad
value and what is allowed. `load_config` runs them after the models have parsed.
"""

from __future__ import annotations

import collections
import ipaddress
import re
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from edgefabric.config import zones
from edgefabric.config.kubernetes_rules import kubernetes_problems
from edgefabric.config.models import (
    CustomCheck,
    DnsConfig,
    EdgeService,
    EdgeSite,
    RegionalService,
    StackConfig,
    Workload,
    _check_url,
    cpu_cores,
    memory_mb,
)
from edgefabric.config.vocab import CLOUDS, CLUSTER_AUTOSCALER_RELEASES, MAX_FAR_REGION_CLUSTERS
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
    p += kubernetes_problems(cfg)
    p += cloud_run_problems(cfg)
    p += region_cluster_problems(cfg)
    for path, cloud, size in cfg.cluster_sizes:
        if cloud == "aws" and cloud in cfg.clouds.created and size.kubernetes_version not in CLUSTER_AUTOSCALER_RELEASES:
            # EKS node groups scale only through cluster-autoscaler, cut per minor version.
            p.append(Problem(f"{path}.kubernetesVersion", size.kubernetes_version,
                             f"a version with a cluster-autoscaler release: {', '.join(CLUSTER_AUTOSCALER_RELEASES)}"))
        if size.min_nodes > size.max_nodes:
            p.append(Problem(f"{path}.minNodes", size.min_nodes, f"must be <= maxNodes ({size.max_nodes})"))
        if not size.min_nodes <= size.node_count <= size.max_nodes:
            p.append(Problem(f"{path}.nodeCount", size.node_count,
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
        p += dns_record_problems(cfg)
        p += controller_problems(cfg)

    if cfg.registry is not None and cfg.registry.enabled:
        reg = cfg.registry
        p += rpc_url_problems(reg.rpc_url, reg.rpc_url_ref)
        if reg.service_ttl_s < 3 * reg.heartbeat_interval_s:
            p.append(Problem("registry.serviceTtlS", reg.service_ttl_s,
                             f">= 3 x registry.heartbeatIntervalS ({3 * reg.heartbeat_interval_s}), so two "
                             "missed heartbeats do not expire a service"))
    p += data_flow_problems(cfg)
    return p


# A path segment that looks like an API key (hosted nodes: /v3/<key>, /v2/<key>).
_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9_-]{20,}$")


def rpc_url_problems(url: str | None, ref: str | None) -> list[Problem]:
    """Exactly one of registry.rpcUrl / rpcUrlRef; a plain rpcUrl carries no credentials (it
    lands in state, outputs, the agents' environment and messages). The value shown for a bad
    URL is only its scheme and host, never the credential."""
    if url is None and ref is None:
        return [Problem("registry.rpcUrl", None, "an http(s) JSON-RPC URL, or a secret reference in registry.rpcUrlRef")]
    if url is not None and ref is not None:
        return [Problem("registry.rpcUrlRef", ref, "unset while registry.rpcUrl is set: one of the two")]
    if url is None:
        return []
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname}/..."
    if parts.username or parts.password or parts.query or any(
            _KEY_SEGMENT.match(seg) for seg in parts.path.split("/")):
        return [Problem("registry.rpcUrl", shown, "a URL without credentials (no user:password, query or "
                                                  "key-like path segment); put a URL carrying an API key in a "
                                                  "secret and name it in registry.rpcUrlRef")]
    return []


def data_flow_problems(cfg: StackConfig) -> list[Problem]:
    """The bridges need a broker at every tier and one region per site; a topic root travels
    one way only (a root both up and down would loop between the tiers)."""
    flows = cfg.data_flows
    if flows is None or not flows.enabled:
        return []
    p: list[Problem] = []
    regions = {r.name: r for r in cfg.regions}
    sites = [s.name for s in cfg.edge.sites]
    for site, target in flows.sites.items():
        if site not in sites:
            p.append(Problem(f"dataFlows.sites.{site}", target,
                             f"a key naming an edge site: {', '.join(sites) or '(no edge.sites)'}"))
        elif target not in regions:
            p.append(Problem(f"dataFlows.sites.{site}", target,
                             f"a region name: {', '.join(regions) or '(no regions)'}"))
    for i, site_cfg in enumerate(cfg.edge.sites):
        if site_cfg.name not in flows.sites:
            p.append(Problem(f"dataFlows.sites.{site_cfg.name}", None,
                             f"the region edge.sites[{i}] bridges to: {', '.join(regions) or '(no regions)'}"))
        if not any(s.kind == "sensor-ingest" for s in site_cfg.services):
            p.append(Problem(f"edge.sites[{i}].services", [s.kind for s in site_cfg.services],
                             "a service of kind sensor-ingest: the site's MQTT broker, which dataFlows bridges"))
        p += _single_broker(site_cfg.services, "sensor-ingest", f"edge.sites[{i}]")
    for i, region in enumerate(cfg.regions):
        if not any(s.kind == "device-management" for s in region.services):
            p.append(Problem(f"regions[{i}].services", [s.kind for s in region.services],
                             "a service of kind device-management: the region's MQTT broker, which dataFlows "
                             "bridges"))
        p += _single_broker(region.services, "device-management", f"regions[{i}]")
    seen: dict[str, str] = {}
    for key, topics in (("up", flows.up), ("regionalUp", flows.regional_up), ("down", flows.down)):
        for j, topic in enumerate(topics):
            where = f"dataFlows.{key}[{j}].root"
            if topic.root in seen:
                p.append(Problem(where, topic.root,
                                 f"a root not already in {seen[topic.root]}: each root flows one way, once"))
            seen.setdefault(topic.root, f"dataFlows.{key}")
    for tier in ("edge", "region", "core"):
        buffer = getattr(flows.buffers, tier)
        if buffer.max_inflight_messages > buffer.max_queued_messages:
            p.append(Problem(f"dataFlows.buffers.{tier}.maxInflightMessages", buffer.max_inflight_messages,
                             f"<= maxQueuedMessages ({buffer.max_queued_messages})"))
    return p


def _single_broker(services: Sequence[RegionalService | EdgeService], kind: str, path: str) -> list[Problem]:
    """A bridged broker runs one replica: two would each hold half of the bridges' sessions
    and queues, and an upstream would see one bridge client id connect twice."""
    return [Problem(f"{path}.services[{j}].replicas", svc.replicas,
                    f"1 for the {kind} broker while dataFlows bridges it")
            for j, svc in enumerate(services) if svc.kind == kind and svc.replicas != 1]


def dns_record_problems(cfg: StackConfig) -> list[Problem]:
    """The published names: `dns.recordName` (following `dns.strategy`) and `dns.records`, at
    least one; each name once, below the one authoritative zone (`zone_problems`), following a defined
    strategy."""
    dns = cfg.dns
    if dns is None:
        return []
    p: list[Problem] = []
    known = f"a key of strategies: {', '.join(sorted(cfg.strategies)) or '(none defined)'}"
    if dns.record_name is None and dns.records is None:
        return [Problem("dns.recordName", None, "a name (FQDN with trailing dot), or a list in dns.records")]
    named: list[tuple[str, str]] = []
    if dns.record_name is not None:
        named.append(("dns.recordName", dns.record_name))
        if dns.strategy not in cfg.strategies:
            p.append(Problem("dns.strategy", dns.strategy, known))
    for i, r in enumerate(dns.records or []):
        named.append((f"dns.records[{i}].name", r.name))
        if r.strategy not in cfg.strategies:
            p.append(Problem(f"dns.records[{i}].strategy", r.strategy, known))
    seen: set[str] = set()
    for path, name in named:
        if name in seen:
            p.append(Problem(path, name, "each published name once (dns.recordName and dns.records)"))
        seen.add(name)
    if dns.backends.azure_tm is not None:
        # Each name of `records` gets Traffic Manager profiles of its own, `<profileName>-<first
        # label>`: the label must not name another record's, nor a routing rule's (`-<rule>`,
        # `-geo`) profile.
        taken = {r.name for r in cfg.routing.rules} | {"geo"}
        for i, r in enumerate(dns.records or []):
            label = r.name.split(".", 1)[0]
            if label in taken:
                p.append(Problem(f"dns.records[{i}].name", r.name,
                                 f"a first label other than {label!r}: the Traffic Manager profile "
                                 f"<profileName>-{label} is already another record's or rule's"))
            taken.add(label)
    return p + zone_problems(dns, named)


def zone_problems(dns: DnsConfig, named: Sequence[tuple[str, str]]) -> list[Problem]:
    """One authoritative zone (`edgefabric.config.zones`): the authority is one of the zone
    backends; the names lie below its zone; every other zone backend's zone is a subzone of it
    that holds none of the names, and their standby names `<first label>.<zone>` are distinct."""
    p: list[Problem] = []
    b = dns.backends
    if b.gcp_dns is not None and b.gcp_dns.dns_name is None:
        p.append(Problem("dns.backends.gcpDns.dnsName", None,
                         "the managed zone's DNS name (FQDN with trailing dot), e.g. gcp.dev.example.com."))
    hosting = [n for n in zones.ZONE_BACKENDS if getattr(b, n) is not None]
    allowed = " | ".join(zones.CONFIG_KEYS[n] for n in hosting) or "(no zone backend configured)"
    authority = dns.authority_backend
    if dns.authority is not None and authority not in hosting:
        p.append(Problem("dns.authority", dns.authority, f"a configured zone backend: {allowed}"))
        return p
    if b.azure_tm is not None and (not hosting or authority == "powerdns"):
        # A profile answers only under trafficmanager.net: a name of ours reaches it by a CNAME.
        p.append(Problem("dns.backends.azureTm", "configured", "a route53 or gcpDns zone beside it, as "
                         "dns.authority: the published names reach the profiles by CNAMEs in that zone"))
    if authority is None:
        if len(hosting) > 1:
            p.append(Problem("dns.authority", None, f"the backend whose zone answers for the names: {allowed} "
                             "(the others publish in subzones delegated from it; one name, one authoritative zone)"))
        return p
    zone_of = dns.zones
    top = zone_of.get(authority)
    if top is None:
        return p
    auth_key = zones.CONFIG_KEYS[authority]
    for path, name in named:
        if not zones.below(name, top):
            p.append(Problem(path, name, f"a name inside the {auth_key} zone {top!r} (the authoritative one, dns.authority)"))
    secondaries = {n: z for n, z in zone_of.items() if n != authority}
    if secondaries and authority == "powerdns":
        # The stack writes delegations through the clouds' providers, never into PowerDNS.
        p.append(Problem("dns.authority", dns.authority or "powerdns", "a cloud zone (route53 or gcpDns) when "
                         "there are other zone backends: the stack writes their delegations into it"))
        return p
    standby: dict[str, str] = {}
    for backend, zone in secondaries.items():
        where = f"dns.backends.{zones.CONFIG_KEYS[backend]}." + ("zoneName" if backend == "route53" else "dnsName")
        if not zones.below(zone, top):
            p.append(Problem(where, zone, f"a subzone of the authority's zone {top!r}: one name, one "
                             "authoritative zone; this zone is delegated from it"))
            continue
        for path, name in named:
            if zones.within(name, zone):
                p.append(Problem(where, zone, f"a subzone that holds none of the published names ({path} "
                                 f"{name!r} would be answered by two zones)"))
        for path, name in named:
            alias = zones.secondary_name(name, zone)
            if alias in standby:
                p.append(Problem(path, name, f"a first label other than {zones.first_label(name)!r}: its "
                                 f"standby name {alias!r} in {zone!r} is already {standby[alias]}'s"))
            standby[alias] = path
    return p


def controller_problems(cfg: StackConfig) -> list[Problem]:
    """`dns.controller`: somewhere to run, and a lease that outlives a tick and a backend call."""
    if cfg.dns is None or not cfg.dns.controller.deploy:
        return []
    ctl, p = cfg.dns.controller, []
    if not cfg.clouds.provisioned:
        p.append(Problem("dns.controller.deploy", True, "a core cluster to run in: at least one enabled cloud "
                         "without clouds.<cloud>.ingress (or set deploy: false)"))
    if ctl.lease_duration_s <= cfg.health_check.interval_s:
        p.append(Problem("dns.controller.leaseDurationS", ctl.lease_duration_s,
                         f"> healthCheck.intervalS ({cfg.health_check.interval_s:g}): the leader renews every tick"))
    private = [c for c in cfg.clouds.created
               if c in cfg.core.clusters and not cfg.core.clusters[c].api_allowed_cidrs]
    if len(private) > 1:
        # Each replica takes the lease in its peers' clusters, through their API servers: a
        # private endpoint is reachable only inside its own network, and no stack peers them.
        p.append(Problem("dns.controller.deploy", True,
                         f"API servers the replicas can reach across clouds: {', '.join(private)} have private "
                         "endpoints (apiAccess: runner); give them public endpoints restricted to the other "
                         "clouds' NAT addresses (apiAllowedCidrs), or deploy: false"))
    if ctl.lease_duration_s <= cfg.dns.apply_timeout_s:
        p.append(Problem("dns.controller.leaseDurationS", ctl.lease_duration_s,
                         f"> dns.applyTimeoutS ({cfg.dns.apply_timeout_s:g}): a backend call in flight cannot be "
                         "fenced, so the lease must outlast it"))
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
    if runtime == "docker":
        problems += _publish_address_problems(site.publish_address, f"{path}.publishAddress")
        if site.host.startswith("tcp://") and site.docker_tls is None:
            # Docker's API is root on the host: over TCP only with TLS both ways (port 2376).
            problems.append(Problem(f"{path}.dockerTls", None,
                                    "caRef, certRef and keyRef (secret references) for a tcp:// Docker host: "
                                    "the daemon's API is root on the host, so TLS with a client certificate"))
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


def _publish_address_problems(value: str, path: str) -> list[Problem]:
    """One interface's IPv4 address: the published ports reach that network and no other."""
    allowed = "one IPv4 address of the Docker host (127.0.0.1, or the interface its devices reach)"
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return [Problem(path, value, allowed)]
    if address.version != 4:
        return [Problem(path, value, allowed)]
    if address.is_unspecified:
        return [Problem(path, value, f"{allowed}; 0.0.0.0 publishes on every interface, public ones included")]
    return []


# RFC 5737 / RFC 3849 documentation ranges: no deployer ever connects from them.
DOCUMENTATION_NETWORKS = tuple(ipaddress.ip_network(n) for n in
                               ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))
KEYCLOAK = "quay.io/keycloak/keycloak"
VARNISH = "varnish"


def _repository(image: str) -> str:
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def region_cluster_problems(cfg: StackConfig) -> list[Problem]:
    """A region runs where it says (`regions[i].location`): on its cloud's core cluster when the
    core runs there, else on a cluster of its own: one this stack creates (`regions[i].cluster`,
    only on a cloud whose clusters it creates) or one the team brings (`regions[i].kubeconfigRef`)."""
    p: list[Problem] = []
    own: collections.Counter[str] = collections.Counter()
    for i, region in enumerate(cfg.regions):
        path = f"regions[{i}].cluster"
        core = cfg.core_location(region.cloud)
        if region.cluster is not None:
            own[region.cloud] += 1
            if own[region.cloud] > MAX_FAR_REGION_CLUSTERS:
                p.append(Problem(path, region.cluster.model_dump(by_alias=True),
                                 f"at most {MAX_FAR_REGION_CLUSTERS} regions of one cloud on clusters of their own "
                                 "(each gets private address ranges of its own; the plan holds that many)"))
            if region.kubeconfig_ref is not None:
                p.append(Problem(path, region.cluster.model_dump(by_alias=True),
                                 f"no cluster size: regions[{i}].kubeconfigRef brings the region's cluster; "
                                 "one or the other"))
        if region.kubeconfig_ref is not None and region.location == core:
            p.append(Problem(f"regions[{i}].kubeconfigRef", region.kubeconfig_ref,
                             f"none: the region is in {core!r}, where its cloud's core cluster runs it"))
        if region.cloud not in cfg.clouds.created:
            if region.cluster is not None:
                p.append(Problem(path, region.cluster.model_dump(by_alias=True),
                                 f"no cluster: clouds.{region.cloud} brings its cluster or an ingress, so this "
                                 "stack creates no cluster there; the region runs on the cloud's cluster, or on "
                                 f"one it brings (regions[{i}].kubeconfigRef)"))
            continue
        if region.cluster is not None:
            settings = cfg.clouds.get(region.cloud)
            key = "location" if region.cloud == "azure" else "region"
            try:
                type(settings).model_validate({key: region.location})
            except ValueError:
                p.append(Problem(f"regions[{i}].location", region.location,
                                 f"a {region.cloud} {key} its cluster can be created in, like clouds.{region.cloud}."
                                 f"{key} ({core!r})"))
        if region.location != core and region.cluster is None and region.kubeconfig_ref is None:
            p.append(Problem(path, None, f"a cluster size (as core.clusters.{region.cloud}), or regions[{i}]."
                             f"kubeconfigRef for one you run: the region is in {region.location!r} and its cloud's "
                             f"core in {core!r}, so it gets a cluster of its own there"))
        elif region.location == core and region.cluster is not None:
            p.append(Problem(path, region.cluster.model_dump(by_alias=True),
                             f"no cluster: the region is in {core!r}, where its cloud's core cluster runs it"))
    return p


def cloud_run_problems(cfg: StackConfig) -> list[Problem]:
    """What a created cluster needs to be reachable and its images to start: a way in to the
    API server (a runner in the network, or a public endpoint restricted to real CIDRs), a
    database for Keycloak, an origin for a varnish cache."""
    p: list[Problem] = []
    for path, _cloud, size in cfg.cluster_sizes:
        for k, cidr in enumerate(size.api_allowed_cidrs):
            net = ipaddress.ip_network(cidr, strict=False)
            if any(net.version == doc.version and net.subnet_of(doc) for doc in DOCUMENTATION_NETWORKS):  # type: ignore[arg-type]
                p.append(Problem(f"{path}.apiAllowedCidrs[{k}]", cidr,
                                 "the deployer's or CI's egress CIDR, not a documentation range "
                                 "(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32)"))
        if not size.api_allowed_cidrs and size.api_access != "runner":
            p.append(Problem(f"{path}.apiAccess", size.api_access,
                             "'runner' (pulumi runs inside the cluster's network) for a private endpoint, "
                             "or apiAllowedCidrs for a public endpoint restricted to them"))
        if size.api_allowed_cidrs and size.api_access == "runner":
            p.append(Problem(f"{path}.apiAccess", size.api_access,
                             "'public' (or unset) with apiAllowedCidrs; 'runner' means a private endpoint"))
    if cfg.clouds.created:
        for i, core_svc in enumerate(cfg.core.services):
            if _repository(core_svc.image) == KEYCLOAK and core_svc.database is None:
                p.append(Problem(f"core.services[{i}].database", None,
                                 "a PostgreSQL database (host, name, username, passwordRef): Keycloak's "
                                 "`start` refuses its dev-file store"))
    for i, region in enumerate(cfg.regions):
        gateways = [s for s in region.services if s.kind == "regional-gateway"]
        for j, regional in enumerate(region.services):
            if _repository(regional.image) == VARNISH and not gateways:
                p.append(Problem(f"regions[{i}].services[{j}].image", regional.image,
                                 "a region with a regional-gateway for the cache to front (its origin)"))
    return p
