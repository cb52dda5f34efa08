"""Every tier for real: the `local` stack, deployed by the real Pulumi CLI onto local Kubernetes
control planes (scripts/local-env: one cluster per cloud and one for the edge sites, kwok nodes,
a LoadBalancer controller answering like each cloud), compared with what the program renders
under mocks (tooling.render).

One deployed stack for the module (shared with test_local_stack.py: `shared_local_stack`),
in order: what local-env runs -> `up` creates exactly the rendered Kubernetes objects ->
Deployments available, Services addressed, HPAs/PDBs/NetworkPolicies as rendered, edge services
on their site's nodes -> no-change preview -> drift made through the Kubernetes API shows in
`pulumi refresh` and `up` repairs it -> `destroy` leaves nothing of ours in any cluster.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import stat
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.cli import SITE_LABEL
from devenv.kubernetes import KubeApi
from edgefabric.config import CLOUDS, cpu_cores, memory_mb
from edgefabric.traffic.dns.resolver import resolve_a
from tests.kits.engine import LOCAL_STACK as STACK
from tests.kits.engine import LocalStackRun, diff_ops, shared_local_stack, wait_for
from tooling.render import provider_name, render_stack_file

MANAGED = "app.kubernetes.io/managed-by=edgefabric"
# Kinds looked for in every cluster, rendered or not: an object of ours the program does not
# render (or no longer renders) is found too.
KINDS = (
    "kubernetes:core/v1:Namespace",
    "kubernetes:apps/v1:Deployment",
    "kubernetes:core/v1:Service",
    "kubernetes:core/v1:Secret",
    "kubernetes:core/v1:ConfigMap",
    "kubernetes:core/v1:ServiceAccount",
    "kubernetes:rbac.authorization.k8s.io/v1:Role",
    "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding",
    "kubernetes:policy/v1:PodDisruptionBudget",
    "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
    "kubernetes:networking.k8s.io/v1:NetworkPolicy",
)
AS_RENDERED = ("HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy")
# Where each local cluster's LoadBalancer controller hands out IPs (aws: hostnames instead); the
# edge cluster's answer the far region us-west's load balancers.
POOLS = {"azure": ipaddress.ip_network("127.0.2.0/24"), "gcp": ipaddress.ip_network("127.0.3.0/24"),
         "edge": ipaddress.ip_network("127.0.4.0/24")}

# (cluster, type token, namespace, name)
Key = tuple[str, str, str, str]


def list_path(token: str) -> str:
    """`kubernetes:apps/v1:Deployment` -> `/apis/apps/v1/deployments`."""
    _, group_version, kind = token.split(":")
    group, version = group_version.split("/")
    plural = kind.lower()[:-1] + "ies" if kind.endswith("y") else kind.lower() + "s"
    return (f"/api/{version}" if group == "core" else f"/apis/{group}/{version}") + f"/{plural}"


def object_path(token: str, namespace: str, name: str) -> str:
    path = list_path(token)
    if namespace:
        base, plural = path.rsplit("/", 1)
        path = f"{base}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}"


class Deployed:
    """The shared run, with the clusters' APIs and the rendered expectation."""

    def __init__(self, run: LocalStackRun) -> None:
        self.run = run
        self.env = run.local_env_handle()
        self.plans = {plan.name: plan for plan in self.env.layout.cluster_plans}
        self.apis: dict[str, KubeApi] = {name: self.env.cluster(plan).api for name, plan in self.plans.items()}

    @property
    def engine(self) -> Any:
        return self.run.engine

    def rendered(self) -> dict[Key, dict[str, Any]]:
        """Every Kubernetes object the program renders under mocks for this stack file, by the
        cluster its provider points at: `<cloud>-k8s` the cloud's, `<site>-k8s` the site's,
        `<region>-k8s` (a far region's) the one its `kubeconfigRef` names."""
        site_cluster = {x: plan.name for plan in self.plans.values() for x in (*plan.sites, *plan.regions)}
        out: dict[Key, dict[str, Any]] = {}
        for res in render_stack_file(self.engine.project / "Pulumi.local.yaml").resources:
            if not res.type.startswith("kubernetes:"):
                continue
            owner = provider_name(res.provider).removesuffix("-k8s")
            cluster = owner if owner in CLOUDS else site_cluster[owner]
            meta = res.inputs.get("metadata") or {}
            out[(cluster, res.type, meta.get("namespace", ""), meta["name"])] = res.inputs
        return out

    def live(self, kinds: tuple[str, ...] = KINDS) -> dict[Key, dict[str, Any]]:
        """Every object of ours (labelled managed-by edgefabric) of `kinds` in every cluster."""
        out: dict[Key, dict[str, Any]] = {}
        for cluster, api in self.apis.items():
            for token in kinds:
                for obj in api.get(list_path(token), labelSelector=MANAGED).get("items", []):
                    meta = obj["metadata"]
                    out[(cluster, token, meta.get("namespace", ""), meta["name"])] = obj
        return out

    def get(self, key: Key) -> Any:
        cluster, token, namespace, name = key
        return self.apis[cluster].get(object_path(token, namespace, name))


