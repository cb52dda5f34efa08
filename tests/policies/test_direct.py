"""Each policy called directly: one passing and one violating case, with the message."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pulumi
import pytest

from policies.rules import clusters, placement, registry, secrets, tags, traffic, workloads
from policies.rules.runtime import secret
from tests.kits.policy import NOT_APPLICABLE, check, run, stack_args

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
K8S_LABELS = {
    "edgefabric.io/environment": "prod", "edgefabric.io/tier": "core",
    "edgefabric.io/cloud": "aws", "app.kubernetes.io/managed-by": "edgefabric",
}
CLOUD_TAGS = {"environment": "prod", "tier": "core", "cloud": "aws", "managed-by": "edgefabric"}


def deployment(**container_overrides: Any) -> dict[str, Any]:
    container = {
        "name": "api", "image": "envoyproxy/envoy:v1.32.3",
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                      "limits": {"cpu": "500m", "memory": "512Mi"}},
        "livenessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
        "securityContext": {"runAsNonRoot": True, "privileged": False},
    }
    container.update(container_overrides)
    return {
        "metadata": {"name": "api", "labels": dict(K8S_LABELS)},
        "spec": {"replicas": 2, "template": {"metadata": {"labels": dict(K8S_LABELS)},
                                             "spec": {"containers": [container]}}},
    }


def without(d: dict[str, Any], *path: str) -> dict[str, Any]:
    out = copy.deepcopy(d)
    cur = out
    for step in path[:-1]:
        cur = cur[step]
    del cur[path[-1]]
    return out


# ------------------------------------------------------------------------- tags


def test_required_labels_pass_on_tagged_cloud_resource_and_k8s_object() -> None:
    assert check(tags.required_labels, "aws:eks/cluster:Cluster", {"tags": CLOUD_TAGS}) == []
    assert check(tags.required_labels, DEPLOYMENT, deployment()) == []
    assert check(tags.required_labels, "gcp:container/nodePool:NodePool",
                 {"nodeConfig": {"resourceLabels": CLOUD_TAGS}}) == []


def test_required_labels_name_the_missing_keys() -> None:
    msgs = check(tags.required_labels, "aws:ec2/vpc:Vpc", {"tags": {"environment": "prod", "tier": "core"}},
                 name="aws-vpc")
    assert msgs == ["aws:ec2/vpc:Vpc 'aws-vpc' is missing cloud, managed-by in tags"]
    msgs = check(tags.required_labels, DEPLOYMENT, without(deployment(), "metadata", "labels"), name="api")
    assert msgs == ["kubernetes:apps/v1:Deployment 'api' is missing edgefabric.io/environment, "
                    "edgefabric.io/tier, edgefabric.io/cloud, app.kubernetes.io/managed-by in metadata.labels"]


def test_required_labels_gcp_node_pool_needs_vm_labels_not_node_labels() -> None:
    msgs = check(tags.required_labels, "gcp:container/nodePool:NodePool", {"nodeConfig": {"labels": CLOUD_TAGS}},
                 name="gcp-nodes")
    assert msgs == ["gcp:container/nodePool:NodePool 'gcp-nodes' is missing environment, tier, cloud, "
                    "managed-by in nodeConfig.resourceLabels"]


def test_required_labels_docker_accepts_cloud_keys_and_reports_missing() -> None:
    typ = "docker:index/container:Container"
    good = {"labels": [{"label": k, "value": v} for k, v in CLOUD_TAGS.items()]}
    assert check(tags.required_labels, typ, good) == []
    bad = {"labels": [{"label": "environment", "value": "prod"}]}
    assert check(tags.required_labels, typ, bad, name="c") == [
        f"{typ} 'c' is missing tier, cloud, managed-by in labels"]


def test_required_labels_not_applicable_to_untaggable_types() -> None:
    assert check(tags.required_labels, "aws:iam/rolePolicyAttachment:RolePolicyAttachment", {}) == NOT_APPLICABLE


def test_label_keys_match_components_labels() -> None:
    from edgefabric.tiers import labels

    assert tags.CLOUD_TAG_KEYS == labels.TAG_KEYS
    assert tags.K8S_LABEL_KEYS == labels.K8S_LABEL_KEYS


# -------------------------------------------------------------------- workloads


def test_requests_limits() -> None:
    assert check(workloads.k8s_requests_limits, DEPLOYMENT, deployment()) == []
    msgs = check(workloads.k8s_requests_limits, DEPLOYMENT,
                 deployment(resources={"requests": {"cpu": "250m"}}), name="api")
    assert msgs == ["Deployment 'api' container containers[0] 'api' has no requests.memory, limits.cpu, limits.memory"]


def test_probes() -> None:
    assert check(workloads.k8s_probes, DEPLOYMENT, deployment()) == []
    bad = deployment()
    del bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert check(workloads.k8s_probes, DEPLOYMENT, bad, name="api") == [
        "Deployment 'api' container containers[0] 'api' has no readinessProbe"]


def test_no_privileged_containers() -> None:
    assert check(workloads.no_privileged, DEPLOYMENT, deployment()) == []
    msgs = check(workloads.no_privileged, DEPLOYMENT,
                 deployment(securityContext={"privileged": True, "runAsNonRoot": True}), name="api")
    assert msgs == ["Deployment 'api' container containers[0] 'api' runs privileged"]
    assert check(workloads.no_privileged, "docker:index/container:Container", {"privileged": True},
                 name="c") == ["docker container 'c' runs privileged"]


def test_no_host_network_at_the_core_only() -> None:
    core = deployment()
    core["spec"]["template"]["spec"]["hostNetwork"] = True
    assert check(workloads.no_host_network_core, DEPLOYMENT, core, name="api") == [
        "Deployment 'api' in tier 'core' sets hostNetwork: true"]
    assert check(workloads.no_host_network_core, DEPLOYMENT, deployment()) == []
    edge = copy.deepcopy(core)
    edge["metadata"]["labels"]["edgefabric.io/tier"] = "edge"
    assert check(workloads.no_host_network_core, DEPLOYMENT, edge) == NOT_APPLICABLE


@pytest.mark.parametrize(("image", "problem"), [
    ("redis", "image 'redis' has no tag (it means ':latest')"),
    ("ghcr.io/edgefabric/agent:latest", "image 'ghcr.io/edgefabric/agent:latest' uses ':latest'"),
    ("localhost:5000/agent", "image 'localhost:5000/agent' has no tag (it means ':latest')"),
])
def test_pinned_images_reject(image: str, problem: str) -> None:
    assert check(workloads.pinned_images, DEPLOYMENT, deployment(image=image), name="api") == [
        f"Deployment 'api' container containers[0] 'api': {problem}"]


def test_pinned_images_accept_tags_and_digests() -> None:
    for image in ("redis:7.4.1", "localhost:5000/agent:0.1.0", "redis@sha256:" + "a" * 64, "sha256:" + "b" * 64):
        assert check(workloads.pinned_images, DEPLOYMENT, deployment(image=image)) == []
    assert check(workloads.pinned_images, "docker:index/remoteImage:RemoteImage", {"name": "redis:latest"},
                 name="img") == ["docker image 'img': image 'redis:latest' uses ':latest'"]


def test_run_as_non_root() -> None:
    assert check(workloads.run_as_non_root, DEPLOYMENT, deployment()) == []
    root = deployment(image="eclipse-mosquitto:2.0.20", securityContext={})
    assert check(workloads.run_as_non_root, DEPLOYMENT, root, name="mqtt") == [
        "Deployment 'mqtt' container containers[0] 'api' (image 'eclipse-mosquitto:2.0.20') "
        "does not set runAsNonRoot: true"]
    # An image listed as needing root in policy config is allowed to.
    assert check(workloads.run_as_non_root, DEPLOYMENT, root, config={"rootImages": ["eclipse-mosquitto"]}) == []
    # The pod-level setting counts for every container.
    pod_level = deployment(securityContext={})
    pod_level["spec"]["template"]["spec"]["securityContext"] = {"runAsNonRoot": True}
    assert check(workloads.run_as_non_root, DEPLOYMENT, pod_level) == []


# --------------------------------------------------------------------- clusters


def test_cluster_endpoint_private_or_restricted() -> None:
    pol = clusters.cluster_endpoint_restricted
    assert check(pol, clusters.EKS, {"vpcConfig": {"endpointPublicAccess": False}}) == []
    assert check(pol, clusters.EKS, {"vpcConfig": {"endpointPublicAccess": True,
                                                   "publicAccessCidrs": ["198.51.100.0/24"]}}) == []
    assert check(pol, clusters.EKS, {"vpcConfig": {}}, name="aws-cluster") == [
        "cluster 'aws-cluster': EKS API endpoint is public and not restricted to any CIDR"]
    assert check(pol, clusters.AKS, {"apiServerAccessProfile": {"enablePrivateCluster": True}}) == []
    assert check(pol, clusters.AKS, {"apiServerAccessProfile": {"authorizedIPRanges": ["0.0.0.0/0"]}},
                 name="azure-cluster") == ["cluster 'azure-cluster': AKS API server is open to 0.0.0.0/0"]
    assert check(pol, clusters.GKE, {"privateClusterConfig": {"enablePrivateEndpoint": True}}) == []
    assert check(pol, clusters.GKE, {"privateClusterConfig": {"enablePrivateEndpoint": False},
                                     "masterAuthorizedNetworksConfig": {"cidrBlocks": []}}, name="gcp-cluster") == [
        "cluster 'gcp-cluster': GKE control plane is public and not restricted to any CIDR"]


def test_node_pool_autoscaling() -> None:
    pol = clusters.node_pool_autoscaling
    assert check(pol, clusters.EKS_NODES, {"scalingConfig": {"minSize": 1, "maxSize": 4, "desiredSize": 2}}) == []
    assert check(pol, clusters.EKS_NODES, {"scalingConfig": {"minSize": 5, "maxSize": 4}}, name="aws-nodes") == [
        "node pool 'aws-nodes' has autoscaling bounds 5..4 (need 1 <= min <= max)"]
    assert check(pol, clusters.GKE_POOL, {"autoscaling": {"minNodeCount": 1, "maxNodeCount": 3}}) == []
    assert check(pol, clusters.GKE_POOL, {"nodeCount": 3}, name="gcp-nodes") == [
        "node pool 'gcp-nodes' has no autoscaling min/max"]
    good_aks = {"agentPoolProfiles": [{"enableAutoScaling": True, "minCount": 1, "maxCount": 5}]}
    assert check(pol, clusters.AKS, good_aks) == []
    assert check(pol, clusters.AKS, {"agentPoolProfiles": [{"count": 3}]}, name="aks") == [
        "node pool 'aks.agentPoolProfiles[0]' does not enable autoscaling"]
    assert check(pol, clusters.EKS_NODES, {"scalingConfig": {"minSize": 1, "maxSize": 500}},
                 config={"maxNodes": 100}, name="n") == ["node pool 'n' may scale to 500 nodes, above the cap of 100"]


def test_kubernetes_version_window() -> None:
    pol = clusters.kubernetes_version_window
    window = {"minVersion": "1.30", "maxVersion": "1.33"}
    assert check(pol, clusters.EKS, {"version": "1.31"}, config=window) == []
    assert check(pol, clusters.GKE, {"minMasterVersion": "1.31.2-gke.1000"}, config=window) == []
    assert check(pol, clusters.EKS, {"version": "1.27"}, config=window, name="aws-cluster") == [
        "'aws-cluster' version = '1.27' is outside the supported window 1.30..1.33"]
    assert check(pol, clusters.AKS, {}, config=window, name="azure-cluster") == [
        "'azure-cluster' does not pin kubernetesVersion; the provider default drifts (supported window 1.30..1.33)"]
    # Pools may follow their cluster's version.
    assert check(pol, clusters.GKE_POOL, {}, config=window) == []


# -------------------------------------------------------------------- placement


def _site(name: str, cpu: float, memory: int, storage: int) -> tuple[str, str, dict[str, Any], None]:
    return (placement.EDGE_SITE, name, {"capabilities": {"cpu": cpu, "memoryMb": memory, "storageMb": storage}}, None)


def _edge_deployment(cpu: str, memory: str, replicas: int, storage: str | None = None) -> dict[str, Any]:
    requests = {"cpu": cpu, "memory": memory, **({"ephemeral-storage": storage} if storage else {})}
    d = deployment(resources={"requests": requests, "limits": requests})
    d["spec"]["replicas"] = replicas
    return d


def test_edge_placement_fits() -> None:
    args = stack_args([
        _site("berlin", 2, 2048, 1024),
        (DEPLOYMENT, "berlin-gw", _edge_deployment("500m", "256Mi", 2, "100Mi"), "berlin"),
        ("docker:index/container:Container", "berlin-cache", {"cpus": "0.5", "memory": 512}, "berlin"),
        ("command:remote:Command", "berlin-proc", {"triggers": ["[Service]\nCPUQuota=25%\nMemoryMax=128M\n"]},
         "berlin"),
    ])
    assert run(placement.edge_placement_fits, args) == []


def test_edge_placement_over_capacity_names_site_and_workloads() -> None:
    args = stack_args([
        _site("austin", 1, 4096, 1024),
        (DEPLOYMENT, "austin-gw", _edge_deployment("500m", "256Mi", 2), "austin"),
        ("docker:index/container:Container", "austin-proc", {"cpus": "0.5", "memory": 512}, "austin"),
        # A workload elsewhere does not count against this site.
        (DEPLOYMENT, "core-api", _edge_deployment("4", "8Gi", 3), None),
    ])
    assert run(placement.edge_placement_fits, args) == [
        "edge site 'austin': workloads (austin-gw, austin-proc) request 1.5 cores of cpu but the site declares 1"]


def test_edge_placement_needs_declared_capabilities() -> None:
    args = stack_args([(placement.EDGE_SITE, "osaka", {}, None),
                       (DEPLOYMENT, "osaka-gw", _edge_deployment("500m", "256Mi", 1), "osaka")])
    assert run(placement.edge_placement_fits, args) == [
        "edge site 'osaka' does not carry its capabilities (props.capabilities: cpu, memoryMb, storageMb), "
        "so its placement cannot be checked"]


# ---------------------------------------------------------------------- traffic

WF = traffic.WEIGHTED_FAILOVER


def failover(**overrides: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "record_name": "api.edgefabric.example.com.", "ttl": 30,
        "endpoints": {"aws": {"address": "198.51.100.1"}, "azure": {"address": "198.51.100.2"}},
        "health_check": {"interval_s": 30, "timeout_s": 5, "failure_threshold": 3, "success_threshold": 2},
        "strategy": {"order": ["aws", "azure"], "replication": "active-active", "failover": "automatic"},
        "routing": {"rules": [], "default_weight": 100},
        "backends": {"route53": {"zone_name": "edgefabric.example.com."}},
    }
    props.update(overrides)
    return props


def test_failover_ttl() -> None:
    assert check(traffic.failover_ttl, WF, failover()) == []
    assert check(traffic.failover_ttl, WF, failover(ttl=300), config={"maxTtl": 60}) == [
        "failover record 'api.edgefabric.example.com.' has ttl 300; resolvers would keep a failed cloud's "
        "answer longer than 60 s"]
    assert check(traffic.failover_ttl, "aws:route53/record:Record", {"ttl": 300}) == NOT_APPLICABLE


def test_failover_clouds() -> None:
    assert check(traffic.failover_clouds, WF, failover()) == []
    one = failover(endpoints={"aws": {"address": "198.51.100.1"}},
                   strategy={"order": ["aws", "azure"]})
    assert check(traffic.failover_clouds, WF, one) == [
        "failover record spans 1 cloud(s) (aws); at least 2 must be enabled so there is somewhere to fail over to",
        "the strategy's secondary cloud 'azure' is not enabled (enabled: aws)",
    ]
    assert check(traffic.failover_clouds, WF, failover(strategy={"order": ["aws"]})) == [
        "the failover strategy names no secondary cloud"]


def test_health_check_timing() -> None:
    assert check(traffic.health_check_timing, WF, failover()) == []
    bad = failover(health_check={"interval_s": 10, "timeout_s": 10, "failure_threshold": 3, "success_threshold": 2})
    assert check(traffic.health_check_timing, WF, bad) == [
        "health check timeout 10 s is not below its interval 10 s; probes would overlap"]


def test_health_check_thresholds() -> None:
    assert check(traffic.health_check_thresholds, WF, failover()) == []
    bad = failover(health_check={"interval_s": 30, "timeout_s": 5, "failure_threshold": 0, "success_threshold": 2})
    assert check(traffic.health_check_thresholds, WF, bad) == [
        "health check failure_threshold is 0; it must be >= 1 or a single probe flips the weights"]


@pytest.fixture
def stack_config() -> Iterator[Callable[[dict[str, Any]], None]]:
    """Set the stack's `edgefabric:` config the way the engine hands it to the pack."""
    def set_config(values: dict[str, Any]) -> None:
        pulumi.runtime.set_all_config({f"edgefabric:{k}": json.dumps(v) for k, v in values.items()})

    yield set_config
    pulumi.runtime.set_all_config({})


