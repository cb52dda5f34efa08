"""The whole program under Pulumi mocks, for every shipped stack file."""

from __future__ import annotations

from collections import Counter

from edgefabric.config import StackConfig
from edgefabric.tiers.labels import K8S_LABEL_KEYS, TAG_KEYS
from tooling.render import Rendered, resolve

COMPONENT_PREFIX = "edgefabric:"
# Types whose tags/labels input we can check, and where the tags live in the inputs.
CLOUD_TAGGED = {
    "aws:ec2/vpc:Vpc": "tags", "aws:ec2/subnet:Subnet": "tags", "aws:iam/role:Role": "tags",
    "aws:eks/cluster:Cluster": "tags", "aws:eks/nodeGroup:NodeGroup": "tags",
    "azure-native:resources:ResourceGroup": "tags",
    "azure-native:containerservice:ManagedCluster": "tags",
    "gcp:container/cluster:Cluster": "resourceLabels",
}


def expected_counts(cfg: StackConfig) -> Counter[str]:
    """What the config asks for, computed from the config alone."""
    want: Counter[str] = Counter()
    clouds = cfg.clouds.provisioned
    k8s_sites = [s for s in cfg.edge.sites if s.capabilities.runtime == "kubernetes"]
    docker_sites = [s for s in cfg.edge.sites if s.capabilities.runtime == "docker"]
    native_sites = [s for s in cfg.edge.sites if s.capabilities.runtime == "native"]
    core, regional = cfg.core.services, [s for r in cfg.regions for s in r.services]
    edge_k8s = [s for site in k8s_sites for s in site.services]
    # A region not where its cloud's core runs has its own cluster: created (`regions[].cluster`)
    # or brought (`regions[].kubeconfigRef`); either way a CloudCore and a provider of its own.
    own = [r for r in cfg.regions if r.cluster is not None]
    brought = [r for r in cfg.regions if r.kubeconfig_ref is not None]
    want["edgefabric:core:CloudCore"] = len(clouds) + len(own) + len(brought)
    want["edgefabric:edge:RegionalEdge"] = len(cfg.regions)
    want["edgefabric:edge:EdgeSite"] = len(cfg.edge.sites)
    # Managed clusters only where the stack creates them (not for `clouds.<cloud>.cluster`).
    created = cfg.clouds.created
    mine = {c: sum(1 for r in own if r.cloud == c) for c in ("aws", "azure", "gcp")}
    want["aws:eks/cluster:Cluster"] = int("aws" in created) + mine["aws"]
    want["azure-native:containerservice:ManagedCluster"] = int("azure" in created) + mine["azure"]
    want["gcp:container/cluster:Cluster"] = int("gcp" in created) + mine["gcp"]
    want["kubernetes:apps/v1:Deployment"] = len(core) * len(clouds) + len(regional) + len(edge_k8s)
    want["kubernetes:core/v1:Service"] = want["kubernetes:apps/v1:Deployment"]
    # EKS's cluster-autoscaler (no Service: nothing calls it).
    want["kubernetes:apps/v1:Deployment"] += int("aws" in created) + mine["aws"]
    want["kubernetes:core/v1:Namespace"] = len(clouds) + len(cfg.regions) + len(k8s_sites)
    want["kubernetes:autoscaling/v2:HorizontalPodAutoscaler"] = sum(1 for s in core if s.autoscale) * len(clouds)
    want["kubernetes:policy/v1:PodDisruptionBudget"] = (
        sum(1 for s in core if s.replicas > 1 or s.autoscale) * len(clouds)
        + sum(1 for s in regional if s.replicas > 1))
    want["pulumi:providers:kubernetes"] = len(clouds) + len(own) + len(brought) + len(k8s_sites)
    want["docker:index/container:Container"] = sum(len(s.services) for s in docker_sites)
    want["pulumi:providers:docker"] = len(docker_sites)
    want["command:remote:Command"] = sum(len(s.services) for s in native_sites)
    registry = cfg.registry is not None and cfg.registry.enabled
    want["edgefabric:registry:BlockchainRegistry"] = int(registry)
    want["pulumi-python:dynamic/registry:RegistryContract"] = int(registry)
    # Core, regional and edge services alike.
    want["pulumi-python:dynamic/registry:ServiceRegistration"] = (
        len(core) + len(regional) + sum(len(s.services) for s in cfg.edge.sites)) if registry else 0
    # The deployment ledger: its contract and this deployment's entry.
    want["edgefabric:ledger:DeploymentLedger"] = int(registry)
    want["pulumi-python:dynamic/ledger:LedgerContract"] = int(registry)
    want["pulumi-python:dynamic/ledger:DeploymentRecord"] = int(registry)
    if registry:  # a heartbeat agent, its namespace and its key Secret on every core cluster
        want["kubernetes:apps/v1:Deployment"] += len(clouds)
        want["kubernetes:core/v1:Namespace"] += len(clouds)
    want["kubernetes:core/v1:Secret"] = len(clouds) if registry else 0
    # Keycloak's database password, on every core cluster.
    want["kubernetes:core/v1:Secret"] += sum(1 for s in core if s.database) * len(clouds)
    want["edgefabric:traffic:GlobalTraffic"] = int(cfg.dns is not None)
    # One per published name (`dns.recordName` and `dns.records`).
    want["pulumi-python:dynamic/failover:WeightedFailover"] = len(cfg.dns.all_records) if cfg.dns else 0
    if cfg.dns is not None and cfg.dns.controller.deploy:
        # The failover controller on every core cluster: its namespace, Deployment, env Secret,
        # its account's token Secret, and a Secret of the other clusters' kubeconfigs when
        # there are others.
        want["kubernetes:apps/v1:Deployment"] += len(clouds)
        want["kubernetes:core/v1:Namespace"] += len(clouds)
        want["kubernetes:core/v1:Secret"] += len(clouds) * (3 if len(clouds) > 1 else 2)
    flows = cfg.data_flows if cfg.data_flows is not None and cfg.data_flows.enabled else None
    want["edgefabric:dataflow:DataFlows"] = int(flows is not None)
    want["pulumi-python:dynamic/pki:CertificateAuthority"] = int(flows is not None)
    want["pulumi-python:dynamic/pki:Certificate"] = 0
    if flows is not None:
        # A core broker on every cloud that hosts a region (namespace, Deployment, Service);
        # each region's a LoadBalancer `mqtt-bridge`; every broker (core, region, and each
        # site's) a certificate Secret, a server and a local-client certificate, and every
        # broker with an upstream one bridge certificate more.
        core_clouds = {r.cloud for r in cfg.regions}
        brokers = len(core_clouds) + len(cfg.regions) + len(flows.sites)
        want["kubernetes:apps/v1:Deployment"] += len(core_clouds)
        want["kubernetes:core/v1:Namespace"] += len(core_clouds)
        want["kubernetes:core/v1:Service"] += len(core_clouds) + len(cfg.regions)
        want["kubernetes:core/v1:Secret"] += len(core_clouds) + len(cfg.regions) + sum(
            1 for s in k8s_sites if s.name in flows.sites)
        want["pulumi-python:dynamic/pki:Certificate"] = 2 * brokers + (brokers - len(core_clouds))
    # Native checkers need the cloud's provider: none on an existing cluster.
    route53 = cfg.dns is not None and cfg.dns.backends.route53 is not None and "aws" in created
    want["aws:route53/healthCheck:HealthCheck"] = len(cfg.clouds.enabled) if route53 else 0
    return want