@pytest.fixture(scope="module")
def deployed(request: pytest.FixtureRequest, engine_bin: Path) -> Iterator[Deployed]:
    yield Deployed(shared_local_stack(request, engine_bin))


def is_subset(want: Any, have: Any) -> bool:
    """Everything `want` says is in `have` (dicts by key, lists item by item, scalars equal)."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(k in have and is_subset(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(map(is_subset, want, have))
    return bool(want == have)


def test_local_env_runs_a_cluster_per_cloud_and_one_for_the_edge(deployed: Deployed) -> None:
    st = json.loads(deployed.run.local_env("status", "--json"))
    clusters = st["clusters"]
    assert set(clusters) == {"aws", "azure", "gcp", "edge"}, clusters.keys()
    for name, c in clusters.items():
        assert c["running"], (name, c["components"])
        assert c["flavor"] == ("generic" if name == "edge" else name)
        assert c["nodes"] and all(n["ready"] for n in c["nodes"]), (name, c["nodes"])
        kubeconfig = Path(c["kubeconfig"])
        assert kubeconfig.is_file() and stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600, kubeconfig
        assert c["kubeconfig_ref"] == f"env:EDGEFABRIC_KUBECONFIG_{name.upper()}"
    # One node per edge site, of the site's declared size, labelled and tainted for it.
    sites = yaml.safe_load((deployed.engine.project / "Pulumi.local.yaml").read_text())["config"]["edgefabric:edge"]["sites"]
    nodes = {n["site"]: n for n in clusters["edge"]["nodes"] if n.get("site")}
    assert set(nodes) == {s["name"] for s in sites}
    # The far region's two nodes there (it brings the edge cluster as its own), untainted.
    far = [n for n in clusters["edge"]["nodes"] if n["name"].startswith("us-west-")]
    assert [n["name"] for n in far] == ["us-west-node-a", "us-west-node-b"] and not any(n["taints"] for n in far), far
    for site in sites:
        node, caps = nodes[site["name"]], site["capabilities"]
        assert cpu_cores(node["capacity"]["cpu"]) == caps["cpu"]
        assert memory_mb(node["capacity"]["memory"]) == caps["memoryMb"]
        assert memory_mb(node["capacity"]["ephemeral-storage"]) == caps["storageMb"]
        assert node["taints"] == [f"edgefabric.io/edge={site['name']}:NoSchedule"], node
    # The environment the program gets: files read by the shell, never their contents.
    exports = deployed.run.local_env("env")
    assert 'export EDGEFABRIC_KUBECONFIG_AWS="$(cat ' in exports and "client-key-data" not in exports, exports
    deployed.run.record("control_planes_rss_mib_idle", st["k8s_rss_bytes"] / 2**20)


def test_up_creates_every_rendered_kubernetes_object(deployed: Deployed) -> None:
    first = not deployed.live()
    started = time.monotonic()
    deployed.engine.run("up", "--yes", "--stack", STACK, timeout=1800)
    deployed.run.record("first_up_s" if first else "up_s", time.monotonic() - started)
    rendered, live = deployed.rendered(), deployed.live()
    assert sorted(set(rendered) - set(live)) == [], "rendered but not in the clusters"
    assert sorted(set(live) - set(rendered)) == [], "in the clusters but not rendered"
    # Every cluster got its share: the cores and regions on the clouds', the sites on the edge's.
    assert {key[0] for key in rendered} == set(deployed.plans)
    deployed.run.record("kubernetes_objects", len(rendered))


def test_every_deployment_is_available(deployed: Deployed) -> None:
    deployments = [k for k in deployed.live() if k[1] == "kubernetes:apps/v1:Deployment"]
    assert deployments

    def unavailable() -> list[str]:
        out = []
        for key in deployments:
            obj = deployed.get(key)
            want, status = obj["spec"]["replicas"], obj.get("status") or {}
            available = any(c["type"] == "Available" and c["status"] == "True" for c in status.get("conditions", []))
            if not available or status.get("readyReplicas") != want or status.get("updatedReplicas") != want:
                out.append(f"{key}: {status}")
        return out

    wait_for(lambda: not unavailable(), timeout=180, interval=1, what="every Deployment Available")


def test_services_have_their_addresses(deployed: Deployed) -> None:
    outputs = deployed.engine.outputs(STACK)
    resolver = f"127.0.0.1:{deployed.run.ports.pdns_dns}"
    services = {k: v for k, v in deployed.live().items() if k[1] == "kubernetes:core/v1:Service"}
    assert services
    for (cluster, _, namespace, name), svc in services.items():
        assert ipaddress.ip_address(svc["spec"]["clusterIP"]) in ipaddress.ip_network("10.96.0.0/16"), name
        if svc["spec"]["type"] != "LoadBalancer":
            continue
        ingress = deployed.get((cluster, "kubernetes:core/v1:Service", namespace, name))["status"]["loadBalancer"]["ingress"]
        if cluster == "aws":  # an AWS load balancer reports a hostname only, and it resolves
            assert set(ingress[0]) == {"hostname"}, ingress
            assert resolve_a(ingress[0]["hostname"], resolver) == (deployed.env.layout.endpoint_ips["aws"],)
        else:
            assert ipaddress.ip_address(ingress[0]["ip"]) in POOLS[cluster], ingress
        if name == "api-gateway":
            # The global record follows it: the stack's ingress output, and /health answers there.
            address = ingress[0].get("hostname") or ingress[0]["ip"]
            assert outputs["ingress"][cluster] == address
            ip = resolve_a(address, resolver)[0] if cluster == "aws" else address
            url = f"http://{ip}:{deployed.run.ports.endpoint}/health"
            with urllib.request.urlopen(url, timeout=5) as resp:
                assert resp.status == 200, url
    assert set(outputs["ingress"]) == set(CLOUDS)
    assert all(h["healthy"] for h in outputs["dnsHealth"].values()), outputs["dnsHealth"]


def test_autoscalers_budgets_and_network_policies_are_as_rendered(deployed: Deployed) -> None:
    rendered, live = deployed.rendered(), deployed.live()
    for kind in AS_RENDERED:
        want = {k: v for k, v in rendered.items() if k[1].endswith(f":{kind}")}
        have = {k: v for k, v in live.items() if k[1].endswith(f":{kind}")}
        assert set(have) == set(want), kind
        for key, inputs in want.items():
            assert is_subset(inputs["spec"], have[key]["spec"]), (key, inputs["spec"], have[key]["spec"])
    assert any(k[1].endswith(":HorizontalPodAutoscaler") for k in rendered), "the local stack renders no HPA"
    assert any(k[1].endswith(":PodDisruptionBudget") for k in rendered), "the local stack renders no PDB"


def test_edge_services_run_on_their_sites_nodes(deployed: Deployed) -> None:
    """Placement by the real scheduler: each site's services, which fit the site (checked by the
    config), are all scheduled, onto that site's node, within its allocatable resources."""
    api = deployed.apis["edge"]
    nodes = {n["metadata"]["name"]: n for n in api.get("/api/v1/nodes")["items"]}
    sites = deployed.plans["edge"].sites
    assert len(sites) >= 2, sites

    def placed() -> dict[str, list[dict[str, Any]]]:
        by_site = {site: api.get(f"/api/v1/namespaces/edge-{site}/pods")["items"] for site in sites}
        ok = all(pods and all(p["spec"].get("nodeName") and p["status"].get("phase") == "Running" for p in pods)
                 for pods in by_site.values())
        return by_site if ok else {}

    by_site = wait_for(placed, timeout=120, interval=1, what="every edge pod scheduled and running")
    for site, pods in by_site.items():
        used = {"cpu": 0.0, "memory": 0.0}
        for pod in pods:
            node = nodes[pod["spec"]["nodeName"]]
            assert node["metadata"]["labels"][SITE_LABEL] == site, (site, pod["metadata"]["name"], node["metadata"]["name"])
            scheduled = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"]
            assert scheduled and scheduled[0]["status"] == "True", pod["status"]
            for container in pod["spec"]["containers"]:
                req = container["resources"]["requests"]
                used["cpu"] += cpu_cores(req["cpu"])
                used["memory"] += memory_mb(req["memory"])
        allocatable = nodes[pods[0]["spec"]["nodeName"]]["status"]["allocatable"]
        assert used["cpu"] <= cpu_cores(allocatable["cpu"]) and used["memory"] <= memory_mb(allocatable["memory"])