def test_failover_notifications(stack_config: Callable[[dict[str, Any]], None]) -> None:
    traffic_only = stack_args([(traffic.GLOBAL_TRAFFIC, "traffic", {}, None), (WF, "record", failover(), "traffic")])
    stack_config({"failover": {"notifications": [{"type": "slack", "urlRef": "env:SLACK"}]}})
    assert run(traffic.failover_notifications, traffic_only) == []
    stack_config({"failover": {"notifications": []}})
    assert run(traffic.failover_notifications, traffic_only) == [
        "failover transitions notify nobody: no notification channel (slack, pagerduty, email) is configured "
        "in edgefabric:failover.notifications"]
    # A resource that carries its channels counts too.
    carried = stack_args([(traffic.GLOBAL_TRAFFIC, "traffic", {"notifications": [{"type": "email"}]}, None)])
    assert run(traffic.failover_notifications, carried) == []
    assert run(traffic.failover_notifications, stack_args([])) == NOT_APPLICABLE


# --------------------------------------------------------------------- registry

ANVIL_KEY_0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ANVIL_ADDR_0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def test_registry_not_dev_chain() -> None:
    pol = registry.registry_chain
    assert check(pol, registry.REGISTRY_CONTRACT, {"chain_id": 137}) == []
    assert check(pol, registry.REGISTRY_CONTRACT, {"chain_id": 31337}, name="registry") == [
        "registry resource 'registry' targets development chain id 31337; staging and prod need a real network "
        "(forbidden: 1337, 31337, 131277322940537)"]
    assert check(pol, registry.SERVICE_REGISTRATION, {"chain_id": 131277322940537}, name="svc") != []