def test_every_stack_renders(stack: tuple[StackConfig, Rendered]) -> None:
    cfg, rendered = stack
    assert rendered.outputs["environment"] == cfg.environment
    assert set(rendered.outputs["ingress"]) == set(cfg.clouds.enabled)


def test_resource_counts_match_config(stack: tuple[StackConfig, Rendered]) -> None:
    cfg, rendered = stack
    have = Counter(r.type for r in rendered.resources)
    for typ, count in expected_counts(cfg).items():
        assert have[typ] == count, f"{rendered.stack}: {typ}: registered {have[typ]}, config asks for {count}"


def test_every_resource_has_a_component_ancestor(stack: tuple[StackConfig, Rendered]) -> None:
    _, rendered = stack
    by_urn = rendered.by_urn()
    for res in rendered.resources:
        if res.type == "pulumi:pulumi:Stack" or res.type.startswith(COMPONENT_PREFIX):
            continue
        chain, parent = [], res.parent
        while parent and not by_urn[parent].type.startswith(COMPONENT_PREFIX):
            chain.append(parent)
            parent = by_urn[parent].parent
        assert parent, f"{res.urn} has no edgefabric component among its ancestors ({chain})"


def test_taggable_resources_carry_standard_tags(stack: tuple[StackConfig, Rendered]) -> None:
    _, rendered = stack
    for res in rendered.resources:
        if res.type in CLOUD_TAGGED:
            tags = res.inputs.get(CLOUD_TAGGED[res.type]) or {}
            missing = [k for k in TAG_KEYS if k not in tags]
            assert not missing, f"{res.urn}: missing tags {missing}"
            assert tags["environment"] == rendered.outputs["environment"], res.urn
        if res.type.startswith("kubernetes:") and not res.type.startswith("pulumi:providers"):
            labels = (res.inputs.get("metadata") or {}).get("labels") or {}
            missing = [k for k in K8S_LABEL_KEYS if k not in labels]
            assert not missing, f"{res.urn}: missing labels {missing}"
        if res.type == "pulumi:providers:docker" and res.inputs["host"].startswith("tcp://"):
            # Docker's API is root on its host: over TCP only with TLS both ways, as secrets.
            material = ("caMaterial", "certMaterial", "keyMaterial")
            assert all(res.inputs.get(k) for k in material) and set(material) <= set(res.secret_inputs), res.urn
        if res.type == "docker:index/container:Container":
            keys = {label["label"] for label in res.inputs.get("labels", [])}
            assert set(TAG_KEYS) <= keys, f"{res.urn}: labels {sorted(keys)}"
            # Published on the site's address (loopback by default), never on every interface;
            # the cache (redis) is not published at all: only the site's containers reach it.
            ports = res.inputs.get("ports") or []
            assert all(port["ip"] == "127.0.0.1" for port in ports), res.urn
            assert bool(ports) == (res.name.endswith(("-edge-gateway", "-sensor-ingest"))), res.urn
            # Our runnable config and the data flows' files never land twice on one path.
            paths = [u["file"] for u in res.inputs.get("uploads") or []]
            assert len(paths) == len(set(paths)), (res.urn, paths)