def test_the_far_region_runs_on_its_own_cluster_and_bridges_to_its_core(deployed: Deployed) -> None:
    """us-west (aws, us-west-2) is away from the aws core (us-east-1): its pods run on the cluster
    it brings (the edge control plane), on its own nodes, none on the aws cluster; its broker
    bridges to the aws core broker's load-balancer hostname, which resolves."""
    edge, aws = deployed.apis["edge"], deployed.apis["aws"]

    def placed() -> list[dict[str, Any]]:
        pods = edge.get("/api/v1/namespaces/region-us-west/pods")["items"]
        ok = pods and all(p["spec"].get("nodeName") and p["status"].get("phase") == "Running" for p in pods)
        return pods if ok else []

    pods = wait_for(placed, timeout=120, interval=1, what="every us-west pod scheduled and running")
    assert {p["spec"]["nodeName"] for p in pods} <= {"us-west-node-a", "us-west-node-b"}, pods
    assert aws.request("GET", "/api/v1/namespaces/region-us-west", ok=(404,))[0] == 404
    core = aws.get("/api/v1/namespaces/edgefabric-dataflow/services/mqtt-core")
    hostname = core["status"]["loadBalancer"]["ingress"][0]["hostname"]
    resolver = f"127.0.0.1:{deployed.run.ports.pdns_dns}"
    assert resolve_a(hostname, resolver) == (deployed.env.layout.endpoint_ips["aws"],)
    conf = edge.get("/api/v1/namespaces/region-us-west/configmaps/mqtt-config")["data"]["mosquitto.conf"]
    assert f"address {hostname}:" in conf, conf