def test_registry_deployer_not_dev_key() -> None:
    pol = registry.registry_deployer_key
    assert check(pol, registry.REGISTRY_CONTRACT, {"deployer_key": secret("0x" + "12" * 32)}) == []
    assert check(pol, registry.REGISTRY_CONTRACT, {"deployer_key": secret(ANVIL_KEY_0)}, name="registry") == [
        "registry resource 'registry' input deployer_key is a public anvil/hardhat dev key (a secret); "
        "anyone can sign with it"]
    assert check(pol, registry.REGISTRY_CONTRACT, {"deployer": ANVIL_ADDR_0}, name="registry") == [
        f"registry resource 'registry' deployer {ANVIL_ADDR_0} is a public anvil/hardhat dev account"]


def test_registry_deployer_ref_resolving_to_dev_key(monkeypatch: pytest.MonkeyPatch,
                                                    stack_config: Callable[[dict[str, Any]], None]) -> None:
    """A reference is resolved the way the provider will resolve it (the pack inherits the
    CLI's environment and the stack config), so a dev key behind env:/config: is caught."""
    pol = registry.registry_deployer_key
    props = {"chain_id": 137, "deployer_key": None, "deployer_key_ref": "env:EDGEFABRIC_DEPLOYER_KEY"}
    monkeypatch.setenv("EDGEFABRIC_DEPLOYER_KEY", "0x" + "34" * 32)
    assert check(pol, registry.REGISTRY_CONTRACT, props) == []
    monkeypatch.setenv("EDGEFABRIC_DEPLOYER_KEY", ANVIL_KEY_0)
    assert check(pol, registry.REGISTRY_CONTRACT, props, name="registry") == [
        "registry resource 'registry' deployer_key_ref (env:EDGEFABRIC_DEPLOYER_KEY) resolves to a public "
        "anvil/hardhat dev key; anyone can sign with it"]
    stack_config({"deployerKey": ANVIL_KEY_0.removeprefix("0x")})
    by_config = {**props, "deployer_key_ref": "config:deployerKey"}
    assert len(check(pol, registry.SERVICE_REGISTRATION, by_config)) == 1