def test_kubeconfig_outputs_are_secret(stack: tuple[StackConfig, Rendered]) -> None:
    cfg, rendered = stack
    assert "kubeconfigs" in rendered.secret_outputs
    for cloud, core in rendered.namespace["cores"].items():
        assert resolve(core.kubeconfig).secret, f"{rendered.stack}: {cloud} kubeconfig is not secret"
    k8s_providers = rendered.of_type("pulumi:providers:kubernetes")
    assert all("kubeconfig" in p.secret_inputs for p in k8s_providers), "a kubeconfig went in plain"
    assert len(k8s_providers) == len(cfg.clouds.provisioned) + sum(1 for r in cfg.regions if r.cluster or r.kubeconfig_ref) + sum(
        1 for s in cfg.edge.sites if s.capabilities.runtime == "kubernetes")


def test_deployments_have_resources_probes_and_pinned_images(stack: tuple[StackConfig, Rendered]) -> None:
    _, rendered = stack
    for dep in rendered.of_type("kubernetes:apps/v1:Deployment"):
        for c in dep.inputs["spec"]["template"]["spec"]["containers"]:
            where = f"{dep.urn} container {c['name']}"
            assert c["resources"].get("requests", {}).keys() >= {"cpu", "memory"}, where
            assert c["resources"].get("limits", {}).keys() >= {"cpu", "memory"}, where
            assert "livenessProbe" in c and "readinessProbe" in c, where
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{where}: {image}"
            assert c["securityContext"]["privileged"] is False, where


