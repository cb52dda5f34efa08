"""Bad stack config fails before any resource exists, naming the key path, the bad value
and what is allowed."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgefabric.config import ConfigError, load_config, raw_from_stack_file
from tooling.render import last_registrations, render

ROOT = Path(__file__).resolve().parents[3]
DEV = raw_from_stack_file(ROOT / "Pulumi.dev.yaml")
STAGING = raw_from_stack_file(ROOT / "Pulumi.staging.yaml")
PROD = raw_from_stack_file(ROOT / "Pulumi.prod.yaml")


def _set(path: list[Any], value: Any) -> Callable[[dict], None]:
    def mutate(raw: dict) -> None:
        node = raw
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


def _del(path: list[Any]) -> Callable[[dict], None]:
    def mutate(raw: dict) -> None:
        node = raw
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return mutate


def _append_dup(path: list[Any]) -> Callable[[dict], None]:
    def mutate(raw: dict) -> None:
        node = raw
        for key in path:
            node = node[key]
        node.append(copy.deepcopy(node[0]))
    return mutate


# (id, base, mutation, expected key path, expected bad value text, expected "allowed" text)
CASES: list[tuple[str, dict, Callable[[dict], None], str, str, str]] = [
    ("placement-memory", DEV, _set(["edge", "sites", 0, "services", 1, "requirements", "memoryMb"], 999999),
     "edgefabric:edge.sites[0].services[1].requirements.memoryMb", "999999", "allowed: <="),
    ("placement-cpu-total", DEV, _set(["edge", "sites", 1, "services", 3, "requirements", "cpu"], 3.5),
     "edgefabric:edge.sites[1].services[3].requirements.cpu", "3.5", "left"),
    ("placement-storage", DEV, _set(["edge", "sites", 0, "capabilities", "storageMb"], 100),
     "edgefabric:edge.sites[0].services[1].requirements.storageMb", "512", "allowed: <="),
    ("rule-disabled-cloud", DEV, _set(["clouds", "gcp", "enabled"], False),
     "edgefabric:routing.rules[2].cloud", "'gcp'", "an enabled cloud"),
    ("strategy-disabled-cloud", DEV, _set(["clouds", "azure", "enabled"], False),
     "edgefabric:strategies.api-gateway.secondary", "'azure'", "an enabled cloud"),
    ("timeout-ge-interval", DEV, _set(["healthCheck", "timeoutS"], 30),
     "edgefabric:healthCheck.timeoutS", "30", "must be < healthCheck.intervalS"),
    ("duplicate-site", DEV, _append_dup(["edge", "sites"]),
     "edgefabric:edge.sites[2].name", "'factory-berlin'", "unique"),
    ("duplicate-region", STAGING, _set(["regions", 1, "name"], "us-east"),
     "edgefabric:regions[1].name", "'us-east'", "unique"),
    ("duplicate-core-service", DEV, _append_dup(["core", "services"]),
     "edgefabric:core.services[4].name", "'api-gateway'", "unique"),
    ("malformed-rpc-url", DEV, _set(["registry", "rpcUrl"], "htp:/nope"),
     "edgefabric:registry.rpcUrl", "'htp:/nope'", "URL with scheme"),
    ("malformed-pdns-url", DEV, _set(["dns", "backends", "powerdns"],
                                     {"apiUrl": "127.0.0.1:8081", "apiKeyRef": "env:K", "zone": "example.com."}),
     "edgefabric:dns.backends.powerdns.apiUrl", "'127.0.0.1:8081'", "URL with scheme"),
    ("negative-ttl", DEV, _set(["dns", "ttl"], -5),
     "edgefabric:dns.ttl", "-5", "greater than or equal to 1"),
    ("weight-too-big", DEV, _set(["routing", "rules", 0, "weight"], 170),
     "edgefabric:routing.rules[0].weight", "170", "less than or equal to 100"),
    ("weight-zero", DEV, _set(["routing", "rules", 1, "weight"], 0),
     "edgefabric:routing.rules[1].weight", "0", "greater than or equal to 1"),
    ("failure-threshold-zero", DEV, _set(["healthCheck", "failureThreshold"], 0),
     "edgefabric:healthCheck.failureThreshold", "0", "greater than or equal to 1"),
    ("success-threshold-negative", DEV, _set(["healthCheck", "successThreshold"], -1),
     "edgefabric:healthCheck.successThreshold", "-1", "greater than or equal to 1"),
    ("latest-image", DEV, _set(["core", "services", 0, "image"], "envoyproxy/envoy:latest"),
     "edgefabric:core.services[0].image", "'envoyproxy/envoy:latest'", "':latest' is not allowed"),
    ("untagged-image", DEV, _set(["edge", "sites", 0, "services", 2, "image"], "redis"),
     "edgefabric:edge.sites[0].services[2].image", "'redis'", "explicit tag"),
    ("unknown-user-region", DEV, _set(["routing", "rules", 0, "regions"], ["atlantis"]),
     "edgefabric:routing.rules[0].regions", "['atlantis']", "unknown user region"),
    ("region-in-two-rules", DEV, _set(["routing", "rules", 1, "regions"], ["europe", "north-america"]),
     "edgefabric:routing.rules[1].regions[1]", "'north-america'", "one rule only"),
    ("unknown-runtime", DEV, _set(["edge", "sites", 0, "capabilities", "runtime"], "vm"),
     "edgefabric:edge.sites[0].capabilities.runtime", "'vm'", "'kubernetes', 'docker' or 'native'"),
    ("kubernetes-site-without-kubeconfig", DEV, _del(["edge", "sites", 0, "kubeconfigRef"]),
     "edgefabric:edge.sites[0].kubeconfigRef", "None", "secret reference"),
    ("docker-site-bad-host", DEV, _set(["edge", "sites", 1, "host"], "http://store"),
     "edgefabric:edge.sites[1].host", "'http://store'", "ssh or tcp"),
    ("docker-tcp-host-without-tls", PROD, _del(["edge", "sites", 3, "dockerTls"]),
     "edgefabric:edge.sites[3].dockerTls", "None", "TLS with a client certificate"),
    ("eks-version-without-an-autoscaler", DEV, _set(["core", "clusters", "aws", "kubernetesVersion"], "1.29"),
     "edgefabric:core.clusters.aws.kubernetesVersion", "'1.29'", "a cluster-autoscaler release: 1.32"),
    ("docker-site-publishes-everywhere", DEV, _set(["edge", "sites", 1, "publishAddress"], "0.0.0.0"),
     "edgefabric:edge.sites[1].publishAddress", "'0.0.0.0'", "every interface"),
    ("docker-site-publish-address-not-ipv4", DEV, _set(["edge", "sites", 1, "publishAddress"], "lan0"),
     "edgefabric:edge.sites[1].publishAddress", "'lan0'", "one IPv4 address of the Docker host"),
    ("secret-as-value", DEV, _set(["registry", "deployerKeyRef"], "0xac0974bec39a17e36ba4a6b4d238ff944bacb478"),
     "edgefabric:registry.deployerKeyRef", "'0xac0974bec39a17e36ba4a6b4d238ff944bacb478'", "must match"),
    ("rpc-url-with-a-key", DEV, _set(["registry", "rpcUrl"], "https://eth.example.io/v3/0123456789abcdef0123456789ab"),
     "edgefabric:registry.rpcUrl", "'https://eth.example.io/...'", "name it in registry.rpcUrlRef"),
    ("rpc-url-and-ref", DEV, _set(["registry", "rpcUrlRef"], "env:EDGEFABRIC_RPC_URL"),
     "edgefabric:registry.rpcUrlRef", "'env:EDGEFABRIC_RPC_URL'", "one of the two"),
    ("rpc-url-missing", DEV, _del(["registry", "rpcUrl"]),
     "edgefabric:registry.rpcUrl", "None", "registry.rpcUrlRef"),
    ("ttl-vs-heartbeat", DEV, _set(["registry", "heartbeatIntervalS"], 200),
     "edgefabric:registry.serviceTtlS", "300", ">= 3 x registry.heartbeatIntervalS (600)"),
    ("typo-key", DEV, _set(["healthCheck", "intervalSeconds"], 10),
     "edgefabric:healthCheck.intervalSeconds", "10", "unknown key"),
    ("enabled-cloud-without-cluster", DEV, _del(["core", "clusters", "gcp"]),
     "edgefabric:core.clusters.gcp", "None", "needs a cluster size"),
    ("node-count-out-of-bounds", DEV, _set(["core", "clusters", "aws", "nodeCount"], 50),
     "edgefabric:core.clusters.aws.nodeCount", "50", "within minNodes..maxNodes"),
    ("bad-k8s-version", DEV, _set(["core", "clusters", "aws", "kubernetesVersion"], "v1.31.2"),
     "edgefabric:core.clusters.aws.kubernetesVersion", "'v1.31.2'", "must match"),
    ("region-on-unprovisioned-cloud", STAGING, _set(["regions", 2, "cloud"], "oracle"),
     "edgefabric:regions[2].cloud", "'oracle'", "'aws', 'azure' or 'gcp'"),
    ("cpu-limit-below-request", DEV, _set(["core", "services", 1, "cpuLimit"], "100m"),
     "edgefabric:core.services[1].cpuLimit", "'100m'", "must be >= cpu request"),
    ("bad-ingress-ip", DEV, _set(["clouds", "aws", "ingress"], {"address": "not-an-ip"}),
     "edgefabric:clouds.aws.ingress.address", "'not-an-ip'", "does not appear to be an IPv4 or IPv6"),
    ("record-outside-zone", DEV, _set(["dns", "recordName"], "api.other.org."),
     "edgefabric:dns.recordName", "'api.other.org.'", "inside the route53 zone"),
    ("bad-email", STAGING, _set(["failover", "notifications"], [
        {"type": "email", "smtpHost": "smtp", "sender": "nobody", "recipients": ["x@y.z"]}]),
     "edgefabric:failover.notifications[0].sender", "'nobody'", "must match"),
    ("native-replicas", STAGING, _set(["edge", "sites", 2, "services", 0, "replicas"], 2),
     "edgefabric:edge.sites[2].services[0].replicas", "2", "1 for runtime 'native'"),
    ("bad-chain-id", DEV, _set(["registry", "chainId"], 0),
     "edgefabric:registry.chainId", "0", "greater than 0"),
    ("health-port-not-served", DEV, _set(["healthCheck", "check", "port"], 8443),
     "edgefabric:healthCheck.check.port", "8443", "not a port of core.services[0] (api-gateway): 8080, 8081, 8082, 443"),
    ("check-and-checks", DEV, _set(["healthCheck", "checks"], [{"type": "tcp", "port": 443}]),
     "edgefabric:healthCheck.checks", "[{'type': 'tcp', 'port': 443}]", "not both"),
]


@pytest.mark.parametrize(("base", "mutate", "path", "value", "allowed"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_names_key_value_and_allowed(base: dict, mutate: Callable[[dict], None], path: str,
                                                value: str, allowed: str) -> None:
    raw = copy.deepcopy(base)
    mutate(raw)
    with pytest.raises(ConfigError) as err:
        load_config(raw)
    lines = [p for p in err.value.problems if p.startswith(f"{path} = ")]
    assert lines, f"no problem names {path}; got:\n{err.value}"
    assert any(f"= {value}:" in line and allowed in line for line in lines), f"got:\n{err.value}"


def test_there_are_at_least_25_cases() -> None:
    assert len(CASES) >= 25


def test_bad_config_registers_nothing() -> None:
    """Through the whole program: the error comes before the first resource."""
    raw = copy.deepcopy(DEV)
    _set(["healthCheck", "timeoutS"], 99)(raw)
    with pytest.raises(ConfigError, match=r"edgefabric:healthCheck.timeoutS = 99"):
        render(raw, stack="dev")
    registered = last_registrations()
    assert registered == [], f"registered before failing: {[f'{r.type}::{r.name}' for r in registered]}"


def test_every_problem_is_reported_at_once() -> None:
    raw = copy.deepcopy(DEV)
    _set(["dns", "ttl"], 0)(raw)
    _set(["healthCheck", "failureThreshold"], 0)(raw)
    with pytest.raises(ConfigError) as err:
        load_config(raw)
    assert len(err.value.problems) == 2