def test_dev_keys_are_the_mnemonic_keys() -> None:
    from eth_account import Account

    from policies.rules.devkeys import DEV_ADDRESSES, DEV_MNEMONIC, DEV_PRIVATE_KEYS

    Account.enable_unaudited_hdwallet_features()
    derived = [Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(10)]
    assert {a.key.hex().removeprefix("0x") for a in derived} == DEV_PRIVATE_KEYS
    assert {a.address.lower() for a in derived} == DEV_ADDRESSES


def test_registry_ttl_vs_heartbeat(stack_config: Callable[[dict[str, Any]], None]) -> None:
    pol = registry.registry_ttl_heartbeat
    assert check(pol, registry.SERVICE_REGISTRATION, {"ttl": 300, "heartbeat_interval_s": 100}) == []
    assert check(pol, registry.SERVICE_REGISTRATION, {"ttl": 200, "heartbeat_interval_s": 100}, name="api") == [
        "registry resource 'api': service TTL 200 s < 3 x heartbeat interval 100 s; 2 missed heartbeat(s) would "
        "expire a live service"]
    # The registration carries only its TTL: the interval comes from the stack's registry config.
    stack_config({"registry": {"heartbeatIntervalS": 300}})
    assert check(pol, registry.SERVICE_REGISTRATION, {"ttl": 900}) == []
    assert check(pol, registry.SERVICE_REGISTRATION, {"ttl": 600}, name="api") == [
        "registry resource 'api': service TTL 600 s < 3 x heartbeat interval 300 s; 2 missed heartbeat(s) would "
        "expire a live service"]
    assert check(pol, registry.REGISTRY_CONTRACT, {"chain_id": 137}) == NOT_APPLICABLE