def test_a_second_preview_has_no_changes(deployed: Deployed) -> None:
    started = time.monotonic()
    deployed.engine.run("preview", "--expect-no-changes", "--stack", STACK, timeout=900)
    deployed.run.record("no_change_preview_s", time.monotonic() - started)
    st = json.loads(deployed.run.local_env("status", "--json"))
    deployed.run.record("control_planes_rss_mib_deployed", st["k8s_rss_bytes"] / 2**20)


def test_controller_replicas_reach_their_peers_with_lease_only_tokens(deployed: Deployed) -> None:
    """What each failover controller replica is given for the other core clusters: kubeconfigs
    with those clusters' ServiceAccount tokens (filled by the real token controller, awaited by
    the provider). With one, a peer holds the Lease there and is refused anything else."""
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException

    from edgefabric.tiers.failover_controller import APP, CONTROLLER_NAMESPACE
    from edgefabric.traffic.lease import KubernetesLease, api_client_from_kubeconfig

    for cloud in CLOUDS:
        secret = deployed.apis[cloud].get(f"/api/v1/namespaces/{CONTROLLER_NAMESPACE}/secrets/{APP}-kubeconfigs")
        assert sorted(secret["data"]) == sorted(c for c in CLOUDS if c != cloud)
        for peer, encoded in secret["data"].items():
            text = base64.b64decode(encoded).decode()
            assert "client-key-data" not in text and "exec" not in yaml.safe_load(text)["users"][0]["user"]
            client = api_client_from_kubeconfig(text)
            lease = KubernetesLease(client, CONTROLLER_NAMESPACE, f"token-check-{cloud}.example.", 5, f"ctl-{cloud}",
                                    cluster=peer)  # fmt: skip
            assert lease.acquire().held, (cloud, peer)
            lease.release()
            with pytest.raises(ApiException) as refused:
                CoreV1Api(client).list_namespaced_secret(CONTROLLER_NAMESPACE)
            assert refused.value.status == 403, (cloud, peer, refused.value.status)


def test_state_holds_no_kubeconfig_in_plain_text(deployed: Deployed) -> None:
    state = json.dumps(deployed.engine.export(STACK))
    for name in deployed.plans:
        kubeconfig = deployed.env.kubeconfig_path(name).read_text()
        key = kubeconfig.split("client-key-data:", 1)[1].split()[0]
        assert key not in state, f"{name}'s client key is in the state in plain text"