def test_explicit_providers_everywhere(stack: tuple[StackConfig, Rendered]) -> None:
    _, rendered = stack
    for res in rendered.resources:
        if not res.custom or res.type.startswith("pulumi:providers:"):
            continue
        if res.type.split(":")[0] in ("aws", "azure-native", "gcp", "kubernetes", "docker", "command"):
            # A provider reference is "<provider urn>::<id>"; the engine's defaults are named default_*.
            assert "pulumi:providers:" in res.provider, f"{res.urn} uses the ambient default provider"
            assert "::default" not in res.provider, f"{res.urn} uses a default provider"


def test_edge_requests_equal_declared_requirements(stack: tuple[StackConfig, Rendered]) -> None:
    cfg, rendered = stack
    deployments = {r.name: r for r in rendered.of_type("kubernetes:apps/v1:Deployment")}
    for site in cfg.edge.sites:
        if site.capabilities.runtime != "kubernetes":
            continue
        for svc in site.services:
            dep = deployments[f"{site.name}-{svc.name}"]
            spec = dep.inputs["spec"]["template"]["spec"]
            req = spec["containers"][0]["resources"]["requests"]
            assert req["cpu"] == f"{round(svc.requirements.cpu * 1000)}m"
            assert req["memory"] == f"{svc.requirements.memory_mb}Mi"
            assert spec["nodeSelector"] == cfg.edge.node_selector
            assert spec["tolerations"][0]["key"] == cfg.edge.toleration_key


def test_cloud_native_checks_are_wired_into_the_failover(stack: tuple[StackConfig, Rendered]) -> None:
    """Route53 weighted sets carry the Route53 check ids; Cloud DNS items name the GCP check."""
    cfg, rendered = stack
    failovers = rendered.of_type("pulumi-python:dynamic/failover:WeightedFailover")
    if cfg.dns is None or "gcp" not in cfg.clouds.provisioned or cfg.dns.backends.gcp_dns is None:
        return
    (failover,) = failovers
    (check,) = rendered.of_type("gcp:compute/healthCheck:HealthCheck")
    assert failover.inputs["backends"]["gcp_dns"]["health_check"].endswith(f"/healthChecks/{check.name}")
    r53 = rendered.of_type("aws:route53/healthCheck:HealthCheck")
    assert set(failover.inputs["health_check_ids"]) == set(cfg.clouds.enabled) and len(r53) == 3


def test_heartbeat_agents_carry_the_config_hash_the_ledger_records(stack: tuple[StackConfig, Rendered]) -> None:
    """Each agent gets `config_hash(cfg)` (what this `up`'s ledger entry records), its stack and
    the ledger's first block, so it can report a config the ledger does not hold."""
    from edgefabric.chain.ledger import config_hash

    cfg, rendered = stack
    [entry] = rendered.of_type("pulumi-python:dynamic/ledger:DeploymentRecord") or [None]
    agents = [d for d in rendered.of_type("kubernetes:apps/v1:Deployment") if d.name.endswith("-agent")
              and d.inputs["metadata"]["name"] == "heartbeat-agent"]
    if entry is None:
        assert not agents
        return
    for dep in agents:
        [c] = dep.inputs["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["EDGEFABRIC_CONFIG_HASH"] == entry.inputs["config_hash"] == config_hash(cfg), dep.name
        assert env["EDGEFABRIC_STACK"] == entry.inputs["stack"] == rendered.stack
        assert "EDGEFABRIC_LEDGER_ADDRESS" in env and "EDGEFABRIC_LEDGER_FROM_BLOCK" in env