# ---------------------------------------------------------------------- secrets


def test_no_plaintext_secrets_accepts_secrets_and_references() -> None:
    pol = secrets.no_plaintext_secrets
    props = {"kubeconfig": secret("apiVersion: v1\nusers: [{token: abc}]"), "apiKeyRef": "env:PDNS_API_KEY",
             "password": "config:smtpPassword", "skipCredentialsValidation": "false", "secretName": "tls-cert"}
    assert check(pol, "pulumi:providers:kubernetes", props) == []


def test_no_plaintext_secrets_flags_plain_credentials() -> None:
    pol = secrets.no_plaintext_secrets
    assert check(pol, "command:remote:Command", {"connection": {"host": "h", "password": "hunter2"}},
                 name="cmd") == [
        "command:remote:Command 'cmd' input connection.password looks like a credential and is a plain value"]
    env = deployment(env=[{"name": "DB_PASSWORD", "value": "hunter2"}, {"name": "LOG_LEVEL", "value": "info"}])
    assert check(pol, DEPLOYMENT, env, name="api") == [
        "kubernetes:apps/v1:Deployment 'api' input spec.template.spec.containers[0].env[0].value looks like a "
        "credential and is a plain value"]
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blb...\n-----END OPENSSH PRIVATE KEY-----"
    assert check(pol, "command:remote:Command", {"connection": {"host": "h", "privateKey": pem}}, name="cmd") == [
        "command:remote:Command 'cmd' input connection.privateKey holds private key material as a plain value"]


def test_secret_inside_a_plain_object_stays_secret() -> None:
    # The engine marks a nested value secret; only that leaf is secret, its siblings are not.
    props = {"connection": {"host": "h", "privateKey": secret("-----BEGIN RSA PRIVATE KEY-----x"),
                            "password": "hunter2"}}
    assert check(secrets.no_plaintext_secrets, "command:remote:Command", props, name="cmd") == [
        "command:remote:Command 'cmd' input connection.password looks like a credential and is a plain value"]