def test_state_holds_no_private_key_in_plain_text(deployed: Deployed) -> None:
    """The data flows' CA and certificate keys, and the Secrets they go into (`dataFlows`
    of Pulumi.local.yaml), are encrypted in the state; tests/engine/test_dataflow_secrets.py
    checks the same of the PKI alone."""
    state = deployed.engine.export(STACK)
    plain = [where for where, text in strings(state) if "PRIVATE KEY" in text or "PRIVATE KEY" in unbase64(text)]
    assert plain == [], "a private key is in the state in plain text (or in base64, as a Secret's data)"
    pki = [r for r in state["deployment"]["resources"] if r["type"].startswith("pulumi-python:dynamic/pki:")]
    assert pki, "no data-flow certificates were deployed"
    for res in pki:
        assert is_secret(res["outputs"]["key_pem"]), f"{res['urn']}: key_pem is not a secret"
    mqtt_secrets = [r for r in state["deployment"]["resources"]
                    if r["type"] == "kubernetes:core/v1:Secret" and r["urn"].endswith("mqtt-certs")]
    assert mqtt_secrets, "no mqtt-certs Secret was deployed"
    for res in mqtt_secrets:
        # The provider turns stringData into data (base64): whichever is there is a secret.
        for side in ("inputs", "outputs"):
            fields = [k for k in ("data", "stringData") if k in res.get(side, {})]
            assert fields and all(is_secret(res[side][k]) for k in fields), (res["urn"], side, fields)
    revealed = json.dumps(deployed.engine.export(STACK, show_secrets=True))
    assert "PRIVATE KEY" in revealed, "the keys are not in the state at all"


def strings(obj: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a JSON document, with its path."""
    if isinstance(obj, str):
        yield where, obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from strings(value, f"{where}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from strings(value, f"{where}[{i}]")


def unbase64(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode(errors="replace")
    except ValueError:
        return ""


def is_secret(value: Any) -> bool:
    """The engine's secret envelope in a state file."""
    return (isinstance(value, Mapping) and "ciphertext" in value
            and value.get("4dabf18193072939515e22adb298388d") == "1b47061264138c4ac30d75fd1eb44270")


def test_drift_through_the_api_shows_in_refresh_and_up_repairs_it(deployed: Deployed) -> None:
    scaled = ("aws", "kubernetes:apps/v1:Deployment", "edgefabric-core", "data-analytics")
    deleted = ("azure", "kubernetes:core/v1:Service", "edgefabric-core", "user-management")
    relabelled = ("edge", "kubernetes:apps/v1:Deployment", f"edge-{deployed.plans['edge'].sites[-1]}", "sensor-ingest")
    want_replicas = deployed.get(scaled)["spec"]["replicas"]
    want_tier = deployed.get(relabelled)["metadata"]["labels"]["edgefabric.io/tier"]

    # Behind the engine's back, as kubectl scale / delete / label would.
    deployed.apis["aws"].merge_patch(object_path(*scaled[1:]) + "/scale", {"spec": {"replicas": want_replicas + 2}})
    deployed.apis["azure"].delete(object_path(*deleted[1:]))
    deployed.apis["edge"].request("PATCH", object_path(*relabelled[1:]),
                                  {"metadata": {"labels": {"edgefabric.io/tier": "tampered"}}},
                                  content_type="application/merge-patch+json", fieldManager="drift-test")

    shown = diff_ops(deployed.engine.run("refresh", "--preview-only", "--diff", "--stack", STACK).stdout)
    site = deployed.plans["edge"].sites[-1]
    assert shown == {"aws-data-analytics": "update", "azure-user-management": "delete",
                     f"{site}-sensor-ingest": "update"}, shown
    deployed.engine.run("refresh", "--yes", "--stack", STACK)
    deployed.engine.run("up", "--yes", "--stack", STACK, timeout=900)

    assert deployed.get(scaled)["spec"]["replicas"] == want_replicas
    assert deployed.get(deleted)["spec"]["type"] == "ClusterIP"
    assert deployed.get(relabelled)["metadata"]["labels"]["edgefabric.io/tier"] == want_tier
    deployed.engine.run("preview", "--expect-no-changes", "--stack", STACK)


def test_destroy_leaves_nothing_of_ours_in_any_cluster(deployed: Deployed) -> None:
    started = time.monotonic()
    deployed.engine.run("destroy", "--yes", "--stack", STACK, timeout=1800)
    deployed.run.record("destroy_s", time.monotonic() - started)
    assert deployed.live() == {}
    for cluster, api in deployed.apis.items():
        left = [p["metadata"]["name"] for p in api.get("/api/v1/pods", labelSelector=MANAGED)["items"]]
        assert left == [], (cluster, left)
        namespaces = {n["metadata"]["name"] for n in api.get("/api/v1/namespaces")["items"]}
        assert namespaces == {"default", "kube-node-lease", "kube-public", "kube-system"}, (cluster, namespaces)
